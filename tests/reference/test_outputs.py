"""atomic_write, the one way the project writes the files it keeps: unique temporary name, fsync, rename."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from trufor_testing import assert_write_is_atomic

from reference.outputs import atomic_write, atomic_write_text, save_npz


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out" / "result.npz"
    assert_write_is_atomic(monkeypatch, path, lambda: save_npz(path, {"map": np.zeros((2, 2), np.float32)}))
    with np.load(path) as fields:
        assert fields["map"].shape == (2, 2)


def test_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync"))
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    atomic_write_text(tmp_path / "a.json", "{}\n")
    assert events == ["fsync", "rename"] and (tmp_path / "a.json").read_text() == "{}\n"


def test_concurrent_writers_of_one_file_never_share_a_temporary(tmp_path):
    """Two writers of the same path at once (a nested write stands in for another process): each has its
    own temporary file, so neither clobbers the other's half-written bytes; the last rename wins."""
    path = tmp_path / "index.json"

    def outer(file):
        file.write(b"outer ")
        atomic_write_text(path, "inner")
        assert path.read_text() == "inner"
        file.write(b"done")

    atomic_write(path, outer)
    assert path.read_text() == "outer done"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_permissions_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_an_exception_in_the_writer_propagates_and_cleans_up(tmp_path):
    with pytest.raises(ValueError, match="bad data"):
        atomic_write(tmp_path / "x.bin", lambda file: (file.write(b"half"), (_ for _ in ()).throw(ValueError("bad data"))))
    assert list(tmp_path.iterdir()) == []
