"""An interrupted run, resumed, ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from training_helpers import tiny_config

from reference.checkpoint import read_checkpoint
from reference.errors import TruForError
from training.loop import LAST, train
from training.phase2_localization import LocalizationPhase


def interrupted_after(steps: int):
    """LocalizationPhase that raises KeyboardInterrupt on step ``steps + 1``, as Ctrl-C would."""

    class Interrupted(LocalizationPhase):
        calls = 0

        def loss(self, model, batch):
            type(self).calls += 1
            if type(self).calls > steps:
                raise KeyboardInterrupt
            return super().loss(model, batch)

    return Interrupted


def assert_same_state(a: dict, b: dict) -> None:
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]), key
    assert a["iteration"] == b["iteration"] and a["epoch"] == b["epoch"] and a["best_value"] == b["best_value"]


@pytest.mark.parametrize("save_every", [0, 1], ids=["from-epoch-end", "from-mid-epoch"])
def test_resume_continues_with_the_same_state(tmp_path, save_every):
    # 8 samples per epoch in batches of 4: 2 iterations per epoch, 4 in all.
    straight = tiny_config(tmp_path / "straight", 2, iterations=4, save_every=save_every, val_count=1)
    train(straight, LocalizationPhase)

    broken = dataclasses.replace(straight, out=str(tmp_path / "broken"))
    with pytest.raises(KeyboardInterrupt):
        train(broken, interrupted_after(3))
    saved = read_checkpoint(tmp_path / "broken" / LAST)
    assert saved["iteration"] == (3 if save_every else 2)

    train(dataclasses.replace(broken, resume=True), LocalizationPhase)
    assert_same_state(read_checkpoint(tmp_path / "straight" / LAST), read_checkpoint(tmp_path / "broken" / LAST))
    events = [json.loads(line) for line in (tmp_path / "broken" / "train_log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "iteration": saved["iteration"]} in events


def test_a_finished_run_is_not_overwritten(tmp_path):
    config = tiny_config(tmp_path, 2, iterations=2)
    train(config, LocalizationPhase)
    with pytest.raises(TruForError, match="--resume"):
        train(config, LocalizationPhase)
    with pytest.raises(TruForError, match="nothing to resume"):
        train(dataclasses.replace(config, out=str(tmp_path / "empty"), resume=True), LocalizationPhase)
