"""benchmarks.gpu_check off the GPU: the whole check on the CPU with the tiny preset, its report, a
failed engine build recorded as a row, and the exit status 2 without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from benchmarks import gpu_bench, gpu_check
from benchmarks.gpu_report import markdown, table
from engines.errors import EngineBuildError
from engines.cuda import gpu_unavailable_reason

TINY = ["--device", "cpu", "--random-weights", "--preset", "tiny", "--sizes", "32x32,48x64", "--tiled-size", "70x90",
        "--speedup-size", "48x64", "--scan-images", "3", "--scan-sizes", "32x32,40x48", "--repeats", "2",
        "--warmup", "1", "--tile-size", "64", "--tile-threshold-pixels", "4096", "--workers", "1", "--no-tests"]


@pytest.fixture
def shared(tmp_path):
    """A stand-in for shared/trufor with two small example images."""
    folder = tmp_path / "shared"
    (folder / "examples").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 56)), ("b.jpg", (80, 72))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / "examples" / name)
    return folder


def test_the_whole_check_runs_on_the_cpu_and_writes_both_reports(shared, tmp_path, capsys):
    out = tmp_path / "check"
    assert gpu_check.main(["--out", str(out), "--shared", str(shared), *TINY]) == gpu_check.EXIT_OK
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["verdict"] == "PASSED" and data["environment"]["device"] == "cpu"
    sections = data["sections"]
    parity = sections["parity"]
    assert [(r["image"], r["mode"], r["passed"]) for r in parity] == [("a.png", "whole", True), ("b.jpg", "tiled", True)]
    latency = sections["latency"]
    assert [(r["size"], r["mode"]) for r in latency] == [("32x32", "whole"), ("48x64", "whole"), ("70x90", "tiled")]
    assert all(r["latency_p50_ms"] > 0 and "error" not in r for r in latency)
    assert {"tile", "score", "stitch"} <= set(latency[-1]["stages_ms"])
    (scan,) = sections["scan"]
    assert scan["plain_ok"] == scan["profiled_ok"] == 3 and scan["gpu_busy"] is None and scan["images_per_s"] > 0
    assert sections["tensorrt"] == [{"skipped": "no --artifacts given"}]
    text = (out / "gpu_check.md").read_text()
    assert text.startswith("# GPU check: PASSED") and "## latency" in text and "| 70x90 | tiled |" in text
    assert "PASSED" in capsys.readouterr().out


def test_a_failed_engine_build_is_a_row_not_a_traceback(monkeypatch, tmp_path):
    import engines._trt
    import engines.build
    import export.manifest

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "manifest.fp16.json").write_text("{}")
    monkeypatch.setattr(engines._trt, "tensorrt", SimpleNamespace(is_importable=True))
    monkeypatch.setattr(export.manifest, "load_manifest", lambda folder, precision: SimpleNamespace())

    def fail(manifest, **settings):
        raise EngineBuildError("TensorRT built no engine from trufor_whole.fp16.onnx")

    monkeypatch.setattr(engines.build, "build_engines", fail)
    check = gpu_check.Check(gpu_check.CheckConfig(out=tmp_path, artifacts=artifacts), gpu_check.Budget(600))
    gpu_check.tensorrt_rows(check)
    assert check.sections["tensorrt"] == [{"backend": "tensorrt", "precision": "fp16", "step": "build",
                                           "error": "EngineBuildError: TensorRT built no engine from "
                                                    "trufor_whole.fp16.onnx"}]


def test_work_over_the_budget_is_a_skipped_row(tmp_path):
    check = gpu_check.Check(gpu_check.CheckConfig(out=tmp_path), gpu_check.Budget(5))
    gpu_check._timed_section(check, "scan", 30, lambda: pytest.fail("ran over the budget"))
    (row,) = check.sections["scan"]
    assert row["skipped"].startswith("skipped: 5 s of the budget left, this needs ~30 s")


def test_report_tables_take_every_column_and_say_what_failed():
    rows = [{"backend": "torch-cuda", "precision": "fp16", "size": "768x1024", "latency_p50_ms": 9.1},
            {"backend": "tensorrt", "precision": "int8", "step": "build", "error": "EngineBuildError: no | plan"}]
    assert table(rows) == [
        "| backend | precision | size | latency_p50_ms | step | error |", "|---|---|---|---|---|---|",
        "| torch-cuda | fp16 | 768x1024 | 9.1 |  |  |", "| tensorrt | int8 |  |  | build | EngineBuildError: no \\| plan |"]
    data = {"verdict": "FAILED", "weights": "w", "seconds": 1.0, "environment": {"gpu": "NVIDIA H200"},
            "cudnn_benchmark": False, "cudnn_tf32": False, "matmul_tf32": False, "sections": {"tensorrt": rows}}
    text = markdown(data)
    assert text.startswith("# GPU check: FAILED") and "| gpu | `NVIDIA H200` |" in text and "## tensorrt" in text


def test_busy_fraction_counts_overlapping_kernels_once():
    assert gpu_bench.busy_fraction([(0, 4), (2, 6), (8, 9)], 10) == pytest.approx(0.7)
    assert gpu_bench.busy_fraction([(5, 6), (0, 10)], 10) == 1.0
    assert gpu_bench.busy_fraction([], 10) == 0.0


def test_no_gpu_exits_2_with_the_reason(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: "cudaGetDeviceCount failed with cudaErrorNoDevice")
    assert gpu_check.main(["--out", str(tmp_path / "r")]) == gpu_check.EXIT_NO_GPU == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU here (cudaGetDeviceCount failed with cudaErrorNoDevice); nothing was run" in err
    assert not (tmp_path / "r").exists()


def test_the_command_on_this_machine_when_it_has_no_gpu(tmp_path):
    if gpu_unavailable_reason() is None:
        pytest.skip("this machine has a CUDA GPU; gpu_check would run the full check")
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no CUDA GPU here" in done.stderr


def test_tile_time_waited_for_is_not_counted_as_stitching(monkeypatch):
    """gpu_bench's stages on an asynchronous tile runner: the host's wait for the tiles is tile time."""
    import time

    from rt_helpers import TILE, tiny_with_weights

    from runtime.runners.torch_runner import TorchBackend
    from runtime.tiling import TileGrid, TilingConfig

    backend = TorchBackend(tiny_with_weights(), tile_size=TILE)
    submit = backend.tile.submit_batch

    def slow_to_arrive(feed):
        wait = submit(feed)
        return lambda: time.sleep(0.05) or wait()

    monkeypatch.setattr(backend.tile, "submit_batch", slow_to_arrive)
    row = gpu_bench.measure(backend, {"backend": "async"}, 120, 150, repeats=1, warmup=0,
                            tiling=TilingConfig(threshold_pixels=0, batch_size=4))
    stages = row["stages_ms"]
    batches = -(-len(TileGrid.for_image(120, 150, TILE, TILE // 4)) // 4)
    assert row["mode"] == "tiled" and stages["tile"] >= 50 * batches
    assert stages["stitch"] < 50, stages


def test_weights_flags_and_the_default_weights(tmp_path, shared, default_model):
    import torch

    config = gpu_check.parse_args(["--out", str(tmp_path), "--shared", str(shared)])
    assert config.weights is None and config.preset is None
    weights, text = gpu_check.model_weights(config)  # this shared/ has no golden recipe: the default model
    assert weights.path == default_model and text.startswith("the project's default model trufor_lite")
    config = gpu_check.parse_args(["--out", str(tmp_path), "--random-weights", "--preset", "tiny"])
    assert gpu_check.model_weights(config)[1] == "RANDOM weights of preset tiny (parity on them is weak evidence)"
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": {}, "preset": "tiny"}, path)
    weights, text = gpu_check.model_weights(gpu_check.parse_args(["--out", str(tmp_path), "--weights", str(path)]))
    assert weights.preset == "tiny" and text == f"checkpoint {path}"
