"""Session fixtures: the golden weights and model, a tiny model with non-trivial weights, and its exports
(session-scoped, one per precision, to keep the suite fast); a stand-in for the project's default model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from export_helpers import export_tiny, make_tiny_model
from trufor_testing import randomize_, shared_path

import reference.weights as weights
from reference import build_trufor
from reference.model import TruFor


@pytest.fixture(autouse=True, scope="session")
def trufor_home(tmp_path_factory) -> None:
    """Caches (decoded photos, downloaded weights) go to a temporary folder, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRUFOR_HOME", str(tmp_path_factory.mktemp("trufor_home")))
        yield


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


@pytest.fixture(scope="session")
def reference_model() -> TruFor:
    """The perturbed tiny model as users run it (fused attention); the exports carry the same weights."""
    return make_tiny_model()


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory):
    """A function giving one folder that holds the fp32, fp16 and int8 exports, each made on first use."""
    folder = tmp_path_factory.mktemp("artifacts")
    made = set()

    def get(precision: str):
        if precision not in made:
            export_tiny(folder, precision)
            made.add(precision)
        return folder

    return get


@pytest.fixture(scope="session")
def default_model_file(tmp_path_factory) -> Path:
    """A stand-in for the project's default model: trufor_lite with random weights, saved as the release is."""
    path = tmp_path_factory.mktemp("default_model") / "trufor_lite.pth.tar"
    torch.save({"state_dict": build_trufor("trufor_lite").state_dict(), "preset": "trufor_lite", "epoch": 0}, path)
    return path


@pytest.fixture
def default_model(default_model_file, monkeypatch) -> Path:
    """``reference.weights.DEFAULT_MODEL`` is the stand-in (in this process), announced afresh."""
    monkeypatch.setattr(weights, "DEFAULT_MODEL", default_model_file)
    monkeypatch.setattr(weights, "_announced", set())
    return default_model_file


@pytest.fixture
def no_default_model(tmp_path, monkeypatch) -> Path:
    """A tree without the default model's file (in this process), whether or not this checkout has it."""
    missing = tmp_path / "no_default_model" / "trufor_lite.pth.tar"
    monkeypatch.setattr(weights, "DEFAULT_MODEL", missing)
    return missing
