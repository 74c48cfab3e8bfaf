"""Helpers shared by the runtime tests (fixtures are in conftest.py)."""

from __future__ import annotations

import numpy as np
import torch
from trufor_testing import randomize_

from reference import build_trufor

TILE = 64  # small tiles keep the tiny model's tiled runs fast


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random 8x8 blocks plus noise, so the tiny model's maps vary over the image."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
    return np.clip(blocks + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def tiny_with_weights(seed: int = 0) -> torch.nn.Module:
    return randomize_(build_trufor("tiny"), seed).eval()
