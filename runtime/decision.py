"""The forged decision a scan row records, and the thresholds behind it.

An image is forged when its score > ``threshold``: the default 0.5, a ``--threshold`` the user typed,
or one ``python -m runtime.calibrate`` set for a false-alarm rate on the user's own pristine images
(``--threshold-file``). Every row names the threshold and its source, and ``scan.json`` keeps the
calibration behind it, so a decision can be defended later.

A pixel is forged where map > 0.5, as in the official metrics. ``forged_fraction`` is the share of
the image's pixels that are forged; ``forged_fraction_confident`` counts only those where the
confidence map is above ``confidence_threshold`` (same denominator, so it is never larger): TruFor's
confidence map exists to mark where the localization map produces false alarms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reference.errors import TruForError
from reference.result import TruForResult

DEFAULT_THRESHOLD = 0.5
MAP_THRESHOLD = 0.5
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
THRESHOLD_FORMAT = "trufor-threshold/1"
# The row fields a decision fills; an input without a result has None in each.
DECISION_FIELDS = ("score", "forged", "threshold", "threshold_source", "forged_fraction", "forged_fraction_confident")


@dataclass(frozen=True)
class DecisionRule:
    threshold: float = DEFAULT_THRESHOLD
    source: str = "default"  # "default", "--threshold" or "--threshold-file PATH"
    confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD
    calibration: dict[str, Any] | None = field(default=None, hash=False)  # a threshold file's summary

    def row_fields(self, result: TruForResult) -> dict[str, Any]:
        forged_pixels = result.map > MAP_THRESHOLD
        confident = result.conf > self.confidence_threshold
        return {
            "score": float(result.score),
            "forged": bool(result.score > self.threshold),
            "threshold": self.threshold,
            "threshold_source": self.source,
            "forged_fraction": np.count_nonzero(forged_pixels) / forged_pixels.size,
            "forged_fraction_confident": np.count_nonzero(forged_pixels & confident) / forged_pixels.size,
        }

    def settings(self) -> dict[str, Any]:
        """What ``scan.json`` records about the decisions."""
        return {
            "threshold": self.threshold,
            "threshold_source": self.source,
            "threshold_calibration": self.calibration,
            "map_threshold": MAP_THRESHOLD,
            "confidence_threshold": self.confidence_threshold,
        }

    def check_model(self, model: str) -> None:
        """Refuse a calibrated threshold on another model: its scores have another distribution."""
        calibrated = (self.calibration or {}).get("model")
        if calibrated is not None and calibrated != model:
            raise TruForError(
                f"{self.source} was calibrated on {calibrated}, but this scan runs {model}; a threshold "
                "holds only for the model it was calibrated on: rerun python -m runtime.calibrate with "
                "this scan's model flags"
            )


def read_threshold_file(path: Path, confidence_threshold: float = DEFAULT_CONFIDENCE_THRESHOLD) -> DecisionRule:
    """The rule a ``runtime.calibrate`` file sets; TruForError names the file and what is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TruForError(f"cannot read threshold file {path}: {error}") from error
    if not isinstance(data, dict) or data.get("format") != THRESHOLD_FORMAT:
        raise TruForError(
            f"{path} is not a threshold file (format {THRESHOLD_FORMAT!r}); write one with python -m runtime.calibrate"
        )
    threshold = data.get("threshold")
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise TruForError(f"{path}: threshold must be a number within [0, 1], got {threshold!r}")
    try:
        pristine = data["pristine"]
        calibration = {
            "target_fpr": data["target_fpr"],
            "confidence": data["confidence"],
            "pristine_images": pristine["scored"],
            "false_alarms": pristine["false_alarms"],
            "fpr": pristine["fpr"],
            "fpr_upper_bound": pristine["fpr_upper_bound"],
            "sample_too_small": pristine["sample_too_small"],
            "detection_rate": (data.get("forged") or {}).get("detection_rate"),
            "model": data["model"]["model"],
            "created": data["created"],
        }
    except (KeyError, TypeError) as error:
        raise TruForError(
            f"{path} is incomplete ({type(error).__name__}: {error}); write it again with python -m runtime.calibrate"
        ) from None
    source = f"--threshold-file {path.resolve()}"
    return DecisionRule(float(threshold), source, confidence_threshold, calibration)
