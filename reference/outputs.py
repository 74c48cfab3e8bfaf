"""Writing files so that a kill at any moment leaves either the old file or the new one.

``atomic_write`` is the one way the project writes a file it keeps (maps, manifests, graphs, engines,
sidecars, indexes, settings, checkpoints): every layer above reference calls it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write through ``write(file)`` into a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename; "x" mode keeps the umask's permissions.
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` of UTF-8 text."""
    atomic_write(path, lambda file: file.write(text.encode()))


def save_npz(path: str | os.PathLike, fields: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz``, as the official code writes, atomically."""
    atomic_write(path, lambda file: np.savez(file, **fields))
