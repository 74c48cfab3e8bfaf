"""Tiled inference for images too large to run whole: overlapping tiles blended in logit space.

An image the whole-image rule (``export.contract.WholeImageRule``: the backend's, from its manifest,
narrowed by ``TilingConfig``) does not run whole runs as a grid of TxT tiles (T: the backend's tile
graph) that overlap by at least ``overlap`` pixels, ``batch_size`` tiles per call. On a GPU the
last call is padded to ``batch_size`` with copies of its last tile, so the tile graph sees one shape
only (what TensorRT's CUDA graphs need; the copies cost little there), and their logits are
dropped; on a CPU, where every tile costs its full time, it is not. Each tile's localization and
confidence *logits* are multiplied by a separable window and added into full-resolution float32
accumulators (3 x H x W x 4 B); dividing by the summed window gives the blended logits, which the
score graph then pools over the whole image as the official model does. Memory is the
accumulators plus the tile batches in flight, whatever the image size.

Two blenders share the grid, the window and the pipeline (``stitch_tiles``): ``HostBlender`` here
(NumPy, for backends that take numpy arrays) and ``runtime.device_tiling.DeviceBlender`` (torch
tensors on the backend's device: the image is copied there once, tiles are cut, blended and pooled
there, and only the maps come back).

The window is smooth and never exactly zero, so every pixel (image borders included, where only
one tile covers it) has a positive total weight. Because the window and the grid are separable,
the total weight is the outer product of two 1-D sums and needs no H x W array.

Images with a side shorter than T are reflect-padded up to T and the outputs cropped back.

This is an approximation: TruFor has global operations (FRM pooling at every stage, full stage-4
attention), so a tile sees different statistics than the whole image does (ARCHITECTURE.md 8.5).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from export.contract import WholeImageRule

WINDOWS = ("tukey", "hann", "box")
WINDOW_FLOOR = 1e-3  # smallest window weight: keeps border pixels' total weight away from zero
DEFAULT_BATCH_SIZE = 4
# Tile batches submitted and not yet blended: on an asynchronous backend the device works on the
# next ones while the host blends (or, on the device, enqueues the blending of) this one.
BATCHES_IN_FLIGHT = 3


@dataclass(frozen=True)
class TilingConfig:
    """When and how to tile. ``threshold_pixels`` / ``max_side`` replace the backend's whole-image
    limits (None: the backend's); ``overlap=None`` means a quarter of the backend's tile size."""

    threshold_pixels: int | None = None
    overlap: int | None = None
    window: str = "tukey"
    batch_size: int = DEFAULT_BATCH_SIZE
    max_side: int | None = None

    def __post_init__(self):
        if self.threshold_pixels is not None and self.threshold_pixels < 0:
            raise ValueError(f"tile threshold must be >= 0 pixels, got {self.threshold_pixels}")
        if self.max_side is not None and self.max_side < 0:
            raise ValueError(f"the whole-image side limit must be >= 0 pixels, got {self.max_side}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"tile overlap must be >= 0 pixels, got {self.overlap}")
        if self.window not in WINDOWS:
            raise ValueError(f"unknown tile window {self.window!r}; choose one of {list(WINDOWS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")

    def whole_rule(self, backend_rule: WholeImageRule | None) -> WholeImageRule:
        """The rule images are run by: the backend's (the contract's default when it has none) with
        this config's limits in place of its own."""
        base = backend_rule or WholeImageRule()
        return WholeImageRule(
            base.max_pixels if self.threshold_pixels is None else self.threshold_pixels,
            base.max_side if self.max_side is None else self.max_side,
        )

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


def padded_batch(origins: list[tuple[int, int]], batch_size: int) -> list[tuple[int, int]]:
    """``origins`` with its last tile repeated up to ``batch_size``: every call has the same shape."""
    return origins + [origins[-1]] * (batch_size - len(origins))


class HostBlender:
    """Tiles cut from, and logits blended into, NumPy arrays on the host."""

    def __init__(self, rgb: np.ndarray, tile: int, overlap: int, window: str):
        self.height, self.width = rgb.shape[:2]
        self.tile = tile
        self.padded = pad_to_tile(rgb, tile)
        self.grid = TileGrid.for_image(self.height, self.width, tile, overlap)
        self.profile = window_1d(tile, overlap, window)
        self.weights = np.outer(self.profile, self.profile)
        self.accumulator: np.ndarray | None = None  # (C + 1, H, W): localization channels, then confidence

    def tiles(self, origins: list[tuple[int, int]]) -> np.ndarray:
        tile = self.tile
        return np.stack([self.padded[y : y + tile, x : x + tile] for y, x in origins])

    def add(self, origins: list[tuple[int, int]], loc_logits: np.ndarray, conf_logits: np.ndarray) -> None:
        """Blend the logits of the tiles at ``origins`` (the first ``len(origins)`` of the batch)."""
        if self.accumulator is None:
            self.accumulator = np.zeros((loc_logits.shape[1] + 1, self.grid.height, self.grid.width), np.float32)
        classes, tile = loc_logits.shape[1], self.tile
        for (y, x), loc, conf in zip(origins, loc_logits, conf_logits):
            self.accumulator[:classes, y : y + tile, x : x + tile] += loc * self.weights
            self.accumulator[classes:, y : y + tile, x : x + tile] += conf * self.weights

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        """The blended (1, C, H, W) and (1, 1, H, W) float32 logits, cropped to the image."""
        accumulator, grid = self.accumulator, self.grid
        rows = grid.total_weight(self.profile, grid.ys, grid.height)
        cols = grid.total_weight(self.profile, grid.xs, grid.width)
        for top in range(0, grid.height, 256):  # normalize in row blocks: no H x W temporary
            accumulator[:, top : top + 256] /= rows[top : top + 256, None] * cols[None, :]
        accumulator = accumulator[:, : self.height, : self.width]
        classes = accumulator.shape[0] - 1
        return np.ascontiguousarray(accumulator[None, :classes]), np.ascontiguousarray(accumulator[None, classes:])


def stitch_tiles(
    blender,
    submit_tiles: Callable,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int, int], None] | None = None,
    pad_last: bool = False,
):
    """Blended full-resolution logits of the blender's image: (1, C, H, W) and (1, 1, H, W).

    ``submit_tiles(tiles)`` starts a (B, T, T, 3) batch and returns the call that waits for its
    (loc_logits, conf_logits); up to ``BATCHES_IN_FLIGHT`` batches are submitted before the oldest
    is waited for. ``pad_last`` makes every B ``batch_size``. ``on_progress(tiles_done, tiles_total)``
    is called after every batch.
    """
    origins = list(blender.grid.origins())
    batches = [origins[first : first + batch_size] for first in range(0, len(origins), batch_size)]
    in_flight: deque = deque()
    done = 0
    for index in range(len(batches)):
        while len(in_flight) < BATCHES_IN_FLIGHT and index + len(in_flight) < len(batches):
            batch = batches[index + len(in_flight)]
            tiles = blender.tiles(padded_batch(batch, batch_size) if pad_last else batch)
            in_flight.append((batch, submit_tiles(tiles)))
        batch, result = in_flight.popleft()
        blender.add(batch, *result())
        del result
        done += len(batch)
        if on_progress is not None:
            on_progress(done, len(origins))
    return blender.logits()
