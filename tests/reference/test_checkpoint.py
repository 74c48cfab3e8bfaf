"""Checkpoints load strictly and safely: official layout, bare state_dict, Noiseprint++ file; code is refused."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch

from trufor_testing import randomize_, shared_path
from reference import build_trufor
from reference.checkpoint import load_noiseprint, read_checkpoint
from reference.errors import CheckpointError
from reference.noiseprint import Noiseprint


def official_checkpoint(path, state):
    """The layout the official training script saves, NumPy scalars included."""
    torch.save(
        {"epoch": 81, "best_value": np.float64(0.71), "best_key": "avg_det_bacc", "state_dict": state, "optimizer": {"state": {}}},
        path,
    )
    return path


def as_numpy1_pickle(path):
    """Rename NumPy 2's scalar global to the name NumPy 1.x pickles (the released file's era)."""
    with zipfile.ZipFile(path) as source:
        members = {info: source.read(info) for info in source.infolist()}
    with zipfile.ZipFile(path, "w") as target:
        for info, data in members.items():
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
                assert b"numpy.core.multiarray\nscalar" in data
            target.writestr(info, data)


def test_official_layout_loads_strictly_with_identical_weights(tmp_path):
    source = randomize_(build_trufor("tiny"), seed=3)
    path = official_checkpoint(tmp_path / "trufor.pth.tar", source.state_dict())
    as_numpy1_pickle(path)
    loaded = build_trufor("tiny", checkpoint=path)
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert not loaded.training


def test_bare_and_dataparallel_state_dicts_load(tmp_path):
    source = randomize_(build_trufor("tiny"), seed=4)
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "dp.pth")
    for name in ("bare.pth", "dp.pth"):
        loaded = build_trufor("tiny", checkpoint=tmp_path / name)
        assert torch.equal(loaded.dncnn[0].weight, source.dncnn[0].weight)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_that_runs_code_is_refused_naming_the_global(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "payload": _RunsCode()}, path)
    with pytest.raises(CheckpointError, match=r"(posix|os)\.system.*no unsafe fallback"):
        read_checkpoint(path)


def test_wrong_preset_lists_the_mismatch(tmp_path):
    path = official_checkpoint(tmp_path / "tiny.pth.tar", build_trufor("tiny").state_dict())
    with pytest.raises(CheckpointError, match=r"shape mismatch: .*--preset"):
        build_trufor("trufor_b0", checkpoint=path)
    state = build_trufor("tiny").state_dict()
    del state["detection.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing: detection\.0\.weight; unexpected: extra\.weight"):
        build_trufor("tiny", checkpoint=tmp_path / "partial.pth")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_unreadable_checkpoints_are_clear_errors(tmp_path, content):
    path = tmp_path / "broken.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pth"):
        read_checkpoint(path)


def test_released_noiseprint_file_loads_into_the_dncnn_alone():
    dncnn = Noiseprint()
    load_noiseprint(dncnn, shared_path("weights", "noiseprint++.th"))
    raw = torch.load(shared_path("weights", "noiseprint++.th"), map_location="cpu", weights_only=True)["network"]
    for name, tensor in dncnn.state_dict().items():
        assert torch.equal(tensor, raw[name]), name


def test_noiseprint_weights_from_a_full_checkpoint(tmp_path):
    source = randomize_(build_trufor("tiny"), seed=5)
    path = official_checkpoint(tmp_path / "full.pth.tar", source.state_dict())
    dncnn = Noiseprint(depth=5, width=16)
    load_noiseprint(dncnn, path)
    assert torch.equal(dncnn[-1].weight, source.dncnn[-1].weight)
