"""Camera photos decoded once and kept as ``.npy`` files, so a random crop costs a memory map.

Decoding a 24-megapixel JPEG takes about 0.3 s on this project's CPUs, and phase 1 and the
synthetic forgeries of phases 2 and 3 each cut dozens of small crops from such photos per batch.
Downscaling on load (JPEG draft mode) would destroy the traces the model learns, so photos are
decoded at full size, once, into ``$TRUFOR_HOME/decoded/`` and read back with ``mmap_mode="r"``.
An entry is named by the photo's path, size and modification time, so an edited photo is decoded
again; writes are atomic, so data-loading workers may fill the cache concurrently.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from reference.home import trufor_home
from reference.image import load_rgb
from reference.outputs import atomic_write


class DecodedPhotos:
    """``load(path)``: the photo as a read-only HxWx3 uint8 array (a memory map of its cache entry)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else trufor_home() / "decoded"

    def __repr__(self) -> str:
        return f"DecodedPhotos({self.folder})"

    def entry(self, path: Path) -> Path:
        stat = path.stat()
        key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"

    def load(self, path: str | os.PathLike) -> np.ndarray:
        path = Path(path)
        entry = self.entry(path)
        if not entry.is_file():
            image = load_rgb(path, max_pixels=None)
            atomic_write(entry, lambda file: np.save(file, image))
        return np.load(entry, mmap_mode="r")
