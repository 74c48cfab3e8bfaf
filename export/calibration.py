"""Calibration images for INT8: tiles from a folder of real images, or synthetic ones made in code.

Real photographs from the domain the model will scan (camera JPEGs, screenshots, edited images)
give better INT8 ranges than the synthetic default, which only exists so that the export works
without data: smooth colour gradients, blobs and edges, sensor-like noise, then JPEG
re-compression at a random quality, all from a fixed seed (the same images on every machine).
Folder images are cropped at native resolution (resizing would smooth away the camera noise
Noiseprint++ reads); only images smaller than a tile are upscaled.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reference.errors import ImageError

from .errors import ExportError
from reference.image import load_rgb
from reference.inputs import collect_inputs

DEFAULT_COUNT = 16
SEED = 20230601


def synthetic_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """One natural-ish size x size RGB uint8 image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.zeros((size, size, 3), np.float32)
    for c in range(3):  # a tilted colour ramp per channel
        a, b, offset = rng.uniform(-1, 1, 3)
        base[..., c] = 128 + 80 * (a * xx + b * yy + offset) / 2
    # low-frequency texture: a coarse random grid upsampled smoothly
    coarse = rng.uniform(0, 255, (int(rng.integers(3, 9)),) * 2 + (3,)).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
    image = Image.fromarray(np.clip(0.6 * base + 0.4 * texture, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 8))):  # objects with hard edges
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 16, size // 2, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(1, 6), (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(60, 98)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))


def synthetic_tiles(size: int, count: int = DEFAULT_COUNT, seed: int = SEED) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield synthetic_image(size, rng)


def folder_tiles(folder: str | os.PathLike, size: int, count: int = DEFAULT_COUNT, seed: int = SEED) -> Iterator[np.ndarray]:
    """Up to ``count`` size x size crops, one per image (sorted order, seeded crop positions)."""
    if not os.path.isdir(folder):
        raise ExportError(f"--calib {os.fspath(folder)!r} is not a folder of images")
    files = collect_inputs([os.fspath(folder)])
    if not files:
        raise ExportError(f"--calib {os.fspath(folder)!r} holds no image files")
    rng = np.random.default_rng(seed)
    produced = 0
    for item in files:
        if produced == count:
            return
        try:
            rgb = load_rgb(item.path)
        except ImageError as error:
            print(f"calibration: skipping {item.path}: {error}")
            continue
        height, width = rgb.shape[:2]
        if min(height, width) < size:  # upscale the short side to the tile size
            scale = size / min(height, width)
            new = (max(size, round(width * scale)), max(size, round(height * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize(new, Image.BICUBIC))
            height, width = rgb.shape[:2]
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        yield np.ascontiguousarray(rgb[top : top + size, left : left + size])
        produced += 1
    if produced == 0:
        raise ExportError(f"--calib {os.fspath(folder)!r}: none of the images could be read")


class TileReader:
    """An onnxruntime ``CalibrationDataReader``: one (1, T, T, 3) uint8 tile per call, with a tqdm bar."""

    def __init__(self, tiles: Iterator[np.ndarray], count: int, input_name: str = "image"):
        from tqdm import tqdm

        self._tiles = iter(tiles)
        self._input_name = input_name
        self._bar = tqdm(total=count, desc="int8 calibration", unit="tile")

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._tiles, None)
        if tile is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {self._input_name: tile[np.newaxis]}

    def __len__(self) -> int:
        return self._bar.total
