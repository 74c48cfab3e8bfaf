"""Fixtures for the runtime tests: the tiny model (``tiny_model``, perturbed weights) as a backend and a checkpoint."""

from __future__ import annotations

import pytest
import torch
from rt_helpers import TILE

from runtime.runners.torch_runner import TorchBackend


@pytest.fixture
def torch_backend(tiny_model) -> TorchBackend:
    return TorchBackend(tiny_model, tile_size=TILE)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    """The tiny weights in the official checkpoint layout, for the CLIs."""
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": tiny_model.state_dict(), "epoch": 0}, path)
    return path
