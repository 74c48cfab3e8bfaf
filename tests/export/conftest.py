"""Fixtures for the export tests; exports are session-scoped (one per precision) to keep the suite fast."""

from __future__ import annotations

import pytest
from export_helpers import export_tiny, make_tiny_model

from reference.model import TruFor


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
