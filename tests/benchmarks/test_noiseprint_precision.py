"""Why Noiseprint++ stays float32 in every export: its released weights amplify rounding (``benchmarks.noiseprint_precision``)."""

from __future__ import annotations

import numpy as np
import torch
from trufor_testing import randomize_, shared_path

from benchmarks.noiseprint_precision import compare, rounded_forward
from reference.checkpoint import load_noiseprint
from reference.image import load_rgb
from reference.model import to_tensor
from reference.noiseprint import Noiseprint
from reference.optimize import fold_batchnorm_


def test_rounded_forward_in_float32_is_the_network():
    dncnn = fold_batchnorm_(randomize_(Noiseprint(5, 16)).eval())
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        np.testing.assert_allclose(rounded_forward(dncnn, x, torch.float32), dncnn(x), rtol=0, atol=1e-6)


def test_released_noiseprint_needs_float32():
    """float32 is within 1e-3 of float64; float16 storage is tens of percent off (measured 0.68 worst, BENCHMARKS.md)."""
    dncnn = Noiseprint()
    load_noiseprint(dncnn, shared_path("weights", "noiseprint++.th"))
    dncnn = fold_batchnorm_(dncnn.eval())
    rgb = load_rgb(shared_path("examples", "pristine1.jpg"))[:128, :128]
    x = to_tensor(np.ascontiguousarray(rgb))
    with torch.no_grad():
        reference = dncnn.double()(x.double()).numpy()
        dncnn.float()
        float32_error, _ = compare(reference, dncnn(x).numpy())
        float16_error, float16_correlation = compare(reference, rounded_forward(dncnn, x, torch.float16).numpy())
    assert float32_error < 1e-3
    assert float16_error > 0.1 and float16_correlation < 0.99, (float16_error, float16_correlation)
