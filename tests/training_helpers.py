"""Small configurations and data for the training tests: tiny preset, 64-pixel crops, a few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.config import TrainConfig

CROP = 64


def tiny_config(out: Path, phase: int, **overrides) -> TrainConfig:
    """A few-second run: tiny preset, 64-pixel crops, batches of 4, 8 generated samples per epoch."""
    values = dict(
        phase=phase, out=str(out), preset="tiny", crop=CROP, batch_size=4, synthetic_count=8, val_count=3,
        iterations=4, log_every=1, threads=1, patch=32, groups=4, per_group=3, epoch_iterations=2, val_batches=1,
        cameras=8, histories=4,
    )
    if phase == 2:
        values["noiseprint"] = "random"
    values.update(overrides)
    return TrainConfig(**values)


def write_pairs(root: Path, count: int = 3, size: int = 48, pristine: int = 1, seed: int = 0) -> Path:
    """``root/images`` + ``root/masks``: ``count`` forged images (a bright square marked in the mask)
    and ``pristine`` images without a mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(count + pristine):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        if index < count:
            mask = np.zeros((size, size), np.uint8)
            mask[8:24, 10:30] = 255
            image[mask > 0] = 250
            Image.fromarray(mask).save(root / "masks" / f"img{index}.png")
        Image.fromarray(image).save(root / "images" / f"img{index}.png")
    return root
