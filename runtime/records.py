"""``results.jsonl``: one JSON line per image, appended durably, read back for resuming.

Every line is flushed and fsynced as it is written, so a kill -9 loses at most the line being
written. A torn last line is cut off before the next append (it would otherwise glue onto the next
row), and readers skip any line that does not parse. The latest row per ``relpath`` wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OK = "ok"
FIELDS = (
    "path", "relpath", "status", "error", "width", "height", "score", "forged", "threshold", "threshold_source",
    "forged_fraction", "forged_fraction_confident", "mode", "backend", "precision", "seconds",
)  # fmt: skip


def read_latest(path: Path) -> dict[str, dict[str, Any]]:
    """The latest parsable row per relpath (empty when the file does not exist)."""
    latest: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return latest
    with open(path, "rb") as file:
        for line in file:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("relpath"), str) and isinstance(row.get("status"), str):
                latest[row["relpath"]] = row
    return latest


def generic_error(row: dict[str, Any]) -> str:
    """A failed row's message without its file name, so that equal failures of different files count together."""
    return row["error"].replace(row["path"], "<file>")


def cut_torn_tail(path: Path) -> int:
    """Truncate a last line that has no newline (a write cut short); returns the bytes removed."""
    if not path.exists():
        return 0
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return 0
        # Scan back for the last complete line.
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            file.seek(start)
            chunk = file.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        file.truncate(keep)
        file.flush()
        os.fsync(file.fileno())
        return size - keep


class ResultsWriter:
    """Appends rows to results.jsonl, each one flushed and fsynced before ``append`` returns."""

    def __init__(self, path: Path):
        self.path = path
        self.torn_bytes = cut_torn_tail(path)
        self._file = open(path, "a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        assert set(row) == set(FIELDS), sorted(set(row) ^ set(FIELDS))
        self._file.write(json.dumps({key: row[key] for key in FIELDS}, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
