"""benchmarks.perturb: each perturbation does what its name says, repeatably, and bad specs are refused."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.perturb import Perturbation, parse_perturbations


def image(seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, so compression and blur have something to lose."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128]
    base = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_jpeg_loses_more_at_lower_quality():
    rgb = image()
    losses = [error(Perturbation("jpeg", q).apply(rgb, seed=0), rgb) for q in (95, 70, 30)]
    assert 0 < losses[0] < losses[1] < losses[2]


def test_resize_scales_both_sides():
    out = Perturbation("resize", 0.5).apply(image(), seed=0)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags.writeable


def test_blur_removes_high_frequencies():
    rgb = image()
    blurred = Perturbation("blur", 1.0).apply(rgb, seed=0)
    assert np.abs(np.diff(blurred.astype(float), axis=1)).mean() < 0.5 * np.abs(np.diff(rgb.astype(float), axis=1)).mean()
    assert abs(blurred.astype(float).mean() - rgb.mean()) < 1.0


def test_noise_has_the_asked_deviation_and_repeats_with_its_seed():
    flat = np.full((200, 200, 3), 128, np.uint8)
    noisy = Perturbation("noise", 2).apply(flat, seed=3)
    assert (noisy.astype(float) - 128).std() == pytest.approx(2.0, rel=0.05)
    assert np.array_equal(noisy, Perturbation("noise", 2).apply(flat, seed=3))
    assert not np.array_equal(noisy, Perturbation("noise", 2).apply(flat, seed=4))


def test_specs_expand_in_order():
    parsed = parse_perturbations(["jpeg:90,70,50", "resize:0.75,0.5", "blur:1.0", "noise:2"])
    assert [p.label for p in parsed] == ["jpeg:90", "jpeg:70", "jpeg:50", "resize:0.75", "resize:0.5", "blur:1", "noise:2"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("crop:0.5", "unknown perturbation 'crop'"),
        ("jpeg", "gives no value"),
        ("jpeg:101", "integer quality from 1 to 100"),
        ("jpeg:7.5", "integer quality"),
        ("resize:0", "scale factor above 0"),
        ("blur:inf", "standard deviation in pixels"),
        ("noise:x", "standard deviation in grey levels"),
        ("jpeg:90,90", "jpeg:90 is given twice"),
    ],
)
def test_bad_specs_are_refused_with_the_choices(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_perturbations([spec])
