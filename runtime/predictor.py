"""One ``predict`` for every backend: whole images as the official code runs them, large ones tiled."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable

import numpy as np

from reference.image import DEFAULT_MAX_PIXELS, ImageSource, load_rgb
from reference.result import TruForResult

from .runners.base import Backend
from .tiling import HostBlender, TilingConfig, stitch_tiles

WHOLE_CALLS_IN_FLIGHT = 2  # whole-image calls submitted before the oldest is awaited (two CUDA streams)


class Predictor:
    """Runs a backend on RGB images and returns the reference's ``TruForResult``.

    Images the whole-image rule admits run whole through the ``whole`` graph and reproduce the
    official outputs; the rule is the backend's (the manifest's, which also sized the TensorRT
    profile, so such an image never falls back), narrowed by ``tiling``. Other images run as
    blended tiles (see ``runtime.tiling``), on the device when the backend takes torch tensors there
    (``Capabilities.device_tensors``). Each result names the backend that computed it.
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
        self.whole_rule = tiling.whole_rule(backend.whole_rule)
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
        return "whole" if self.whole_rule.runs_whole(height, width) else "tiled"

    def predict(self, image: ImageSource) -> TruForResult:
        """``image``: a path, encoded bytes, a PIL image or an HxWx3 uint8 RGB array."""
        rgb = load_rgb(image, exif_transpose=self.exif_transpose, max_pixels=self.max_pixels)
        return self.predict_rgb(rgb)

    def predict_rgb(self, rgb: np.ndarray) -> TruForResult:
        if self.mode(*rgb.shape[:2]) == "tiled":
            return self._predict_tiled(rgb)
        return self._submit_whole(rgb[np.newaxis])()[0]

    def predict_batch(self, images: list[np.ndarray]) -> list[TruForResult]:
        """Results in input order. Same-size whole images share calls of at most ``batch_size`` images
        and the rule's pixel budget, so a call never needs more memory than one tiled image; up to
        ``WHOLE_CALLS_IN_FLIGHT`` calls of different sizes are submitted before the oldest is awaited."""
        results: list[TruForResult | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, rgb in enumerate(images):
            if self.mode(*rgb.shape[:2]) == "tiled":
                results[index] = self._predict_tiled(rgb)
            else:
                groups[rgb.shape].append(index)
        calls = []
        for shape, indices in groups.items():
            per_call = self.whole_batch_limit(shape[0], shape[1])
            calls += [indices[first : first + per_call] for first in range(0, len(indices), per_call)]
        in_flight: deque = deque()
        for chunk in calls:
            if len(in_flight) == WHOLE_CALLS_IN_FLIGHT:
                self._collect(*in_flight.popleft(), results)
            batch = np.stack([images[i] for i in chunk]) if len(chunk) > 1 else images[chunk[0]][np.newaxis]
            in_flight.append((chunk, self._submit_whole(batch)))
        while in_flight:
            self._collect(*in_flight.popleft(), results)
        return results

    @staticmethod
    def _collect(chunk: list[int], wait: Callable[[], list[TruForResult]], results: list) -> None:
        for index, result in zip(chunk, wait()):
            results[index] = result

    def whole_batch_limit(self, height: int, width: int) -> int:
        """How many whole images of this size go into one call."""
        budget = max(self.whole_rule.max_pixels // (height * width), 1)
        return min(self.tiling.batch_size, budget)

    def _submit_whole(self, batch: np.ndarray) -> Callable[[], list[TruForResult]]:
        """Start a call of the whole graph; the returned call waits for its results."""
        self._whole_holds_memory = self.backend.capabilities.release_memory
        runner = self.backend.whole
        wait = runner.submit_batch({"image": np.ascontiguousarray(batch)})
        ran_on = runner.ran_on

        def results() -> list[TruForResult]:
            out = wait()
            return [TruForResult(map=out["map"][i], conf=out["conf"][i], score=float(out["score"][i]), backend=ran_on)
                    for i in range(batch.shape[0])]

        return results

    def _predict_tiled(self, rgb: np.ndarray) -> TruForResult:
        if self._whole_holds_memory:  # the tile and score graphs' buffers must not add up with the whole graph's
            self.backend.whole.release_memory()
            self._whole_holds_memory = False
        backend, tiling = self.backend, self.tiling
        device = backend.capabilities.device_tensors
        if device is None:
            blender = HostBlender(rgb, backend.tile_size, self.overlap, tiling.window)
            submit = backend.tile.submit_batch
        else:
            from .device_tiling import DeviceBlender

            blender = DeviceBlender(rgb, backend.tile_size, self.overlap, tiling.window, device)
            submit = backend.tile.submit_tensors

        def submit_tiles(tiles):
            wait = submit({"image": tiles})

            def logits():
                out = wait()
                return out["loc_logits"], out["conf_logits"]

            return logits

        loc_logits, conf_logits = stitch_tiles(blender, submit_tiles, tiling.batch_size, self.on_tiles,
                                               pad_last=backend.capabilities.gpu)
        feed = {"loc_logits": loc_logits, "conf_logits": conf_logits}
        del blender, loc_logits, conf_logits
        out = backend.score.infer(feed) if device is None else _to_host(backend.score.submit_tensors(feed)())
        ran_on = "+".join(dict.fromkeys((backend.tile.ran_on, backend.score.ran_on)))
        return TruForResult(map=out["map"][0], conf=out["conf"][0], score=float(out["score"][0]), backend=ran_on)


def _to_host(outputs: dict) -> dict[str, np.ndarray]:
    return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}
