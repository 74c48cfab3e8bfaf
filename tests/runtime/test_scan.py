"""python -m runtime.scan: a row per file whatever the file, exit status, output names, resume, interrupts.

Every input is written into tmp_path by the test. Runs are in-process (``main``) except the kill -9
test, which needs a real process to kill.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rt_helpers import noise_image
from trufor_testing import assert_write_is_atomic

from runtime.runners.torch_runner import TorchBackend
from runtime.scan import main

ROOT = Path(__file__).resolve().parents[2]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def by_relpath(out: Path) -> dict[str, dict]:
    return {row["relpath"]: row for row in rows(out)}


def scan(inputs, out, checkpoint, *extra) -> int:
    argv = [*map(str, inputs), "--out", str(out), "--weights", str(checkpoint), "--preset", "tiny"]
    argv += ["--workers", "2", "--tile-size", "64", *extra]
    return main(argv)


def save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def jpeg_bytes(rgb: np.ndarray, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90, **params)
    return buffer.getvalue()


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a decompression bomb."""
    buffer = io.BytesIO()
    Image.fromarray(noise_image(32, 32)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def corrupt_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(noise_image(48, 48)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 8
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return save(path, Image.fromarray(noise_image(48, 64)), format="JPEG", exif=exif)


# name -> (writer, expected status)
BAD_INPUTS = {
    "corrupt.png": (corrupt_png, "decode_error"),
    "truncated.jpg": (lambda p: p.write_bytes(jpeg_bytes(noise_image(96, 96))[:1500]) and p, "decode_error"),
    "zero.jpg": (lambda p: p.write_bytes(b"") or p, "decode_error"),
    "text.jpg": (lambda p: p.write_text("this is not an image\n") and p, "decode_error"),
    "bomb.png": (lambda p: png_with_size(p, 100_000, 100_000), "too_large"),
    "tiny.png": (lambda p: save(p, Image.fromarray(noise_image(20, 40))), "too_small"),
    "float.tif": (lambda p: save(p, Image.fromarray(np.ones((40, 40), np.float32))), "unsupported_mode"),
    "gray16.png": (lambda p: save(p, Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 25).astype(np.uint16))), "ok"),
    "cmyk.jpg": (lambda p: save(p, Image.fromarray(noise_image(48, 48)).convert("CMYK"), quality=90), "ok"),
    "rgba.png": (lambda p: save(p, Image.fromarray(noise_image(48, 48)).convert("RGBA")), "ok"),
    "gray.png": (lambda p: save(p, Image.fromarray(noise_image(48, 48)).convert("L")), "ok"),
    "rotated.jpg": (exif_rotated_jpeg, "ok"),
    "good.jpg": (lambda p: p.write_bytes(jpeg_bytes(noise_image(48, 64))) and p, "ok"),
}


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    for name, (write, _) in BAD_INPUTS.items():
        write(folder / name)
    return folder


def test_every_bad_input_gets_its_status_and_the_scan_goes_on(bad_folder, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    assert scan([bad_folder], out, tiny_checkpoint, "--save-maps") == 1
    found = by_relpath(out)
    assert len(rows(out)) == len(BAD_INPUTS)
    for name, (_, status) in BAD_INPUTS.items():
        row = found[name]
        assert row["status"] == status, (name, row)
        if status == "ok":
            assert row["error"] is None and 0 <= row["score"] <= 1 and row["mode"] == "whole"
            assert row["forged"] == (row["score"] > 0.5) and 0 <= row["forged_fraction"] <= 1
            fields = np.load(out / "maps" / f"{name}.npz")
            assert tuple(fields["imgsize"]) == (row["height"], row["width"]) == fields["map"].shape
        else:
            assert row["error"] and row["score"] is None, row
            assert not (out / "maps" / f"{name}.npz").exists()
        assert row["backend"] == "torch" and row["precision"] == "fp32" and row["path"].endswith(name)
    assert (found["rotated.jpg"]["width"], found["rotated.jpg"]["height"]) == (64, 48)
    printed = capsys.readouterr().out
    assert "FAILED" in printed and "decode_error" in printed and "python -m runtime.scan" in printed


def test_exif_transpose_rotates_before_scanning(tmp_path, tiny_checkpoint):
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg")
    assert scan([path], tmp_path / "out", tiny_checkpoint, "--exif-transpose") == 0
    row = rows(tmp_path / "out")[0]
    assert (row["width"], row["height"]) == (48, 64)


def test_all_ok_exits_0_and_outputs_are_named_by_relpath(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    save(folder / "a.jpg", Image.fromarray(noise_image(48, 64, seed=1)), quality=95)
    save(folder / "a.png", Image.fromarray(noise_image(48, 64, seed=2)))
    save(folder / "sub" / "a.png", Image.fromarray(noise_image(64, 48, seed=3)))
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--save-maps", "--overlays") == 0
    assert sorted(r["relpath"] for r in rows(out)) == ["a.jpg", "a.png", "sub/a.png"]
    scores = {np.load(out / "maps" / f"{rel}.npz")["score"].item() for rel in ("a.jpg", "a.png", "sub/a.png")}
    assert len(scores) == 3, "each image has its own npz"
    for rel in ("a.jpg", "a.png", "sub/a.png"):
        with Image.open(out / "overlays" / f"{rel}.png") as overlay:
            assert overlay.size[0] == 2 * Image.open(folder / rel).size[0]
    assert "PASSED" in capsys.readouterr().out


def test_rerun_skips_finished_inputs_and_recomputes_nothing(bad_folder, tmp_path, tiny_checkpoint, monkeypatch):
    out = tmp_path / "out"
    scan([bad_folder], out, tiny_checkpoint, "--save-maps")
    before = (out / "results.jsonl").read_bytes()
    maps = {p: p.stat().st_mtime_ns for p in (out / "maps").iterdir()}

    def fail(*args):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(TorchBackend, "_whole", fail)
    assert scan([bad_folder], out, tiny_checkpoint, "--save-maps") == 1  # old error rows still count
    assert (out / "results.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "maps").iterdir()} == maps


def test_retry_errors_reruns_failed_inputs_only(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    save(folder / "good.png", Image.fromarray(noise_image(48, 48)))
    (folder / "fixed.png").write_text("not yet an image")
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint) == 1
    save(folder / "fixed.png", Image.fromarray(noise_image(48, 48, seed=5)))
    assert scan([folder], out, tiny_checkpoint) == 1  # errors are skipped without --retry-errors
    assert len(rows(out)) == 2
    assert scan([folder], out, tiny_checkpoint, "--retry-errors") == 0
    latest = by_relpath(out)
    assert latest["fixed.png"]["status"] == "ok" and latest["good.png"]["status"] == "ok"
    assert sum(r["relpath"] == "good.png" for r in rows(out)) == 1


def test_inference_errors_become_rows_and_the_scan_goes_on(tmp_path, tiny_checkpoint, monkeypatch):
    folder = tmp_path / "in"
    for i in range(4):
        rgb = noise_image(48, 48, seed=i)
        if i == 2:
            rgb[0, 0] = (1, 2, 3)  # the marker the patched graph fails on
        save(folder / f"{i}.png", Image.fromarray(rgb))
    original = TorchBackend._whole

    def flaky(self, feed):
        if (feed["image"][:, 0, 0] == (1, 2, 3)).all(axis=1).any():
            raise RuntimeError("simulated out of memory")
        return original(self, feed)

    monkeypatch.setattr(TorchBackend, "_whole", flaky)
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--batch-size", "4", "--workers", "4") == 1
    found = by_relpath(out)
    assert found["2.png"]["status"] == "inference_error"
    assert found["2.png"]["error"] == "RuntimeError: simulated out of memory"
    assert all(found[f"{i}.png"]["status"] == "ok" for i in (0, 1, 3))


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix_str(self, text, refresh=True):
        pass


def test_a_failing_image_in_a_batch_fails_alone(tiny_model, tmp_path, monkeypatch):
    """Scan._infer runs a batch; when it fails, each image runs alone so only the bad one gets an error row."""
    from reference.inputs import InputFile
    from runtime.decision import DecisionRule
    from runtime.decode import Decoded
    from runtime.predictor import Predictor
    from runtime.records import ResultsWriter
    from runtime.scan import OutputOptions, Scan

    images = [noise_image(48, 48, seed=i) for i in range(4)]
    images[1][0, 0] = (1, 2, 3)
    calls = []
    original = TorchBackend._whole

    def flaky(self, feed):
        calls.append(feed["image"].shape[0])
        if (feed["image"][:, 0, 0] == (1, 2, 3)).all(axis=1).any():
            raise MemoryError("simulated")
        return original(self, feed)

    monkeypatch.setattr(TorchBackend, "_whole", flaky)
    options = OutputOptions(tmp_path, False, False, DecisionRule(), False, 1)
    batch = [Decoded(InputFile(tmp_path / f"{i}.png", f"{i}.png"), rgb, None, 0.0) for i, rgb in enumerate(images)]
    with Predictor(TorchBackend(tiny_model)) as predictor, ResultsWriter(tmp_path / "results.jsonl") as writer:
        scan_loop = Scan(predictor, options, writer, progress=_NoProgress())
        scan_loop._infer(batch)
    assert calls == [4, 1, 1, 1, 1]
    assert [(r["relpath"], r["status"]) for r in rows(tmp_path)] == [
        ("0.png", "ok"), ("1.png", "inference_error"), ("2.png", "ok"), ("3.png", "ok")
    ]
    assert rows(tmp_path)[1]["error"] == "MemoryError: simulated"


def test_ctrl_c_stops_cleanly_keeps_rows_and_resumes(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    folder = tmp_path / "in"
    for i in range(5):
        save(folder / f"{i}.png", Image.fromarray(noise_image(48, 48 + 8 * i, seed=i)))
    original, calls = TorchBackend._whole, []

    def interrupted(self, feed):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, feed)

    monkeypatch.setattr(TorchBackend, "_whole", interrupted)
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--save-maps", "--workers", "1") == 130
    assert "INTERRUPTED" in capsys.readouterr().err
    assert len(rows(out)) == 2 and all(r["status"] == "ok" for r in rows(out))
    monkeypatch.setattr(TorchBackend, "_whole", original)
    assert scan([folder], out, tiny_checkpoint, "--save-maps") == 0
    assert sorted(r["relpath"] for r in rows(out)) == [f"{i}.png" for i in range(5)]
    assert not list(out.rglob("*.tmp"))


def test_torn_last_line_is_ignored_and_cut_before_appending(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    for i in range(2):
        save(folder / f"{i}.png", Image.fromarray(noise_image(48, 48, seed=i)))
    out = tmp_path / "out"
    assert scan([folder / "0.png"], out, tiny_checkpoint) == 0
    with open(out / "results.jsonl", "a") as file:
        file.write('{"path": "x", "relpath": "1.png", "sta')  # a write cut short by kill -9
    assert scan([folder], out, tiny_checkpoint) == 0
    assert [r["relpath"] for r in rows(out)] == ["0.png", "1.png"]


def test_settings_are_written_atomically(tmp_path, torch_backend, monkeypatch):
    from runtime.decision import DecisionRule
    from runtime.decode import ImageOptions
    from runtime.scan_dir import SETTINGS_FILE, check_settings
    from runtime.tiling import TilingConfig

    path = tmp_path / SETTINGS_FILE
    assert_write_is_atomic(monkeypatch, path, lambda: check_settings(tmp_path, torch_backend, TilingConfig(), ImageOptions(), DecisionRule()))
    assert json.loads(path.read_text())["model"] == torch_backend.identity.description


def test_changed_settings_refuse_to_resume_and_name_both_sides(tmp_path, tiny_checkpoint, capsys):
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    out = tmp_path / "out"
    assert scan([path], out, tiny_checkpoint) == 0
    assert scan([path], out, tiny_checkpoint, "--threshold", "0.9") == 2
    assert "threshold: 0.5 there, 0.9 now" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "torch", "--precision", "int8"], "--backend torch runs fp32 (and fp16 with --device cuda)"),
        (["--backend", "torch", "--precision", "fp16"], "was given without --device cuda"),
        (["--backend", "torch", "--device", "cuda", "--precision", "int8"], "--precision int8 was given;"),
        (["--backend", "onnxruntime", "--weights", "w.pth"], "--weights is read by --backend torch only"),
        (["--backend", "torch", "--artifacts", "a/"], "--artifacts is read by --backend tensorrt or onnxruntime only, "
         "but --backend torch was given; pass --weights official|ZIP|PATH (or nothing, for the project's default model) for torch"),
        (["--weights", "w.pth", "--artifacts", "a/"], "--artifacts and --weights name two different models (--artifacts: --backend tensorrt or onnxruntime; --weights: --backend torch)"),
        (["--backend", "onnxruntime", "--random-weights"], "--random-weights is read by --backend torch only"),
        (["--random-weights", "--weights", "w.pth"], "--random-weights and --weights w.pth both choose the weights"),
        (["--weights", "missing.pth"], "weights file missing.pth not found"),
        (["--threshold", "1.5"], "--threshold must be within"),
        (["--tile-window", "round"], "invalid choice"),
    ],
)
def test_conflicting_arguments_exit_2_naming_both_sides(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["x.png", "--out", str(tmp_path / "out"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_model_exits_2_and_says_what_to_run(tmp_path, capsys, monkeypatch, no_default_model):
    monkeypatch.chdir(tmp_path)
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    assert main([str(path), "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert "python -m export.build --precision fp32" in err and "--backend torch --weights official" in err
    assert "the project's default model is not in this installation" in err
    assert not (tmp_path / "out").exists()


def test_kill_9_mid_run_then_rerun_gives_every_file_once(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    names = [f"{i:02d}.png" for i in range(24)]
    for i, name in enumerate(names):
        save(folder / name, Image.fromarray(noise_image(160, 192, seed=i)))
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "runtime.scan", str(folder), "--out", str(out), "--weights", str(tiny_checkpoint),
        "--preset", "tiny", "--save-maps", "--overlays", "--workers", "1", "--batch-size", "1", "--tile-size", "64",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results.exists() and results.stat().st_size > 0:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    first = [line for line in results.read_text().splitlines() if line.strip()]
    assert 0 < len(first) < len(names), "the kill should land mid-run"

    assert subprocess.run(command, cwd=ROOT, capture_output=True, check=False).returncode == 0
    ok = [r["relpath"] for r in rows(out) if r["status"] == "ok"]
    assert sorted(ok) == names, "every file exactly once"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for name in names:
        with np.load(out / "maps" / f"{name}.npz") as fields:
            assert fields["map"].shape == (160, 192)
        with Image.open(out / "overlays" / f"{name}.png") as overlay:
            overlay.load()


def test_a_second_scan_into_the_same_folder_is_refused(tmp_path):
    from reference.errors import TruForError
    from runtime.scan_dir import ScanDirLock

    with ScanDirLock(tmp_path), pytest.raises(TruForError, match="another scan is writing"):
        with ScanDirLock(tmp_path):
            pass
    with ScanDirLock(tmp_path):  # released when the first one ends
        pass


def test_random_weights_are_announced_and_real_ones_are_not(tmp_path, tiny_checkpoint, capsys):
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    assert main([str(path), "--out", str(tmp_path / "random"), "--backend", "torch", "--random-weights", "--preset", "tiny"]) == 0
    assert "WARNING: --random-weights --preset tiny runs RANDOM WEIGHTS" in capsys.readouterr().err
    assert scan([path], tmp_path / "real", tiny_checkpoint) == 0
    assert "RANDOM WEIGHTS" not in capsys.readouterr().err


def test_rows_and_scan_json_name_the_backend_that_ran(tmp_path, tiny_checkpoint, monkeypatch):
    """After a runner hands an input to its fallback (TensorRT's engine to ONNX Runtime), ``ran_on`` says
    so, and the image's row and scan.json's count name the fallback, not the backend asked for."""
    from runtime.runners.base import BaseRunner

    monkeypatch.setattr(BaseRunner, "ran_on", property(lambda r: "onnxruntime" if r.graph == "whole" else r.runs_on))
    folder = tmp_path / "in"
    save(folder / "small.png", Image.fromarray(noise_image(48, 64, seed=1)))
    save(folder / "large.png", Image.fromarray(noise_image(96, 120, seed=2)))
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--tile-threshold-pixels", "5000") == 0
    assert {r["relpath"]: (r["mode"], r["backend"]) for r in rows(out)} == {
        "small.png": ("whole", "onnxruntime"), "large.png": ("tiled", "torch")}
    settings = json.loads((out / "scan.json").read_text())
    assert settings["backend"] == "torch" and settings["backends_ran"] == {"onnxruntime": 1, "torch": 1}
    assert settings["tile_threshold_pixels"] == 5000 and settings["whole_max_side"] == 2048


def test_without_weights_the_default_model_runs_and_says_so(tmp_path, default_model, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no artifacts/ here: auto takes the torch backend
    path = save(tmp_path / "a.png", Image.fromarray(noise_image(48, 48)))
    assert main([str(path), "--out", "out", "--workers", "1", "--tile-size", "64"]) == 0
    err = capsys.readouterr().err
    assert err.count("no --weights given, using the project's default model trufor_lite") == 1 and "RANDOM" not in err
    model = json.loads((tmp_path / "out" / "scan.json").read_text())["model"]
    assert model.startswith(f"the project's default model trufor_lite ({default_model}), sha256 ")


def test_weights_flags_resolve_at_the_cli_edge(tmp_path, monkeypatch):
    import reference.weights
    from runtime.scan import GROUPS, build_parser

    official = tmp_path / "trufor.pth.tar"
    official.write_bytes(b"stands in for the authors' file")
    monkeypatch.setattr(reference.weights, "official_weights", lambda source: official)
    request = GROUPS["model"].parse(build_parser().parse_args(["x.png", "--out", "o", "--weights", "official"]))
    assert request.weights.path == official and request.weights.preset == "trufor"
    assert GROUPS["model"].parse(build_parser().parse_args(["x.png", "--out", "o"])).weights is None
