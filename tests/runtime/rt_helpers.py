"""Fixtures and helpers shared by the runtime tests.

A plain module imported by the test files, not a second conftest.py: the tests folders are not
packages, so every conftest.py is the module ``conftest`` and would shadow tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import build_trufor
from runtime.runners.torch_runner import TorchBackend
from trufor_testing import randomize_

TILE = 64  # small tiles keep the tiny model's tiled runs fast


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random 8x8 blocks plus noise, so the tiny model's maps vary over the image."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:height, :width]
    return np.clip(blocks + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)


def tiny_with_weights(seed: int = 0) -> torch.nn.Module:
    return randomize_(build_trufor("tiny"), seed).eval()


@pytest.fixture
def torch_backend(tiny_model) -> TorchBackend:
    return TorchBackend(tiny_model, tile_size=TILE)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    """The tiny weights in the official checkpoint layout, for the CLIs."""
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": tiny_model.state_dict(), "epoch": 0}, path)
    return path
