"""Per-image output files of a scan: official-format ``.npz`` maps, PNG overlays and the report's
JPEG thumbnails, written atomically.

Both go through ``reference.outputs.atomic_write`` (a temp file beside the target, fsync, then
``os.replace``), so a kill at any moment leaves the old file, the new one, or a stale temp file
that the next scan removes (``remove_stale_temps``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reference.outputs import atomic_write, save_npz
from reference.result import TruForResult

OVERLAY_MAX_SIDE = 1024  # each overlay panel is downscaled to at most this many pixels per side
OVERLAY_ALPHA = 0.55
THUMBNAIL_SIDE = 160  # each thumbnail panel fits in this many pixels square
THUMBNAIL_GAP = 4  # white pixels between the panels
# atomic_write's temp names: ".<name>.<12 hex>.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
# A perceptually ordered blue -> cyan -> yellow -> red ramp (value, R, G, B) for values in [0, 1].
_COLORMAP = np.array(
    [(0.0, 0, 0, 130), (0.25, 0, 110, 255), (0.5, 40, 230, 200), (0.75, 255, 210, 0), (1.0, 200, 0, 0)],
    dtype=np.float32,
)


def save_maps(path: Path, result: TruForResult) -> None:
    save_npz(path, result.npz_fields())


def colorize(values: np.ndarray) -> np.ndarray:
    """HxW values in [0, 1] -> HxWx3 uint8 through the module's colormap."""
    values = np.clip(values, 0.0, 1.0)
    channels = [np.interp(values, _COLORMAP[:, 0], _COLORMAP[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def resize_map(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxW float map to (width, height)."""
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def overlay_image(rgb: np.ndarray, result: TruForResult) -> Image.Image:
    """Localization map (left) and confidence (right), each blended over the image, with the score."""
    height, width = rgb.shape[:2]
    scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR), dtype=np.float32)
    panels = []
    for values in (result.map, result.conf):
        heat = colorize(resize_map(values, size) if scale < 1.0 else values).astype(np.float32)
        panels.append(((1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * heat).astype(np.uint8))
    canvas = Image.fromarray(np.concatenate(panels, axis=1))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), f"map  score {result.score:.3f}", fill=(255, 255, 255))
    draw.text((size[0] + 4, 2), "confidence", fill=(255, 255, 255))
    return canvas


def save_overlay(path: Path, rgb: np.ndarray, result: TruForResult) -> None:
    image = overlay_image(rgb, result)
    atomic_write(path, lambda file: image.save(file, format="PNG"))


def thumbnail_image(rgb: np.ndarray, result: TruForResult) -> Image.Image:
    """The image, its localization map (colormap) and its confidence (gray: white is reliable), side by side."""
    image = Image.fromarray(rgb)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.BILINEAR)
    size = image.size
    conf = (np.clip(resize_map(result.conf, size), 0.0, 1.0) * 255).round().astype(np.uint8)
    panels = [np.asarray(image), colorize(resize_map(result.map, size)), np.repeat(conf[..., np.newaxis], 3, axis=2)]
    gap = np.full((size[1], THUMBNAIL_GAP, 3), 255, dtype=np.uint8)
    return Image.fromarray(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))


def save_thumbnail(path: Path, rgb: np.ndarray, result: TruForResult) -> None:
    image = thumbnail_image(rgb, result)
    atomic_write(path, lambda file: image.save(file, format="JPEG", quality=88))


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files a killed run left under ``folder``; returns what was removed."""
    removed = []
    if folder.is_dir():
        for path in folder.rglob(".*.tmp"):
            if path.is_file() and _TEMP_NAME.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
