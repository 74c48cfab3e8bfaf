"""Helpers shared by the test packages: the facts in ../shared/trufor and non-trivial weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "trufor"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the shared TruFor facts must sit beside the checkout (../shared)")
    return path


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BN statistic a non-trivial value, so wrong wiring shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif tensor.ndim == 1:
                tensor.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(noise * (2.0 / fan_in) ** 0.5)
    return model


def assert_write_is_atomic(monkeypatch, path: Path, write) -> None:
    """``write()`` replaces ``path`` through ``reference.outputs.atomic_write``: a failure at its fsync (a
    full disk) leaves the previous file whole and no temporary file, and a retry then replaces it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"previous")
    before = sorted(p.name for p in path.parent.iterdir())

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space left on device"):
            write()
    assert path.read_bytes() == b"previous", f"{path.name} was written in place"
    assert sorted(p.name for p in path.parent.iterdir()) == before, "a temporary file was left behind"
    write()
    assert path.read_bytes() != b"previous"
    assert sorted(p.name for p in path.parent.iterdir()) == before
