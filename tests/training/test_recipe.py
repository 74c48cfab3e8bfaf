"""The default model's recipe: a fixed camera split and phase settings that resolve into valid configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from reference.errors import TruForError
from training.config import resolve
from training.recipe import TEST_CAMERAS, VALIDATION_CAMERAS, phase_settings, split_cameras


def test_split_keeps_test_and_validation_cameras_out_of_training(tmp_path):
    cameras = tmp_path / "cameras"
    names = [*TEST_CAMERAS, *VALIDATION_CAMERAS, "Make_A", "Make_B"]
    for name in names:
        (cameras / name).mkdir(parents=True)
        (cameras / name / "p.jpg").write_bytes(b"jpeg")
    split = split_cameras(cameras, tmp_path / "data")
    assert split == {"test": list(TEST_CAMERAS), "val": list(VALIDATION_CAMERAS), "train": ["Make_A", "Make_B"]}
    assert sorted(p.name for p in (tmp_path / "data" / "train").iterdir()) == ["Make_A", "Make_B"]
    assert (tmp_path / "data" / "test" / TEST_CAMERAS[0] / "p.jpg").read_bytes() == b"jpeg"
    (cameras / TEST_CAMERAS[0] / "p.jpg").unlink()
    (cameras / TEST_CAMERAS[0]).rmdir()
    with pytest.raises(TruForError, match=TEST_CAMERAS[0]):
        split_cameras(cameras, tmp_path / "other")


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_phase_settings_resolve_with_the_split_and_the_previous_checkpoint(tmp_path, phase):
    previous = tmp_path / f"phase{phase - 1}" / "best.pth.tar"
    values = phase_settings("trufor_lite", phase, Path("D"), tmp_path / f"phase{phase}", previous if phase > 1 else None)
    config = resolve(values)
    assert config.preset == "trufor_lite" and config.run_dir == tmp_path / f"phase{phase}"
    assert all("{" not in spec for spec in config.data + config.val_data)
    assert any(spec.startswith("cameras:D/") or spec.startswith("synthetic:D/") for spec in config.val_data)
    assert {2: config.noiseprint, 3: config.init}.get(phase, str(previous)) == str(previous)
