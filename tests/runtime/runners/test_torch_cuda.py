"""The torch CUDA backend: refuses what it cannot do here; on a GPU, fp16 autocast stays near fp32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trufor_testing import randomize_
from reference import build_trufor
from runtime.runners.torch_cuda import TorchCudaBackend

NO_CUDA = f"torch {torch.__version__} sees no CUDA device"


def tiny():
    return randomize_(build_trufor("tiny")).eval()


def test_fp16_is_refused_on_the_cpu_instead_of_running_fp32():
    with pytest.raises(ValueError, match="needs a CUDA device, got cpu"):
        TorchCudaBackend(tiny(), "cpu", 64, "fp16")


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="runs fp32, fp16, not 'int8'"):
        TorchCudaBackend(tiny(), "cuda", 64, "int8")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_fp16_autocast_matches_fp32_on_the_gpu():
    model = tiny()
    image = np.random.default_rng(0).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)
    outputs = {}
    for precision in ("fp32", "fp16"):
        with TorchCudaBackend(model, "cuda", 64, precision) as backend:
            outputs[precision] = backend.whole.infer({"image": image})
    for name in ("map", "conf"):
        diff = np.abs(outputs["fp16"][name] - outputs["fp32"][name])
        assert np.percentile(diff, 99) <= 2e-2, name
    assert abs(outputs["fp16"]["score"] - outputs["fp32"]["score"]).max() <= 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_noiseprint_runs_in_float32_without_tf32_on_the_gpu():
    """TF32 and float16 both round Noiseprint++'s conv inputs, which its weights amplify 2000 to 3000 times."""
    backend = TorchCudaBackend(tiny(), "cuda", 64, "fp16")
    assert torch.backends.cudnn.allow_tf32 is False
    x = torch.rand(1, 3, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        residual = backend.model.dncnn(x)
    assert residual.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_lanes_and_device_tiling_match_the_cpu_reference(monkeypatch):
    """Whole images of two sizes on the two lanes, and a tiled image cut, blended and pooled on the GPU,
    against the CPU reference (float32, no TF32); no call pins memory anew."""
    from runtime.predictor import Predictor
    from runtime.runners.torch_runner import TorchBackend
    from runtime.tiling import TilingConfig

    model = tiny()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((96, 128, 3), (64, 80, 3), (96, 128, 3), (160, 200, 3))]
    tiling = TilingConfig(threshold_pixels=150 * 150, batch_size=2)
    with Predictor(TorchBackend(copy.deepcopy(model), "cpu", 64), tiling) as cpu:
        want = cpu.predict_batch(images)
    backend = TorchCudaBackend(model, "cuda", 64, "fp32")
    with Predictor(backend, tiling) as gpu:
        got = gpu.predict_batch(images)
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda *a, **k: pytest.fail("pinned per call"))
        staging = [lane.inputs.storage.data_ptr() for lane in backend.whole.lanes]
        again = gpu.predict_batch(images)
        assert [lane.inputs.storage.data_ptr() for lane in backend.whole.lanes] == staging
    assert [gpu.mode(*image.shape[:2]) for image in images] == ["whole"] * 3 + ["tiled"]
    for a, b, c in zip(got, want, again):
        np.testing.assert_allclose(a.map, b.map, atol=1e-4)
        np.testing.assert_allclose(a.conf, b.conf, atol=1e-4)
        assert abs(a.score - b.score) <= 1e-4 and a.backend == "torch"
        np.testing.assert_allclose(a.map, c.map, atol=1e-6)
