"""The ONNX Runtime backend matches the torch backend to 1e-4 on the same images, whole and tiled."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rt_helpers import TILE, noise_image

from runtime.predictor import Predictor
from runtime.tiling import TilingConfig


@pytest.mark.parametrize("threshold", [10**9, 0], ids=["whole", "tiled"])
@pytest.mark.parametrize("shape", [(64, 64), (29, 29), (75, 100), (150, 130)])
def test_onnxruntime_matches_torch(backend_pair, shape, threshold):
    ort_backend, torch_backend = backend_pair
    assert ort_backend.tile_size == TILE and ort_backend.name == "onnxruntime"
    rgb = noise_image(*shape, seed=7)
    tiling = TilingConfig(threshold_pixels=threshold)
    expected = Predictor(torch_backend, tiling).predict(rgb)
    got = Predictor(ort_backend, tiling).predict(rgb)
    for name in ("map", "conf"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-4, err_msg=name)
    assert abs(got.score - expected.score) <= 1e-4


def test_onnxruntime_batched_whole_graph(backend_pair):
    ort_backend, torch_backend = backend_pair
    images = [noise_image(48, 64, seed=s) for s in range(3)]
    tiling = TilingConfig(batch_size=3)
    got = Predictor(ort_backend, tiling).predict_batch(images)
    expected = Predictor(torch_backend, tiling).predict_batch(images)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.map, b.map, rtol=0, atol=1e-4)
        assert abs(a.score - b.score) <= 1e-4


def test_scan_with_onnxruntime_artifacts(ort_artifacts, tmp_path):
    from PIL import Image

    from runtime.scan import main

    out, _ = ort_artifacts
    Image.fromarray(noise_image(48, 64)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "--out", str(tmp_path / "scan"), "--artifacts", str(out)]) == 0
    row = json.loads((tmp_path / "scan" / "results.jsonl").read_text())
    assert (row["status"], row["backend"], row["precision"]) == ("ok", "onnxruntime", "fp32")


def test_stale_artifacts_are_refused(ort_artifacts, tmp_path):
    import shutil

    from export.errors import ArtifactError
    from runtime.runners.ort_runner import OrtBackend

    out, _ = ort_artifacts
    copy = shutil.copytree(out, tmp_path / "artifacts")
    (copy / "trufor_tile.fp32-ortcpu.onnx").unlink()  # the plain graph is then the one loaded (test_ort_load.py)
    graph = copy / "trufor_tile.fp32.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="stale"):
        OrtBackend(copy, "fp32", providers=["CPUExecutionProvider"]).activate()


def test_onnxruntime_release_memory_keeps_the_results(backend_pair):
    """The release run (arena shrinkage on a minimal input) leaves the session as it was."""
    ort_backend, _ = backend_pair
    rgb = noise_image(75, 100, seed=3)
    predictor = Predictor(ort_backend)
    before = predictor.predict(rgb)
    ort_backend.whole.release_memory()
    after = predictor.predict(rgb)
    np.testing.assert_array_equal(after.map, before.map)
    assert after.score == before.score


def test_cuda_provider_keeps_float32_without_tf32():
    from runtime.runners.ort_runner import session_providers

    assert session_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider",
    ]
    assert session_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
