"""python -m runtime.scan --ray: the local scan's rows on a Ray Data actor pool, crashes bounded, resume.

One local Ray cluster (2 CPUs, loopback only, no dashboard) serves the whole module; the scans run
in-process and find it already connected. Workers crash through actor subclasses passed to
``RayScan`` (dependency injection): they call ``os._exit`` on a marked input, as a segfault would.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rt_helpers import noise_image
from test_scan import BAD_INPUTS, ROOT, by_relpath, rows, save, scan

from reference.errors import TruForError
from reference.inputs import collect_inputs
from runtime import ray_scan
from runtime.backends import BackendRequest, create_backend
from runtime.decision import DecisionRule
from runtime.ray_scan import RayOptions, RayScan, ScanActor
from runtime.scan import main
from runtime.scanner import OutputOptions
from runtime.tiling import TilingConfig

RAY_REASON = 'the Ray scan needs the ray extra: pip install -e ".[ray]"'


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ray_scan.LOOPBACK_ONLY, "0")  # read when ray is imported, as in ray_scan.connect
        ray = pytest.importorskip("ray", reason=RAY_REASON)
        pytest.importorskip("ray.data", reason=RAY_REASON)
        # Workers import this module's actor classes: give them the tests' import path.
        here = Path(__file__).resolve().parent
        path = os.pathsep.join(map(str, (here.parents[1], here.parent, here)))
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", runtime_env=runtime_env)
        assert ray.util.get_node_ip_address() == "127.0.0.1", "the test cluster must stay on loopback"
        yield ray
        ray.shutdown()


def test_rows_and_maps_match_the_local_scan(cluster, tmp_path, tiny_checkpoint):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, (write, _) in BAD_INPUTS.items():
        write(folder / name)
    listed = tmp_path / "list.txt"  # a listed file that is gone by the time it is read
    listed.write_text(f"{tmp_path / 'gone' / 'missing.jpg'}\n")
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert scan([folder, f"@{listed}"], local, tiny_checkpoint, "--save-maps") == 1
    assert scan([folder, f"@{listed}"], remote, tiny_checkpoint, "--save-maps", "--ray") == 1
    assert len(rows(remote)) == len(BAD_INPUTS) + 1
    expected, found = by_relpath(local), by_relpath(remote)
    missing = next(relpath for relpath in found if relpath.endswith("missing.jpg"))
    assert found[missing]["status"] == "decode_error" and "FileNotFoundError" in found[missing]["error"]
    assert found[missing]["error"] == expected[missing]["error"]
    for name, (_, status) in BAD_INPUTS.items():
        row, want = found[name], expected[name]
        assert row["status"] == want["status"] == status, (name, row)
        assert (row["width"], row["height"], row["mode"], row["path"], row["error"]) == (
            want["width"], want["height"], want["mode"], want["path"], want["error"]
        ), name  # fmt: skip
        if status == "ok":  # same model; batches and thread counts differ, so float32 rounding does too
            assert row["score"] == pytest.approx(want["score"], abs=1e-5), name
            assert row["forged_fraction"] == pytest.approx(want["forged_fraction"], abs=1e-3), name
            with np.load(local / "maps" / f"{name}.npz") as a, np.load(remote / "maps" / f"{name}.npz") as b:
                np.testing.assert_allclose(b["map"], a["map"], atol=1e-4, err_msg=name)
                np.testing.assert_allclose(b["conf"], a["conf"], atol=1e-4, err_msg=name)
        else:
            assert name in row["error"], row
            assert not (remote / "maps" / f"{name}.npz").exists()


def test_an_interrupted_job_resumes_with_the_missing_inputs_only(cluster, tmp_path, tiny_checkpoint, monkeypatch):
    folder = tmp_path / "in"
    names = [f"{i}.png" for i in range(8)]
    for i, name in enumerate(names):
        save(folder / name, Image.fromarray(noise_image(48, 48 + 8 * (i % 3), seed=i)))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    original, appended = ray_scan.RayScan.rows, []

    def interrupted(self, todo):
        for row in original(self, todo):
            if len(appended) == 3:
                raise KeyboardInterrupt
            appended.append(row["relpath"])
            yield row

    monkeypatch.setattr(ray_scan.RayScan, "rows", interrupted)
    assert scan([folder], out, tiny_checkpoint, "--ray", "--batch-size", "2") == 130
    assert [r["relpath"] for r in rows(out)] == appended
    monkeypatch.setattr(ray_scan.RayScan, "rows", original)
    assert scan([folder], out, tiny_checkpoint, "--ray", "--batch-size", "2") == 1
    relpaths = [r["relpath"] for r in rows(out)]
    assert sorted(relpaths) == sorted([*names, "broken.png"]), "every input exactly once"
    assert by_relpath(out)["broken.png"]["status"] == "decode_error"


class CrashOnce(ScanActor):
    """Kills its worker the first time it sees crash.png (a marker file remembers it across restarts)."""

    def __call__(self, batch):
        marker = Path(self.scanner.options.out) / "crashed-once"
        if any(str(path).endswith("crash.png") for path in batch["path"]) and not marker.exists():
            marker.touch()
            os._exit(1)
        return super().__call__(batch)


class CrashAlways(ScanActor):
    """Kills its worker on every batch holding crash.png, counting the crashes in a file."""

    def __call__(self, batch):
        if any(str(path).endswith("crash.png") for path in batch["path"]):
            with open(Path(self.scanner.options.out) / "crashes", "a") as file:
                file.write("x")
            os._exit(1)
        return super().__call__(batch)


def ray_rows(folder: Path, out: Path, checkpoint: Path, actor_class: type) -> list[dict]:
    request = BackendRequest(backend="torch", weights=checkpoint, preset="tiny", tile_size=64, threads=1)
    options = OutputOptions(out, save_maps=True, overlays=False, decision=DecisionRule(), retry_errors=False, workers=1)
    out.mkdir()
    job = RayScan(
        RayOptions("local", 1), request, create_backend(request), TilingConfig(batch_size=2), ray_scan.ImageOptions(),
        options, actor_class=actor_class,
    )  # fmt: skip
    return list(job.rows(collect_inputs([str(folder)])))


@pytest.fixture
def crash_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    for i in range(5):
        save(folder / f"{i}.png", Image.fromarray(noise_image(48, 48, seed=i)))
    save(folder / "crash.png", Image.fromarray(noise_image(48, 48, seed=9)))
    return folder


def test_a_one_off_worker_crash_is_retried_and_every_input_gets_one_row(cluster, crash_folder, tmp_path, tiny_checkpoint):
    found = ray_rows(crash_folder, tmp_path / "out", tiny_checkpoint, CrashOnce)
    assert (tmp_path / "out" / "crashed-once").exists(), "the worker should have crashed once"
    assert sorted(r["relpath"] for r in found) == sorted(p.name for p in crash_folder.iterdir())
    assert all(r["status"] == "ok" for r in found), found
    local = tmp_path / "local"
    assert scan([crash_folder], local, tiny_checkpoint) == 0
    expected = by_relpath(local)
    for row in found:
        assert row["score"] == pytest.approx(expected[row["relpath"]]["score"], abs=1e-5), row


def test_an_input_that_always_crashes_its_worker_gets_a_bounded_error_row(
    cluster, crash_folder, tmp_path, tiny_checkpoint, monkeypatch
):
    monkeypatch.setattr(ray_scan, "TASK_RETRIES", 1)  # each crash restarts the actor (seconds): keep them few
    found = ray_rows(crash_folder, tmp_path / "out", tiny_checkpoint, CrashAlways)
    assert sorted(r["relpath"] for r in found) == sorted(p.name for p in crash_folder.iterdir())
    statuses = {r["relpath"]: r["status"] for r in found}
    assert statuses.pop("crash.png") == "worker_crash"
    assert set(statuses.values()) == {"ok"}, "its batch-mates are rerun alone and succeed"
    crash_row = next(r for r in found if r["relpath"] == "crash.png")
    assert "crash.png" in crash_row["error"] and crash_row["score"] is None
    crashes = len((tmp_path / "out" / "crashes").read_text())
    assert crashes == 2 * (1 + ray_scan.TASK_RETRIES), "each pass tries a batch 1 + TASK_RETRIES times, then gives up"
    for name in statuses:
        assert (tmp_path / "out" / "maps" / f"{name}.npz").is_file()


def test_too_many_actors_for_the_cluster_exit_2_naming_the_numbers(cluster, tmp_path, tiny_checkpoint, capsys):
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    assert scan([path], tmp_path / "out", tiny_checkpoint, "--ray", "--ray-actors", "3", "--threads", "1") == 2
    assert "fit the Ray cluster" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--ray-actors", "2"], "--ray-actors is read with --ray only"),
        (["--ray", "IN"], "an existing path, as the cluster address"),
    ],
)
def test_ray_arguments_are_checked_before_anything_runs(tmp_path, args, message, capsys):
    (tmp_path / "IN").mkdir()
    argv = [str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    argv += [str(tmp_path / arg) if arg == "IN" else arg for arg in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_without_ray_installed_the_scan_exits_2_with_the_install_command(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    assert scan([path], tmp_path / "out", tiny_checkpoint, "--ray") == 2
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_rows_are_plain_json_like_the_local_ones(cluster, tmp_path, tiny_checkpoint):
    path = save(tmp_path / "in" / "a.png", Image.fromarray(noise_image(48, 48)))
    assert scan([path], tmp_path / "out", tiny_checkpoint, "--ray") == 0
    line = (tmp_path / "out" / "results.jsonl").read_text().splitlines()[0]
    row = json.loads(line)
    assert isinstance(row["width"], int) and isinstance(row["forged"], bool) and row["backend"] == "torch"


def test_outputs_that_cannot_be_written_stop_the_job_with_exit_2(cluster, tmp_path, tiny_checkpoint, capsys):
    path = save(tmp_path / "in" / "a.png", Image.fromarray(noise_image(48, 48)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "maps").write_text("a file where the maps folder should be")
    assert scan([path], out, tiny_checkpoint, "--save-maps", "--ray") == 2
    assert "a Ray worker cannot write the outputs" in capsys.readouterr().err
    assert rows(out) == []


class BrokenInit(ScanActor):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("no model on this node")


def test_actors_that_cannot_start_stop_the_job_with_a_clear_error(cluster, crash_folder, tmp_path, tiny_checkpoint):
    with pytest.raises(TruForError, match="the Ray job stopped.*no model on this node"):
        ray_rows(crash_folder, tmp_path / "out", tiny_checkpoint, BrokenInit)


@pytest.mark.slow
def test_a_token_protected_cluster_started_with_ray_start_is_joined_by_address(tmp_path, tiny_checkpoint):
    """``ray start --head`` with RAY_AUTH_MODE=token; the scan joins with the token, and is refused without it."""
    pytest.importorskip("ray.data", reason=RAY_REASON)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(32)
    env = {**os.environ, ray_scan.LOOPBACK_ONLY: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    folder = tmp_path / "in"
    save(folder / "a.png", Image.fromarray(noise_image(48, 48)))
    command = [
        sys.executable, "-m", "runtime.scan", str(folder), "--weights", str(tiny_checkpoint), "--preset", "tiny",
        "--tile-size", "64", f"--ray=127.0.0.1:{port}",
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the head is up once its port answers
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        run = {"cwd": ROOT, "capture_output": True, "timeout": 180, "check": False}
        joined = subprocess.run([*command, "--out", str(tmp_path / "ok")], env=env, **run)
        assert joined.returncode == 0, joined.stderr.decode()[-2000:]
        assert rows(tmp_path / "ok")[0]["status"] == "ok"
        no_token = {key: value for key, value in env.items() if not key.startswith("RAY_AUTH")}
        no_token["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
        refused = subprocess.run([*command, "--out", str(tmp_path / "no")], env=no_token, **run)
        assert refused.returncode == 2 and b"RAY_AUTH_MODE=token" in refused.stderr, refused.stderr.decode()[-2000:]
    finally:
        head.terminate()  # ray start --block stops the processes it started
        head.wait(timeout=90)
