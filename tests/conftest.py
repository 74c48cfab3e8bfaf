"""Shared fixtures: the facts in ../shared/trufor and small models with non-trivial weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from reference import build_trufor

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


@pytest.fixture(scope="session")
def golden_state_dict() -> dict[str, torch.Tensor]:
    """The deterministic weights the official code's golden outputs were computed with."""
    script = shared_path("golden", "make_weights.py")
    spec = importlib.util.spec_from_file_location("make_weights", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_state_dict()


@pytest.fixture(scope="session")
def golden_model(golden_state_dict) -> torch.nn.Module:
    model = build_trufor("trufor")
    model.load_state_dict(golden_state_dict, strict=True)
    return model


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    return randomize_(build_trufor("tiny")).eval()
