"""Builders: a preset name (plus overrides) and an optional checkpoint give a ready model."""

from __future__ import annotations

import os

from .checkpoint import clean_state_dict, load_state_dict_strict, read_checkpoint
from .config import get_config
from .model import TruFor


def build_trufor(
    preset: str = "trufor",
    checkpoint: str | os.PathLike | None = None,
    **overrides,
) -> TruFor:
    """A TruFor model in eval mode; random init without a checkpoint, strict load with one.

    ``overrides`` replace preset fields, e.g. ``conf_bn_variant="train"`` to reproduce
    TruFor_train_test/test.py instead of the docker release.
    """
    model = TruFor(get_config(preset, **overrides))
    if checkpoint is not None:
        state = clean_state_dict(read_checkpoint(checkpoint))
        load_state_dict_strict(model, state, f"checkpoint {os.fspath(checkpoint)!r}")
    return model.eval()
