"""Guards on a scan's output folder: one writer at a time, no mixing of results from different settings,
and the commands that wrote it (``commands.jsonl``, for the report)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from reference.errors import TruForError
from reference.outputs import atomic_write_text

from .decision import DecisionRule
from .records import OK
from .runners.base import Backend
from .tiling import TilingConfig

SETTINGS_FILE = "scan.json"
BACKENDS_RAN = "backends_ran"  # scan.json's count of ok rows per backend that computed them
LOCK_FILE = ".scan.lock"
COMMANDS_FILE = "commands.jsonl"


class ScanDirLock:
    """An exclusive ``flock`` on DIR/.scan.lock; the kernel drops it when the process dies (even kill -9)."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE
        self._file = None

    def __enter__(self) -> ScanDirLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, the user keeps scans apart
            return self
        self._file = open(self.path, "a")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise TruForError(
                f"another scan is writing to {self.path.parent} (it holds {self.path}); wait for it or pick another --out"
            ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock


def settings(backend: Backend, tiling: TilingConfig, image_options, decision: DecisionRule) -> dict:
    """Everything that changes a row's numbers; rows made with other settings must not be mixed in."""
    return {
        "backend": backend.name,
        "precision": backend.precision,
        "model": backend.identity.description,
        "tile_size": backend.tile_size,
        "tile_threshold_pixels": tiling.whole_rule(backend.whole_rule).max_pixels,
        "whole_max_side": tiling.whole_rule(backend.whole_rule).max_side,
        "tile_overlap": tiling.overlap_for(backend.tile_size),
        "tile_window": tiling.window,
        "exif_transpose": image_options.exif_transpose,
        **decision.settings(),
    }


def check_settings(folder: Path, backend: Backend, tiling: TilingConfig, image_options, decision: DecisionRule) -> None:
    """Record the settings on the first run; refuse to resume with different ones, naming each difference,
    and a threshold calibrated on another model."""
    path = folder / SETTINGS_FILE
    current = settings(backend, tiling, image_options, decision)
    decision.check_model(current["model"])
    if path.exists():
        try:
            recorded = json.loads(path.read_text())
        except ValueError:
            recorded = None
        if isinstance(recorded, dict):
            changed = [
                f"{key}: {recorded.get(key)!r} there, {value!r} now"
                for key, value in current.items()
                if recorded.get(key) != value
            ]
            if not changed:
                return
            raise TruForError(
                f"{folder} holds results made with other settings ({'; '.join(changed)}). "
                "Resuming would mix them: pass a new --out, or rerun with the recorded settings"
            )
    atomic_write_text(path, json.dumps(current, indent=2) + "\n")


def record_command(folder: Path, command: str) -> None:
    """Append this run's command line to ``commands.jsonl``: the report shows what made the results."""
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command})
    with open(folder / COMMANDS_FILE, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def read_commands(folder: Path) -> list[dict]:
    """The recorded runs, oldest first (lines that do not parse are skipped)."""
    path = folder / COMMANDS_FILE
    if not path.exists():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs


def record_backends_ran(folder: Path, rows) -> None:
    """Count, in ``scan.json``, the backends that computed the ok ``rows`` (the folder's latest): a backend
    that handed inputs to its fallback (TensorRT to ONNX Runtime) shows as such, not as itself. The
    count is not a setting: resuming never compares it."""
    path = folder / SETTINGS_FILE
    data = json.loads(path.read_text())
    data[BACKENDS_RAN] = dict(Counter(row["backend"] for row in rows if row["status"] == OK).most_common())
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
