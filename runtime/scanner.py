"""Decoded images to ``results.jsonl`` rows: the one scanner that the local and the Ray scans share.

A row always implies its files: the maps and overlay of an image are written (atomically) before
its row is returned, so whoever appends the row can never record a result whose files are missing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reference.errors import TruForError
from reference.inputs import InputFile
from reference.result import TruForResult

from .decision import DECISION_FIELDS, DecisionRule
from .decode import Decoded
from .outputs import save_maps, save_overlay, save_thumbnail
from .predictor import Predictor
from .records import OK
from .runners.base import Backend


@dataclass(frozen=True)
class OutputOptions:
    out: Path
    save_maps: bool
    overlays: bool
    decision: DecisionRule
    retry_errors: bool
    workers: int
    thumbnails: bool = False  # for the report: image, map and confidence side by side

    def map_path(self, item: InputFile) -> Path:
        return output_path(self.out, "maps", item.relpath)

    def overlay_path(self, item: InputFile) -> Path:
        return output_path(self.out, "overlays", item.relpath)


OUTPUT_FILES = {"maps": ".npz", "overlays": ".png", "thumbnails": ".jpg"}  # folder -> suffix of per-input files


def output_path(out: Path, folder: str, relpath: str) -> Path:
    """Where a scan into ``out`` keeps an input's file of ``folder`` (one of OUTPUT_FILES)."""
    return out / folder / f"{relpath}{OUTPUT_FILES[folder]}"


def error_row(
    item: InputFile,
    status: str,
    message: str,
    backend: Backend,
    seconds: float | None,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
) -> dict:
    """The row of an input that has no result; ``size`` is (height, width) when it was decoded."""
    height, width = size if size is not None else (None, None)
    return {
        "path": str(item.path),
        "relpath": item.relpath,
        "status": status,
        "error": message,
        "width": width,
        "height": height,
        **dict.fromkeys(DECISION_FIELDS),
        "mode": mode,
        "backend": backend.name,
        "precision": backend.precision,
        "seconds": None if seconds is None else round(seconds, 4),
    }


class Scanner:
    """Runs a batch of decoded images through the predictor and returns one row per image, in order."""

    def __init__(self, predictor: Predictor, options: OutputOptions):
        self.predictor = predictor
        self.options = options

    def scan(self, batch: list[Decoded]) -> list[dict]:
        """Rows for ``batch``; inputs that failed to decode get their error row. OSError from
        writing outputs propagates: every later image would fail the same way."""
        rows: list[dict | None] = [None] * len(batch)
        decoded = []
        for index, image in enumerate(batch):
            if image.error is None:
                decoded.append(index)
            else:
                rows[index] = self.error_row(image, image.error, "decode_error", image.seconds)
        for index, row in zip(decoded, self._infer([batch[i] for i in decoded])):
            rows[index] = row
        return rows

    def _infer(self, batch: list[Decoded]) -> list[dict]:
        if not batch:
            return []
        start = time.perf_counter()
        try:
            results = self.predictor.predict_batch([image.rgb for image in batch])
        except Exception as error:
            if len(batch) > 1:  # find which image fails: each alone
                return [row for image in batch for row in self._infer([image])]
            return [self.error_row(batch[0], error, "inference_error", batch[0].seconds + time.perf_counter() - start)]
        share = (time.perf_counter() - start) / len(batch)
        return [self._finish(image, result, image.seconds + share) for image, result in zip(batch, results)]

    def _finish(self, image: Decoded, result: TruForResult, seconds: float) -> dict:
        if not (math.isfinite(result.score) and np.isfinite(result.map).all() and np.isfinite(result.conf).all()):
            error = FloatingPointError("the model returned NaN or infinite values")
            return self.error_row(image, error, "inference_error", seconds)
        item = image.item
        if self.options.save_maps:
            save_maps(self.options.map_path(item), result)
        if self.options.overlays:
            save_overlay(self.options.overlay_path(item), image.rgb, result)
        if self.options.thumbnails:
            save_thumbnail(output_path(self.options.out, "thumbnails", item.relpath), image.rgb, result)
        height, width = result.map.shape
        backend = self.predictor.backend
        return {
            "path": str(item.path),
            "relpath": item.relpath,
            "status": OK,
            "error": None,
            "width": width,
            "height": height,
            **self.options.decision.row_fields(result),
            "mode": self.predictor.mode(height, width),
            "backend": result.backend or backend.name,  # after a fallback, the backend that ran
            "precision": backend.precision,
            "seconds": round(seconds, 4),
        }

    def error_row(self, image: Decoded, error: BaseException, default_status: str, seconds: float) -> dict:
        """A TruForError keeps its own status; anything else gets ``default_status`` and its type name."""
        if isinstance(error, TruForError):
            status, message = error.status, str(error)
        else:
            status, message = default_status, f"{type(error).__name__}: {error}"
        size = None if image.rgb is None else image.rgb.shape[:2]
        mode = None if size is None else self.predictor.mode(*size)
        return error_row(image.item, status, message, self.predictor.backend, seconds, size, mode)
