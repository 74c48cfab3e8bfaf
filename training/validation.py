"""Validation during training: the model on each validation image, whole, with the metrics of ``metrics.py``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from reference.model import to_tensor
from reference.model import TruFor, probabilities

from .metrics import COUNTS, MetricAccumulator, mean_of_defined


def validate_images(
    model: TruFor, samples: Iterable[tuple[str, np.ndarray, np.ndarray]], device: torch.device, *, scores: bool
) -> dict[str, float]:
    """Metrics per validation dataset (``<name>/<metric>``) and their mean over datasets (``avg_<metric>``).

    ``samples`` yields (dataset name, uint8 HxWx3 image, HxW mask); the model must be in eval mode.
    ``scores``: also collect the detection score (image-level metrics).
    """
    accumulators: dict[str, MetricAccumulator] = {}
    for name, image, mask in samples:
        output = model(to_tensor(image).to(device))
        probs = probabilities(output)
        accumulator = accumulators.setdefault(name, MetricAccumulator(modes=("official",)))
        accumulator.add(probs.map[0].float().cpu().numpy(), mask, float(probs.score[0]) if scores else None)
    result: dict[str, float] = {}
    per_dataset = {name: acc.summary() for name, acc in accumulators.items()}
    for name, summary in per_dataset.items():
        result.update({f"{name}/{key}": float(value) for key, value in summary.items()})
    keys = sorted({key for summary in per_dataset.values() for key in summary if key not in COUNTS})
    for key in keys:
        result[f"avg_{key}"] = mean_of_defined([summary[key] for summary in per_dataset.values() if key in summary])
    return result
