"""The torch CUDA backend: refuses what it cannot do here; on a GPU, fp16 autocast stays near fp32."""

from __future__ import annotations

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
