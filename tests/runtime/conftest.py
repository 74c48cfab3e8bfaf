"""Fixtures for the runtime tests: the tiny model (``tiny_model``, perturbed weights) as a backend and a
checkpoint, and fp32 artifacts of other tiny weights with backends over them (made once per session)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from rt_helpers import TILE, tiny_with_weights

from runtime.runners.ort_runner import OrtBackend
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


@pytest.fixture(scope="session")
def ort_artifacts(tmp_path_factory):
    """fp32 artifacts of the tiny model with perturbed weights, built by the real export CLI."""
    folder = tmp_path_factory.mktemp("ort")
    model = tiny_with_weights(seed=5)
    checkpoint = folder / "tiny.pth.tar"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, checkpoint)
    out = folder / "artifacts"
    command = [
        sys.executable, "-m", "export.build", "--preset", "tiny", "--weights", str(checkpoint),
        "--precision", "fp32", "--onnx-only", "--tile", str(TILE), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out, model


@pytest.fixture(scope="session")
def backend_pair(ort_artifacts):
    """The ONNX Runtime backend over the artifacts and the torch backend over the same weights, active."""
    out, model = ort_artifacts
    with OrtBackend(out, "fp32", threads=2) as ort_backend, TorchBackend(model, tile_size=TILE) as torch_backend:
        yield ort_backend, torch_backend
