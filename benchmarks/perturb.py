"""Image perturbations applied before the model, for robustness tables (``benchmarks.evaluate --perturb``).

    --perturb jpeg:90,70,50 resize:0.75,0.5 blur:1.0 noise:2

- ``jpeg:Q``: re-encoded as JPEG at quality Q (Pillow's default 4:2:0 chroma subsampling) and
  decoded again by ``reference.image.load_rgb``, as a re-posted picture would be.
- ``resize:F``: scaled by F (bicubic, antialiased when shrinking). The model's map comes out at the
  new size; ``benchmarks.evaluate`` resizes it back to the mask's (bilinear), so the ground truth
  and the border band of the pixel metrics stay those of the original image.
- ``blur:S``: Gaussian blur of standard deviation S pixels.
- ``noise:S``: additive Gaussian noise of standard deviation S grey levels, rounded and clipped to
  0..255, drawn from a generator seeded with the image's index, so a run repeats exactly.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from reference.image import load_rgb


def _jpeg(rgb: np.ndarray, quality: float, seed: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    return load_rgb(buffer.getvalue())


def _resize(rgb: np.ndarray, factor: float, seed: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.array(Image.fromarray(rgb).resize(size, Image.BICUBIC))


def _blur(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return np.array(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(sigma)))  # Pillow's radius is the sigma


def _noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, rgb.shape)
    return np.clip(np.rint(rgb + noise), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Kind:
    apply: Callable[[np.ndarray, float, int], np.ndarray]
    valid: Callable[[float], bool]
    values: str  # what ``valid`` accepts, for error messages


KINDS = {
    "jpeg": Kind(_jpeg, lambda q: q == int(q) and 1 <= q <= 100, "an integer quality from 1 to 100"),
    "resize": Kind(_resize, lambda f: 0 < f <= 4, "a scale factor above 0, at most 4"),
    "blur": Kind(_blur, lambda s: s > 0, "a standard deviation in pixels above 0"),
    "noise": Kind(_noise, lambda s: s > 0, "a standard deviation in grey levels above 0"),
}


@dataclass(frozen=True)
class Perturbation:
    kind: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.value:g}"

    def apply(self, rgb: np.ndarray, seed: int) -> np.ndarray:
        """``rgb`` (HxWx3 uint8) perturbed; ``seed`` makes random perturbations repeatable."""
        return KINDS[self.kind].apply(rgb, self.value, seed)


def parse_perturbations(specs: list[str]) -> list[Perturbation]:
    """``["jpeg:90,70", "blur:1"]`` to perturbations, in order; ValueError names the bad part and the choices."""
    perturbations = []
    for spec in specs:
        kind, _, values = spec.partition(":")
        if kind not in KINDS:
            choices = ", ".join(KINDS)
            raise ValueError(f"unknown perturbation {kind!r} in {spec!r}; choose from {choices} (e.g. jpeg:90,70)")
        if not values:
            raise ValueError(f"{spec!r} gives no value: write {kind}:V[,V...] with V {KINDS[kind].values}")
        for text in values.split(","):
            try:
                value = float(text)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or not KINDS[kind].valid(value):
                raise ValueError(f"{kind} value {text!r} in {spec!r} must be {KINDS[kind].values}")
            perturbation = Perturbation(kind, value)
            if perturbation in perturbations:
                raise ValueError(f"{perturbation.label} is given twice")
            perturbations.append(perturbation)
    return perturbations
