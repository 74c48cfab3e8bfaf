"""One ``predict`` for every backend: whole images as the official code runs them, large ones tiled."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from reference.image import DEFAULT_MAX_PIXELS, ImageSource, load_rgb
from reference.result import TruForResult

from .runners.base import Backend
from .tiling import TilingConfig, stitch_tiles


class Predictor:
    """Runs a backend on RGB images and returns the reference's ``TruForResult``.

    Images of at most ``tiling.threshold_pixels`` pixels run whole through the ``whole`` graph and
    reproduce the official outputs; larger ones run as blended tiles (see ``runtime.tiling``).
    The backend is activated here and stays active until ``close`` (or the end of a ``with``).
    ``on_tiles(done, total)``, when set, is called after every batch of tiles of a tiled image.
    """

    on_tiles: Callable[[int, int], None] | None = None

    def __init__(
        self,
        backend: Backend,
        tiling: TilingConfig = TilingConfig(),
        *,
        exif_transpose: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.backend = backend
        self.tiling = tiling
        self.overlap = tiling.overlap_for(backend.tile_size)
        self.exif_transpose = exif_transpose
        self.max_pixels = max_pixels
        self._whole_holds_memory = False  # it ran since the last tiled image and keeps its buffers
        backend.activate()

    def close(self) -> None:
        self.backend.deactivate()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def mode(self, height: int, width: int) -> str:
        """``"whole"`` or ``"tiled"``: how an image of this size runs."""
        return "tiled" if self.tiling.needs_tiling(height, width) else "whole"

    def predict(self, image: ImageSource) -> TruForResult:
        """``image``: a path, encoded bytes, a PIL image or an HxWx3 uint8 RGB array."""
        rgb = load_rgb(image, exif_transpose=self.exif_transpose, max_pixels=self.max_pixels)
        return self.predict_rgb(rgb)

    def predict_rgb(self, rgb: np.ndarray) -> TruForResult:
        if self.mode(*rgb.shape[:2]) == "tiled":
            return self._predict_tiled(rgb)
        return self._predict_whole(rgb[np.newaxis])[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[TruForResult]:
        """Results in input order; same-size whole images share calls of at most ``batch_size``
        images and ``threshold_pixels`` pixels, so a batch never needs more memory than one tiled
        call's budget."""
        results: list[TruForResult | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, rgb in enumerate(images):
            if self.mode(*rgb.shape[:2]) == "tiled":
                results[index] = self._predict_tiled(rgb)
            else:
                groups[rgb.shape].append(index)
        for shape, indices in groups.items():
            per_call = self.whole_batch_limit(shape[0], shape[1])
            for first in range(0, len(indices), per_call):
                chunk = indices[first : first + per_call]
                batch = np.stack([images[i] for i in chunk]) if len(chunk) > 1 else images[chunk[0]][np.newaxis]
                for index, result in zip(chunk, self._predict_whole(batch)):
                    results[index] = result
        return results

    def whole_batch_limit(self, height: int, width: int) -> int:
        """How many whole images of this size go into one call."""
        budget = max(self.tiling.threshold_pixels // (height * width), 1)
        return min(self.tiling.batch_size, budget)

    def _predict_whole(self, batch: np.ndarray) -> list[TruForResult]:
        self._whole_holds_memory = self.backend.capabilities.release_memory
        out = self.backend.whole.infer({"image": np.ascontiguousarray(batch)})
        return [
            TruForResult(map=out["map"][i], conf=out["conf"][i], score=float(out["score"][i]))
            for i in range(batch.shape[0])
        ]

    def _submit_tiles(self, tiles: np.ndarray) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Starts a batch of tiles and returns the call that waits for its logits: at once on a backend
        with ``async_submit`` (TensorRT), after computing them on the others."""
        wait = self.backend.tile.submit_batch({"image": tiles})

        def logits() -> tuple[np.ndarray, np.ndarray]:
            out = wait()
            return out["loc_logits"], out["conf_logits"]

        return logits

    def _predict_tiled(self, rgb: np.ndarray) -> TruForResult:
        if self._whole_holds_memory:  # the tile and score graphs' buffers must not add up with the whole graph's
            self.backend.whole.release_memory()
            self._whole_holds_memory = False
        loc_logits, conf_logits = stitch_tiles(
            rgb,
            self._submit_tiles,
            self.backend.tile_size,
            self.overlap,
            self.tiling.window,
            self.tiling.batch_size,
            self.on_tiles,
        )
        out = self.backend.score.infer({"loc_logits": loc_logits, "conf_logits": conf_logits})
        del loc_logits, conf_logits
        return TruForResult(map=out["map"][0], conf=out["conf"][0], score=float(out["score"][0]))
