"""Where pristine images come from: simulated cameras over procedural scenes, or a folder of photos.

A source hands out uint8 RGB images of a requested size together with a camera id, so a
splice can take its donor from a different camera than the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reference.errors import TruForError
from reference.inputs import IMAGE_EXTENSIONS

from .camera import camera_model, develop
from .imageops import resize_linear, to_uint8
from .photos import DecodedPhotos
from .procedural import procedural_scene


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TruForError(f"{folder} is not a folder")
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
    )


class SimulatedCameraSource:
    """Procedural scenes rendered by one of ``num_cameras`` simulated cameras (``camera.py``)."""

    def __init__(self, num_cameras: int = 64, first_camera: int = 0):
        if num_cameras < 2:
            raise ValueError(f"need at least 2 simulated cameras (splicing mixes two), got {num_cameras}")
        self.cameras = [camera_model(first_camera + i) for i in range(num_cameras)]

    def __repr__(self) -> str:
        return f"SimulatedCameraSource({len(self.cameras)} cameras)"

    def draw(self, rng: np.random.Generator, height: int, width: int, exclude_camera: int | None = None) -> tuple[np.ndarray, int]:
        choices = [i for i in range(len(self.cameras)) if i != exclude_camera]
        camera = int(rng.choice(choices))
        return develop(procedural_scene(rng, height, width), self.cameras[camera], rng), camera


class PhotoFolderSource:
    """Random crops of real photos. The camera id is the index of the photo's top-level subfolder
    (photos directly in the folder share id 0), so splices mix subfolders when there are several.
    Photos smaller than the crop are enlarged (linear), which blurs their traces: prefer large ones.
    Each photo is decoded once (``photos.DecodedPhotos``)."""

    def __init__(self, folder: str | os.PathLike, decoded: DecodedPhotos | None = None):
        self.folder = Path(folder)
        self.decoded = decoded or DecodedPhotos()
        self.files = list_images(self.folder)
        if not self.files:
            raise TruForError(f"no images found under {self.folder} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS)[:8])}, ...)")
        groups = sorted({self._group(path) for path in self.files})
        self.camera_of = [groups.index(self._group(path)) for path in self.files]

    def __repr__(self) -> str:
        return f"PhotoFolderSource({self.folder}, {len(self.files)} images)"

    def _group(self, path: Path) -> str:
        parts = path.relative_to(self.folder).parts
        return parts[0] if len(parts) > 1 else ""

    def draw(self, rng: np.random.Generator, height: int, width: int, exclude_camera: int | None = None) -> tuple[np.ndarray, int]:
        candidates = [i for i, cam in enumerate(self.camera_of) if cam != exclude_camera] or list(range(len(self.files)))
        index = int(rng.choice(candidates))
        image = self.decoded.load(self.files[index])
        scale = max(height / image.shape[0], width / image.shape[1], 1.0)
        if scale > 1.0:
            image = to_uint8(resize_linear(image, int(np.ceil(image.shape[0] * scale)), int(np.ceil(image.shape[1] * scale))))
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        return np.ascontiguousarray(image[top : top + height, left : left + width]), self.camera_of[index]
