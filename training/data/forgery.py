"""Synthetic forgeries with exact masks, made from pristine images.

Each sample starts from a *host* image (``base``), manipulates one region, and may then apply a
global post-processing step (a final JPEG) to the whole picture:

- ``splice``: the region comes from another image taken by a different (simulated) camera,
  optionally shifted towards the host's colours;
- ``copy_move``: a region of the host is copied elsewhere, optionally rotated and rescaled;
- ``inpaint``: the region is filled from its surroundings (normalized Gaussian fill, optionally
  with noise added back), as object removal does;
- ``resample``: the region is replaced by itself rotated, rescaled or down-and-up resampled;
- ``double_jpeg``: the region gets a different compression history (JPEG at another quality,
  on the host's 8x8 grid or on a shifted one), then the whole image is JPEG-compressed again.

The mask marks the manipulated region, and nothing outside it is changed: ``composite`` (the
image after the manipulation, before global post-processing) equals ``base`` wherever the mask
is 0. Inside the mask most pixels differ; a few can keep their value by chance (flat areas,
rounding). The global step changes every pixel but is the same for the whole image, so it is
not part of the mask; pristine samples get it with the same probability, so it is no cue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imageops import (
    affine_warp,
    gaussian_blur,
    jpeg,
    resize_linear,
    rotation_scale_about,
    shift_edge,
    to_uint8,
)
from .procedural import random_shape_mask

FORGERY_KINDS = ("splice", "copy_move", "inpaint", "resample", "double_jpeg")
PRISTINE = "pristine"
MIN_REGION_PIXELS = 16


@dataclass(frozen=True)
class ForgeryConfig:
    kinds: tuple[str, ...] = FORGERY_KINDS
    pristine_fraction: float = 0.3  # the official per-sample DET weights imply ~70 % fakes
    region_area: tuple[float, float] = (0.02, 0.25)  # fraction of the image
    final_jpeg_p: float = 0.5
    final_jpeg_quality: tuple[int, int] = (60, 100)

    def __post_init__(self):
        unknown = sorted(set(self.kinds) - set(FORGERY_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"unknown forgery kinds {unknown}; choose from {list(FORGERY_KINDS)}")
        if not 0 <= self.pristine_fraction <= 1:
            raise ValueError(f"pristine_fraction must be in [0, 1], got {self.pristine_fraction}")


@dataclass(frozen=True)
class ForgerySample:
    image: np.ndarray  # uint8 HxWx3, what the model sees
    mask: np.ndarray  # uint8 HxW, 1 = manipulated
    base: np.ndarray  # uint8 HxWx3, the host before manipulation
    composite: np.ndarray  # uint8 HxWx3, after manipulation, before global post-processing
    kind: str
    final_jpeg: int | None  # quality of the global JPEG, None if none was applied


class ForgeryGenerator:
    """Draws forged or pristine samples from a pristine ``source`` (see ``sources.py``)."""

    def __init__(self, source, config: ForgeryConfig = ForgeryConfig()):
        self.source = source
        self.config = config

    def sample(self, rng: np.random.Generator, height: int, width: int, kind: str | None = None) -> ForgerySample:
        """One sample; ``kind`` forces a manipulation (or ``"pristine"``), else it is drawn."""
        if kind is None:
            kind = PRISTINE if rng.random() < self.config.pristine_fraction else str(rng.choice(self.config.kinds))
        base, camera = self.source.draw(rng, height, width)
        if kind == PRISTINE:
            composite, mask = base, np.zeros((height, width), dtype=np.uint8)
        else:
            region = self._region(rng, height, width)
            manipulated = getattr(self, f"_{kind}")(rng, base, camera, region)
            if kind == "copy_move":
                manipulated, region = manipulated
            composite = np.where(region[..., None], manipulated, base).astype(np.uint8)
            mask = region.astype(np.uint8)
        quality = None
        if kind == "double_jpeg" or rng.random() < self.config.final_jpeg_p:
            quality = int(rng.integers(self.config.final_jpeg_quality[0], self.config.final_jpeg_quality[1] + 1))
        image = jpeg(composite, quality) if quality is not None else composite
        return ForgerySample(image, mask, base, composite, kind, quality)

    def _region(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        for _ in range(10):
            region = random_shape_mask(rng, height, width, self.config.region_area)
            if region.sum() >= MIN_REGION_PIXELS:
                return region
        raise AssertionError(f"could not draw a region of {MIN_REGION_PIXELS} pixels in {height}x{width}")

    # Each manipulation returns an image whose pixels inside the region replace the host's.

    def _splice(self, rng, base, camera, region):
        donor, _ = self.source.draw(rng, *base.shape[:2], exclude_camera=camera)
        donor = donor.astype(np.float32)
        if rng.random() < 0.5:  # pull the donor's colours towards the host's, as a careful forger would
            shift = base[region].mean(axis=0) - donor[region].mean(axis=0)
            donor = donor + rng.uniform(0.3, 1.0) * shift
        return to_uint8(donor)

    def _copy_move(self, rng, base, camera, region):
        height, width = region.shape
        ys, xs = np.nonzero(region)
        center = (float(xs.mean()), float(ys.mean()))
        for _ in range(10):
            angle = rng.uniform(-30, 30) if rng.random() < 0.5 else 0.0
            scale = rng.uniform(0.75, 1.3) if rng.random() < 0.5 else 1.0
            target = (rng.uniform(0, width), rng.uniform(0, height))
            shift = (target[0] - center[0], target[1] - center[1])
            if np.hypot(*shift) < 0.25 * min(height, width):
                continue  # a copy onto itself would hardly change anything
            matrix = rotation_scale_about(center, angle, scale, shift)
            moved = affine_warp(region.astype(np.uint8) * 255, matrix, nearest=True) > 127
            if moved.sum() >= MIN_REGION_PIXELS:
                return affine_warp(base, matrix), moved
        return self._splice(rng, base, camera, region), region  # nowhere to move it: splice instead

    def _inpaint(self, rng, base, camera, region):
        known = (~region).astype(np.float32)
        image = base.astype(np.float32)
        sigma = rng.uniform(3, 10)
        for _ in range(6):  # widen the fill until every region pixel has known pixels nearby
            weight = gaussian_blur(known, sigma)
            if weight[region].min() > 1e-3:
                break
            sigma *= 2
        fill = gaussian_blur(image * known[..., None], sigma) / np.maximum(weight, 1e-6)[..., None]
        fill = np.where(weight[..., None] > 1e-6, fill, image[~region].mean(axis=0))
        if rng.random() < 0.5:  # put back some grain, so the fill is not suspiciously smooth
            fill = fill + rng.normal(0, rng.uniform(1, 4), size=fill.shape)
        return to_uint8(fill)

    def _resample(self, rng, base, camera, region):
        height, width = region.shape
        ys, xs = np.nonzero(region)
        choice = rng.integers(3)
        if choice == 2:  # down and up again: same geometry, interpolation traces only
            factor = rng.uniform(0.4, 0.8)
            small = resize_linear(base, max(2, round(height * factor)), max(2, round(width * factor)))
            return to_uint8(resize_linear(small, height, width))
        center = (float(xs.mean()), float(ys.mean()))
        if choice == 0:
            angle, scale = rng.choice([-1, 1]) * rng.uniform(5, 45), 1.0
        else:
            angle, scale = 0.0, rng.choice([rng.uniform(0.6, 0.9), rng.uniform(1.1, 1.6)])
        warped = affine_warp(base, rotation_scale_about(center, angle, scale))
        # Near the image border the warp may sample outside the source: keep the host there.
        inside = affine_warp(np.full(region.shape, 255, np.uint8), rotation_scale_about(center, angle, scale), nearest=True) > 127
        return np.where(inside[..., None], warped, to_uint8(gaussian_blur(base, 1.0)))

    def _double_jpeg(self, rng, base, camera, region):
        if rng.random() < 0.5:
            dy, dx = 0, 0  # aligned: same 8x8 grid as the rest of the image
        else:
            dy, dx = (int(v) for v in rng.integers(0, 8, size=2))
            if dy == dx == 0:
                dx = int(rng.integers(1, 8))
        quality = int(rng.integers(50, 96))
        recompressed = jpeg(np.ascontiguousarray(shift_edge(base, dy, dx)), quality)
        return np.ascontiguousarray(shift_edge(recompressed, -dy, -dx))
