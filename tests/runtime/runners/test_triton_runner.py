"""The triton backend: request building, argument checks, and a scan through a real Triton server.

The end-to-end tests start a real ``tritonserver`` on 127.0.0.1 (gRPC only, a free port) over the
repository ``python -m export.build --triton`` writes for the tiny model, and compare a
``runtime.scan --backend triton`` with ``--backend onnxruntime`` on the same artifacts. The server
comes from nvidia-pytriton, which bundles a tritonserver (x86-64, glibc >= 2.35) with the Python
backend but not the ONNX Runtime one, so each config.pbtxt is served with ``backend: "python"`` and
``triton_python_model.py`` runs the same model.onnx with onnxruntime. Its numpy must be < 2, so it
lives in its own environment, named by TRUFOR_PYTRITON_PYTHON (the tests skip without it):

    python3.11 -m venv /tmp/pytriton-venv
    /tmp/pytriton-venv/bin/pip install nvidia-pytriton onnxruntime
    TRUFOR_PYTRITON_PYTHON=/tmp/pytriton-venv/bin/python python -m pytest tests/runtime/test_triton_backend.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rt_helpers import TILE, noise_image, tiny_with_weights

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (pip install -e '.[triton]')")

from export.triton import read_config  # noqa: E402 - needs tritonclient
from export.errors import BackendUnavailableError  # noqa: E402
from runtime.args import ModelArgs  # noqa: E402
from runtime.errors import UsageError  # noqa: E402
from runtime.runners import triton_runner  # noqa: E402
from export.contract import graph_specs  # noqa: E402
from runtime.runners.triton_runner import TritonBackend, TritonRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
PYTRITON_PYTHON = os.environ.get("TRUFOR_PYTRITON_PYTHON")
SERVER_START_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- without a server -------------------------------------------------------------------------

class FakeResult:
    def __init__(self, outputs: dict[str, np.ndarray]):
        self.outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]


class RecordingClient:
    """Stands in for tritonclient's gRPC client: records the InferInput objects, answers with sums."""

    def __init__(self):
        self.requests = []

    def is_model_ready(self, model, client_timeout=None):
        return True

    def infer(self, model, inputs, outputs=None):
        self.requests.append((model, inputs, [o.name() for o in outputs]))
        image = np.frombuffer(inputs[0]._get_content(), np.uint8).reshape(inputs[0].shape())
        total = image.reshape(len(image), -1).sum(axis=1).astype(np.float32)
        if model.startswith("trufor_tile"):
            loc = np.broadcast_to(total[:, None, None, None], (len(image), 2, TILE, TILE)).astype(np.float32)
            return FakeResult({"loc_logits": loc, "conf_logits": loc[:, :1]})
        maps = np.broadcast_to(total[:, None, None], image.shape[:3]).astype(np.float32)
        return FakeResult({"map": maps, "conf": maps, "score": total[:, None]})  # Triton's [batch, 1]

    def close(self):
        pass


@pytest.fixture
def recording_client(monkeypatch) -> RecordingClient:
    client = RecordingClient()
    monkeypatch.setattr(triton_runner, "connect", lambda url: client)
    return client


def test_tiles_go_as_uint8_requests_of_at_most_max_batch_in_order(recording_client):
    tiles = np.random.default_rng(0).integers(0, 256, (5, TILE, TILE, 3), dtype=np.uint8)
    with TritonRunner(graph_specs(TILE)["tile"], "127.0.0.1:1", "trufor_tile_fp32", max_batch=2) as runner:
        out = runner.infer({"image": tiles})
    sent = [inputs[0] for _, inputs, _ in recording_client.requests]
    assert [tensor.shape() for tensor in sent] == [[2, TILE, TILE, 3], [2, TILE, TILE, 3], [1, TILE, TILE, 3]]
    assert {(tensor.name(), tensor.datatype()) for tensor in sent} == {("image", "UINT8")}
    assert b"".join(tensor._get_content() for tensor in sent) == tiles.tobytes()
    assert all(names == ["loc_logits", "conf_logits"] for _, _, names in recording_client.requests)
    sums = tiles.reshape(5, -1).sum(axis=1).astype(np.float32)
    assert out["loc_logits"].shape == (5, 2, TILE, TILE) and out["conf_logits"].shape == (5, 1, TILE, TILE)
    np.testing.assert_array_equal(out["loc_logits"][:, 1, 3, 7], sums)


def test_whole_score_comes_back_in_the_graph_shape(recording_client):
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    runner = TritonRunner(graph_specs(TILE)["whole"], "127.0.0.1:1", "trufor_whole_fp32", 4, {"score": ()})
    with runner:
        out = runner.infer({"image": images})
    assert len(recording_client.requests) == 1 and out["map"].shape == (3, 40, 48)
    np.testing.assert_array_equal(out["score"], images.reshape(3, -1).sum(axis=1).astype(np.float32))


def test_no_server_is_a_clear_error_naming_the_url():
    url = f"127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(BackendUnavailableError, match=f"no Triton server answers gRPC at {url}"):
        TritonBackend(url, "fp32")
    assert time.perf_counter() - start < 15


def parse_model_args(*argv: str):
    parser = argparse.ArgumentParser()
    ModelArgs().add_to(parser)
    return ModelArgs().parse(parser.parse_args(argv))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--url", "h:1"], "--url is read by --backend triton only, but --backend auto"),
        (["--backend", "onnxruntime", "--url", "h:1"], "--url is read by --backend triton only"),
        (["--backend", "triton", "--artifacts", "a/"], "--artifacts is read by --backend tensorrt or onnxruntime only, "
         "but --backend triton was given; triton runs the models of the server at --url, not a local model"),
        (["--backend", "triton", "--weights", "w.pth"], "--weights is read by --backend torch only, but --backend "
         "triton was given; triton runs the models of the server at --url, not a local model"),
        (["--backend", "triton", "--threads", "2"], "--threads is read by --backend tensorrt, onnxruntime or torch only, "
         "but --backend triton"),
    ],
)
def test_conflicting_triton_arguments_name_both_sides(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_model_args(*argv)


def test_triton_request_carries_the_url():
    assert parse_model_args("--backend", "triton", "--url", "10.1.2.3:9001").url == "10.1.2.3:9001"
    assert parse_model_args("--backend", "triton").url == "localhost:8001"


# --- a real server ----------------------------------------------------------------------------

def _server_files(python: str) -> dict[str, Path]:
    """Where nvidia-pytriton (in the environment of ``python``) keeps tritonserver and its parts."""
    code = "import pytriton, sys; print(pytriton.__path__[0]); print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"TRUFOR_PYTRITON_PYTHON={python} cannot import pytriton: {error}")
    package, version = done.stdout.split()
    package = Path(package)
    return {
        "server": package / "tritonserver" / "bin" / "tritonserver",
        "backends": package / "tritonserver" / "backends",
        "stub": package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
        "libs": package.parent / "nvidia_pytriton.libs",
        "bin": Path(python).parent,
    }


def _python_backend_repository(repository: Path, out: Path) -> Path:
    """The generated repository with each model served by the Python backend (same configs otherwise)."""
    shutil.copytree(repository, out)
    for config_path in out.glob("*/config.pbtxt"):
        config = read_config(config_path)
        config.ClearField("platform")
        config.backend = "python"
        for group in config.instance_group:
            group.kind = group.KIND_CPU
        config_path.write_text(str(config))
        shutil.copy(Path(__file__).with_name("triton_python_model.py"), config_path.parent / "1" / "model.py")
    return out


@pytest.fixture(scope="module")
def triton_exports(tmp_path_factory):
    """Tiny fp32 artifacts with non-trivial weights and their Triton repository, by the real export CLI."""
    folder = tmp_path_factory.mktemp("triton")
    checkpoint = folder / "tiny.pth.tar"
    torch.save({"state_dict": tiny_with_weights(seed=11).state_dict(), "epoch": 0}, checkpoint)
    command = [
        sys.executable, "-m", "export.build", "--preset", "tiny", "--weights", str(checkpoint), "--precision",
        "fp32", "--onnx-only", "--tile", str(TILE), "--out", str(folder / "artifacts"), "--triton",
        str(folder / "repository"), "--triton-tile-batch", "2", "--triton-device", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    assert f"tritonserver --model-repository {(folder / 'repository').resolve()}" in done.stdout
    return folder / "artifacts", folder / "repository"


@pytest.fixture(scope="module")
def triton_url(request, tmp_path_factory):
    if not PYTRITON_PYTHON:
        pytest.skip("no Triton server here: set TRUFOR_PYTRITON_PYTHON to a Python with nvidia-pytriton and "
                    "onnxruntime (see this module's docstring)")
    files = _server_files(PYTRITON_PYTHON)
    triton_exports = request.getfixturevalue("triton_exports")  # after the skip: exporting takes a while
    folder = tmp_path_factory.mktemp("server")
    backends = shutil.copytree(files["backends"], folder / "backends")
    shutil.copy(files["stub"], backends / "python" / "triton_python_backend_stub")
    repository = _python_backend_repository(triton_exports[1], folder / "repository")
    port = free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(files["libs"]), "PATH": f"{files['bin']}{os.pathsep}{os.environ['PATH']}"}
    command = [
        str(files["server"]), "--model-repository", str(repository), "--backend-directory", str(backends),
        "--allow-http", "false", "--allow-metrics", "false", "--grpc-address", "127.0.0.1", "--grpc-port", str(port),
    ]  # fmt: skip
    log = open(folder / "tritonserver.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{port}"
    try:
        _wait_ready(url, server, folder / "tritonserver.log")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    import tritonclient.grpc as grpcclient

    deadline = time.monotonic() + SERVER_START_S
    with grpcclient.InferenceServerClient(url) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"tritonserver exited with {server.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if client.is_server_ready(client_timeout=2):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
    pytest.fail(f"tritonserver was not ready after {SERVER_START_S} s:\n{log.read_text()[-4000:]}")


def _scan(*argv: str) -> int:
    from runtime.scan import main

    return main([*argv, "--save-maps", "--tile-threshold-pixels", "10000", "--workers", "1"])


def test_scan_through_triton_matches_onnxruntime(triton_url, triton_exports, tmp_path):
    artifacts, _ = triton_exports
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a.png": (48, 64), "b.png": (48, 64), "c.png": (75, 100), "tiled.png": (150, 130)}  # tiled: > 10000 px
    for seed, (name, size) in enumerate(sizes.items()):
        Image.fromarray(noise_image(*size, seed=seed)).save(images / name)
    assert _scan(str(images), "--out", str(tmp_path / "triton"), "--backend", "triton", "--url", triton_url) == 0
    assert _scan(str(images), "--out", str(tmp_path / "ort"), "--backend", "onnxruntime", "--artifacts", str(artifacts)) == 0

    def rows(folder):
        return {row["relpath"]: row for row in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}

    triton_rows, ort_rows = rows(tmp_path / "triton"), rows(tmp_path / "ort")
    assert sorted(triton_rows) == sorted(sizes) and triton_rows["tiled.png"]["mode"] == "tiled"
    for name in sizes:
        got, want = triton_rows[name], ort_rows[name]
        assert (got["status"], got["backend"], got["precision"]) == ("ok", "triton", "fp32")
        assert abs(got["score"] - want["score"]) <= 1e-6, name
        got_maps, want_maps = (np.load(tmp_path / run / "maps" / f"{name}.npz") for run in ("triton", "ort"))
        for field in ("map", "conf"):
            np.testing.assert_allclose(got_maps[field], want_maps[field], rtol=0, atol=1e-6, err_msg=f"{name} {field}")
    model = json.loads((tmp_path / "triton" / "scan.json").read_text())["model"]
    assert model.startswith("triton models trufor_whole_fp32 (onnx sha256 ") and "checkpoint sha256 " in model


def test_a_precision_the_server_lacks_is_refused_listing_what_it_holds(triton_url):
    with pytest.raises(BackendUnavailableError, match="neither trufor_whole_fp16_trt nor trufor_whole_fp16 ready") as error:
        TritonBackend(triton_url, "fp16")
    assert "trufor_tile_fp32" in str(error.value)


def test_batches_beyond_the_model_limit_are_split_and_joined(triton_url, triton_exports):
    from runtime.runners.ort_runner import OrtBackend

    backend = TritonBackend(triton_url, "fp32")
    assert backend.tile_size == TILE and backend.models["tile"] == "trufor_tile_fp32"
    assert (backend.tile.max_batch, backend.whole.max_batch, backend.score.max_batch) == (2, 4, 0)
    images = np.stack([noise_image(40, 56, seed=seed) for seed in range(5)])  # 4 + 1 requests
    tiles = np.stack([noise_image(TILE, TILE, seed=seed) for seed in range(3)])  # 2 + 1
    with backend, OrtBackend(triton_exports[0], "fp32") as local:
        for runner, feed in ((backend.whole, {"image": images}), (backend.tile, {"image": tiles})):
            got, want = runner.infer(feed), local.runners[runner.graph].infer(feed)
            for name, value in want.items():
                assert got[name].shape == value.shape, name
                np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
