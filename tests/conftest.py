"""Session fixtures: the golden weights and model, a tiny model with non-trivial weights, and its exports
(session-scoped, one per precision, to keep the suite fast)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from export_helpers import export_tiny, make_tiny_model
from trufor_testing import randomize_, shared_path

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
