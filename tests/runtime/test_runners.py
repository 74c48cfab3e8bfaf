"""Runners: the torch backend reproduces the reference model exactly, ONNX Runtime matches it to 1e-4.

Both backends go through one checker (``check_backend``) on the same images and sizes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch

from reference.errors import TruForError
from reference.image import to_tensor
from reference.model import probabilities
from rt_helpers import TILE, noise_image, tiny_with_weights, torch_backend  # noqa: F401 (fixture)
from runtime.predictor import Predictor
from runtime.runners.torch_runner import TorchBackend
from runtime.tiling import TilingConfig

SIZES = [(64, 64), (48, 80), (29, 29), (75, 100)]


def reference_outputs(model, rgb):
    with torch.inference_mode():
        probs = probabilities(model(to_tensor(rgb)))
    return probs.map[0].numpy(), probs.conf[0].numpy(), float(probs.score[0])


@pytest.mark.parametrize("shape", SIZES)
def test_torch_whole_graph_equals_the_reference_model_exactly(tiny_model, torch_backend, shape):
    rgb = noise_image(*shape, seed=sum(shape))
    with torch_backend:
        out = torch_backend.whole.infer({"image": rgb[None]})
    ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
    assert ref_map.std() > 1e-3
    np.testing.assert_array_equal(out["map"][0], ref_map)
    np.testing.assert_array_equal(out["conf"][0], ref_conf)
    assert float(out["score"][0]) == ref_score


def test_torch_batched_whole_graph_matches_one_by_one(tiny_model, torch_backend):
    images = np.stack([noise_image(48, 64, seed=s) for s in range(3)])
    with torch_backend:
        batched = torch_backend.whole.infer({"image": images})
    for i, rgb in enumerate(images):
        ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
        np.testing.assert_allclose(batched["map"][i], ref_map, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched["conf"][i], ref_conf, rtol=0, atol=1e-5)
        assert abs(float(batched["score"][i]) - ref_score) < 1e-5


def test_runner_checks_names_dtypes_shapes_and_activation(torch_backend):
    rgb = noise_image(TILE, TILE)
    with pytest.raises(RuntimeError, match="activated"):
        torch_backend.tile.infer({"image": rgb[None]})
    with torch_backend:
        with pytest.raises(TruForError, match="missing \\['image'\\]"):
            torch_backend.whole.infer({"pixels": rgb[None]})
        with pytest.raises(TruForError, match="dtype float32, expected uint8"):
            torch_backend.whole.infer({"image": rgb[None].astype(np.float32)})
        with pytest.raises(TruForError, match="shape"):
            torch_backend.tile.infer({"image": rgb[None, :32]})
    assert not torch_backend.whole.is_active


# --- ONNX Runtime ---------------------------------------------------------------------------

needs_export = pytest.mark.skipif(
    importlib.util.find_spec("export.manifest") is None or importlib.util.find_spec("export.build") is None,
    reason="export.build / export.manifest are not in this checkout yet: no ONNX artifacts to test",
)


@pytest.fixture(scope="module")
def ort_artifacts(tmp_path_factory):
    """fp32 artifacts of the tiny model with perturbed weights, built by the real export CLI."""
    folder = tmp_path_factory.mktemp("ort")
    model = tiny_with_weights(seed=5)
    checkpoint = folder / "tiny.pth.tar"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, checkpoint)
    out = folder / "artifacts"
    command = [
        sys.executable, "-m", "export.build", "--preset", "tiny", "--checkpoint", str(checkpoint),
        "--precision", "fp32", "--onnx-only", "--tile", str(TILE), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out, model


@needs_export
@pytest.mark.parametrize("shape", SIZES + [(150, 130)])
def test_onnxruntime_matches_torch(ort_artifacts, shape):
    from runtime.runners.ort_runner import OrtBackend

    out, model = ort_artifacts
    ort_backend = OrtBackend(out, "fp32")
    assert ort_backend.tile_size == TILE
    rgb = noise_image(*shape, seed=7)
    for threshold in (10**9, 0):  # whole graph, then tile + score graphs
        tiling = TilingConfig(threshold_pixels=threshold)
        with Predictor(TorchBackend(model, tile_size=TILE), tiling) as a, Predictor(ort_backend, tiling) as b:
            expected, got = a.predict(rgb), b.predict(rgb)
        for name in ("map", "conf"):
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-4, err_msg=name)
        assert abs(got.score - expected.score) <= 1e-4
