"""Tiled inference for images too large to run whole: overlapping tiles blended in logit space.

An image above ``TilingConfig.threshold_pixels`` runs as a grid of TxT tiles (T: the backend's tile
graph) that overlap by at least ``overlap`` pixels, ``batch_size`` tiles per call. Each tile's
localization and confidence *logits* are multiplied by a separable window and added into
full-resolution float32 accumulators (3 x H x W x 4 B); dividing by the summed window gives the
blended logits, which the score graph then pools over the whole image as the official model does.
Memory is the accumulators plus one batch of tiles, whatever the image size.

The window is smooth and never exactly zero, so every pixel (image borders included, where only
one tile covers it) has a positive total weight. Because the window and the grid are separable,
the total weight is the outer product of two 1-D sums and needs no H x W array.

Images with a side shorter than T are reflect-padded up to T and the outputs cropped back.

This is an approximation: TruFor has global operations (FRM pooling at every stage, full stage-4
attention), so a tile sees different statistics than the whole image does (ARCHITECTURE.md 8.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

WINDOWS = ("tukey", "hann", "box")
WINDOW_FLOOR = 1e-3  # smallest window weight: keeps border pixels' total weight away from zero
# Above this many pixels an image runs tiled. Peak RSS of one whole-image run of the full model,
# torch fp32 (fused attention), measured on this CPU: 0.79 MP 1.9 GB, 1.05 MP 2.5 GB, 1.92 MP
# 4.0 GB, 3.15 MP 6.1 GB (about 1.8 GB per megapixel). 2048 x 1024 pixels (so 1920x1080 and
# 1600x1200 run whole) keeps a whole image near 4.3 GB, inside 6 GB with room for decoding.
DEFAULT_THRESHOLD_PIXELS = 2048 * 1024
DEFAULT_BATCH_SIZE = 4

# (B, T, T, 3) uint8 tiles -> a call that waits for their (B, C, T, T) localization and
# (B, 1, T, T) confidence logits. A backend that runs asynchronously (TensorRT on CUDA streams)
# returns at once, so the next batch computes while the host blends this one.
TileSubmit = Callable[[np.ndarray], Callable[[], tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class TilingConfig:
    """When and how to tile. ``overlap=None`` means a quarter of the backend's tile size."""

    threshold_pixels: int = DEFAULT_THRESHOLD_PIXELS
    overlap: int | None = None
    window: str = "tukey"
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self):
        if self.threshold_pixels < 0:
            raise ValueError(f"tile threshold must be >= 0 pixels, got {self.threshold_pixels}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"tile overlap must be >= 0 pixels, got {self.overlap}")
        if self.window not in WINDOWS:
            raise ValueError(f"unknown tile window {self.window!r}; choose one of {list(WINDOWS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    def needs_tiling(self, height: int, width: int) -> bool:
        return height * width > self.threshold_pixels

    def overlap_for(self, tile_size: int) -> int:
        """The overlap in pixels for ``tile_size``; refuses one that leaves no tile interior."""
        overlap = tile_size // 4 if self.overlap is None else self.overlap
        if overlap > tile_size // 2:
            raise ValueError(
                f"tile overlap {overlap} is more than half the tile size {tile_size}; "
                f"use at most {tile_size // 2}"
            )
        return overlap


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``, evenly spread, neighbours overlapping >= ``overlap``.

    The first tile starts at 0 and the last one ends at ``length``; ``length <= tile`` gives one tile.
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def window_1d(tile: int, overlap: int, kind: str = "tukey") -> np.ndarray:
    """A symmetric weight profile over one tile side, in [WINDOW_FLOOR, 1].

    tukey: flat 1 in the middle, sin^2 ramps over ``overlap`` pixels at each edge; hann: sin^2 over
    the whole tile; box: all ones (plain averaging).
    """
    centers = np.arange(tile, dtype=np.float64) + 0.5
    if kind == "box" or (kind == "tukey" and overlap == 0):
        weights = np.ones(tile)
    elif kind == "tukey":
        edge = np.minimum(centers, tile - centers)  # distance of the pixel centre to the nearer edge
        weights = np.sin(0.5 * np.pi * np.minimum(edge / overlap, 1.0)) ** 2
    elif kind == "hann":
        weights = np.sin(np.pi * centers / tile) ** 2
    else:
        raise ValueError(f"unknown tile window {kind!r}; choose one of {list(WINDOWS)}")
    return np.maximum(weights, WINDOW_FLOOR).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of a (padded) image lie."""

    height: int  # padded height: max(image height, tile)
    width: int
    tile: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def for_image(cls, height: int, width: int, tile: int, overlap: int) -> TileGrid:
        height, width = max(height, tile), max(width, tile)
        return cls(height, width, tile, tuple(tile_starts(height, tile, overlap)), tuple(tile_starts(width, tile, overlap)))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def origins(self) -> Iterator[tuple[int, int]]:
        for y in self.ys:
            for x in self.xs:
                yield y, x

    def total_weight(self, window: np.ndarray, starts: tuple[int, ...], length: int) -> np.ndarray:
        """Sum of the 1-D window over the tiles along one axis: (length,) float32, all > 0."""
        total = np.zeros(length, np.float32)
        for start in starts:
            total[start : start + self.tile] += window
        return total


def pad_to_tile(rgb: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad the bottom and right of an image up to ``tile`` on each side shorter than it."""
    height, width = rgb.shape[:2]
    if height >= tile and width >= tile:
        return rgb
    return np.pad(rgb, ((0, max(tile - height, 0)), (0, max(tile - width, 0)), (0, 0)), mode="reflect")


def stitch_tiles(
    rgb: np.ndarray,
    submit_tiles: TileSubmit,
    tile: int,
    overlap: int,
    window: str = "tukey",
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blended full-resolution logits of an HxWx3 uint8 image: (1, C, H, W) and (1, 1, H, W) float32.

    One batch is submitted ahead of the one being blended, so at most two are in flight.
    ``on_progress(tiles_done, tiles_total)`` is called after every batch of tiles.
    """
    height, width = rgb.shape[:2]
    padded = pad_to_tile(rgb, tile)
    grid = TileGrid.for_image(height, width, tile, overlap)
    profile = window_1d(tile, overlap, window)
    weights = np.outer(profile, profile)
    accumulator: np.ndarray | None = None  # (C + 1, H, W): localization channels, then confidence
    origins = list(grid.origins())
    batches = [origins[first : first + batch_size] for first in range(0, len(origins), batch_size)]

    def submit(batch_origins: list[tuple[int, int]]):
        return submit_tiles(np.stack([padded[y : y + tile, x : x + tile] for y, x in batch_origins]))

    done = 0
    next_result = submit(batches[0])
    for index, batch_origins in enumerate(batches):
        result = next_result
        if index + 1 < len(batches):
            next_result = submit(batches[index + 1])
        loc_logits, conf_logits = result()
        if accumulator is None:
            accumulator = np.zeros((loc_logits.shape[1] + 1, grid.height, grid.width), np.float32)
        classes = loc_logits.shape[1]
        for (y, x), loc, conf in zip(batch_origins, loc_logits, conf_logits):
            accumulator[:classes, y : y + tile, x : x + tile] += loc * weights
            accumulator[classes:, y : y + tile, x : x + tile] += conf * weights
        del result, loc_logits, conf_logits
        done += len(batch_origins)
        if on_progress is not None:
            on_progress(done, len(origins))
    assert accumulator is not None
    rows = grid.total_weight(profile, grid.ys, grid.height)
    cols = grid.total_weight(profile, grid.xs, grid.width)
    for top in range(0, grid.height, 256):  # normalize in row blocks: no H x W temporary
        accumulator[:, top : top + 256] /= rows[top : top + 256, None] * cols[None, :]
    if (grid.height, grid.width) != (height, width):
        accumulator = accumulator[:, :height, :width]
    classes = accumulator.shape[0] - 1
    loc = np.ascontiguousarray(accumulator[None, :classes])
    conf = np.ascontiguousarray(accumulator[None, classes:])
    return loc, conf
