"""Phase-1 batches: groups of patches that share camera model, grid position and editing history.

A batch has ``groups`` classes of ``per_group`` patches. Inside a class the patches come from
different pictures where the source has enough of them, taken by the same camera, edited the same way and cropped at the same
position modulo the 8-pixel grid (so the CFA and JPEG grids line up);
patches of different classes are negatives. No two classes of a batch share all three keys.

Two sources:

- ``SimulatedCameraPatches``: procedural scenes rendered by simulated cameras (``camera.py``).
  Each batch draws a small pool of scenes that all its classes reuse, so the same content appears
  under different cameras and histories: content cannot tell the classes apart, traces must.
- ``CameraFolderPatches``: real photos, one subfolder per camera model, decoded once
  (``photos.DecodedPhotos``). A camera with fewer photos than ``per_group`` repeats them, each
  repeat at another window: its patches then share the camera but not always the picture.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference.config import PIXEL_SCALE
from reference.errors import TruForError

from .camera import apply_history, camera_model, develop, edit_history
from .photos import DecodedPhotos
from .procedural import procedural_scene
from .sources import list_images


@dataclass(frozen=True)
class ContrastiveConfig:
    patch: int = 48
    groups: int = 16
    per_group: int = 4
    num_cameras: int = 64
    num_histories: int = 16  # history 0 (no edit) included
    grid: int = 8  # offsets within the 8x8 JPEG block (and so the 2x2 CFA cell)

    def __post_init__(self):
        if self.per_group < 2:
            raise ValueError(f"per_group must be >= 2 (a class needs a positive pair), got {self.per_group}")
        if self.groups < 2:
            raise ValueError(f"groups must be >= 2 (a batch needs negatives), got {self.groups}")


def _draw_keys(rng: np.random.Generator, config: ContrastiveConfig, cameras: int) -> list[tuple[int, int, int, int]]:
    """``groups`` distinct (camera, history, dy, dx) keys."""
    if cameras * config.num_histories * config.grid**2 < config.groups:
        raise TruForError(f"only {cameras * config.num_histories * config.grid ** 2} distinct classes for {config.groups} groups")
    keys: list[tuple[int, int, int, int]] = []
    while len(keys) < config.groups:
        key = (
            int(rng.integers(cameras)),
            int(rng.integers(config.num_histories)),
            int(rng.integers(config.grid)),
            int(rng.integers(config.grid)),
        )
        if key not in keys:
            keys.append(key)
    return keys


def _window(config: ContrastiveConfig, history_index: int) -> int:
    """Side of the picture to process so that, after the history's resize, the patch fits at any offset."""
    return math.ceil((config.grid + config.patch) / edit_history(history_index).scale()) + 2


def _to_batch(patches: list[np.ndarray], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack(patches).astype(np.float32).transpose(0, 3, 1, 2) / PIXEL_SCALE
    return images, np.asarray(labels, dtype=np.int64)


class SimulatedCameraPatches:
    def __init__(self, config: ContrastiveConfig, first_camera: int = 0):
        self.config = config
        self.cameras = [camera_model(first_camera + i) for i in range(config.num_cameras)]
        self.histories = [edit_history(i) for i in range(config.num_histories)]

    def __repr__(self) -> str:
        return f"SimulatedCameraPatches({len(self.cameras)} cameras, {len(self.histories)} histories)"

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, p, p) float32 RGB / 256 and (N,) class labels."""
        config = self.config
        keys = _draw_keys(rng, config, len(self.cameras))
        size = max(_window(config, history) for _, history, _, _ in keys)
        pool = [procedural_scene(rng, size, size) for _ in range(2 * config.per_group)]
        patches, labels = [], []
        for label, (camera, history, dy, dx) in enumerate(keys):
            window = _window(config, history)
            for scene_index in rng.choice(len(pool), config.per_group, replace=False):
                image = develop(pool[scene_index][:window, :window], self.cameras[camera], rng)
                image = apply_history(image, self.histories[history])
                patches.append(image[dy : dy + config.patch, dx : dx + config.patch])
                labels.append(label)
        return _to_batch(patches, labels)


class CameraFolderPatches:
    """``root/<camera>/...`` photos; every camera subfolder with at least one photo is a class source."""

    def __init__(self, root: str | os.PathLike, config: ContrastiveConfig, decoded: DecodedPhotos | None = None):
        self.root = Path(root)
        self.config = config
        self.decoded = decoded or DecodedPhotos()
        self.histories = [edit_history(i) for i in range(config.num_histories)]
        cameras = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        self.photos = {cam.name: files for cam in cameras if (files := list_images(cam))}
        if len(self.photos) < 2:
            raise TruForError(
                f"{self.root} needs at least 2 camera subfolders with photos (found {len(self.photos)}); "
                f"layout: {self.root}/<camera model>/<photos>"
            )
        self.names = sorted(self.photos)

    def __repr__(self) -> str:
        return f"CameraFolderPatches({self.root}, {len(self.names)} cameras)"

    def batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        config = self.config
        keys = _draw_keys(rng, config, len(self.names))
        patches, labels = [], []
        for label, (camera, history, dy, dx) in enumerate(keys):
            window = _window(config, history)
            files = self.photos[self.names[camera]]
            order = rng.permutation(len(files))
            for index in range(config.per_group):
                path = files[order[index % len(files)]]
                image = self.decoded.load(path)
                height, width = image.shape[:2]
                if min(height, width) < window:
                    raise TruForError(f"{path} is smaller than the {window}-pixel window phase 1 needs")
                # 8-aligned origins keep every patch of the class in the same CFA and JPEG grid phase.
                top = int(rng.integers(0, (height - window) // 8 + 1)) * 8
                left = int(rng.integers(0, (width - window) // 8 + 1)) * 8
                edited = apply_history(np.ascontiguousarray(image[top : top + window, left : left + window]), self.histories[history])
                patches.append(edited[dy : dy + config.patch, dx : dx + config.patch])
                labels.append(label)
        return _to_batch(patches, labels)
