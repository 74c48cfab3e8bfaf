"""Forgery localization and detection metrics: the official TruFor rule and an IMDL-BenCo-style one.

Pixel level, per forged image, then averaged over images:

- ``official``: the ground-truth border band is excluded (pixels in the mask dilated 11x11 but not
  in the mask eroded 15x15), and every metric is the better of the map and the inverted map
  (1 - map). F1, MCC and IoU at threshold 0.5 (``map > 0.5``) and at the best threshold for that
  image (every distinct map value is tried), and the pixel AUC.
- ``benco``: IMDL-BenCo's definitions: threshold 0.5, no border exclusion, no inversion;
  precision, recall and F1 with their 1e-8 terms, IoU = TP / (TP + FP + FN + 1e-8).

Image level, over all images (forged = mask has a forged pixel): AUC of the score, balanced
accuracy of ``score > 0.5`` (official), plus accuracy and F1 at 0.5 (``benco``).

Pixel metrics are computed on forged images only (a pristine image has no positive pixel, so F1,
IoU and AUC are undefined there); 0/0 counts as 0 in the official F1, MCC and IoU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BORDER_ERODE, BORDER_DILATE = 15, 11
MODES = ("official", "benco")


def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """Number of set pixels in the size x size window around each pixel (window clipped to the image)."""
    radius = size // 2
    padded = np.pad(mask.astype(np.int64), radius)
    integral = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    height, width = mask.shape
    return (
        integral[size : size + height, size : size + width]
        - integral[:height, size : size + width]
        - integral[size : size + height, :width]
        + integral[:height, :width]
    )


def erode(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary erosion by a size x size square; pixels outside the image do not erode."""
    inside = _box_count(np.ones_like(mask, dtype=bool), size)
    return _box_count(mask, size) == inside


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return _box_count(mask, size) > 0


def border_excluded(gt: np.ndarray, erode_size: int = BORDER_ERODE, dilate_size: int = BORDER_DILATE) -> np.ndarray:
    """The pixels the official metrics keep: eroded mask or outside the dilated mask."""
    gt = gt.astype(bool)
    return erode(gt, erode_size) | ~dilate(gt, dilate_size)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count one half); NaN when only one class is present."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks (1-based) over runs of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def _scores(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    mcc_den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mcc": _ratio(tp * tn - fp * fn, mcc_den),
        "iou": _ratio(tp, tp + fp + fn),
    }


def _threshold_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN for "positive if score >= s" at every distinct score s, plus "nothing positive"."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_run = np.concatenate((np.flatnonzero(np.diff(sorted_scores)), [len(scores) - 1]))
    tp = np.concatenate(([0], np.cumsum(sorted_labels)[last_of_run]))
    fp = np.concatenate(([0], (last_of_run + 1) - tp[1:]))
    positives, total = int(labels.sum()), len(labels)
    return tp, fp, positives - tp, total - positives - fp


def _official_one_direction(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    at_half = _scores(*(np.array([v]) for v in _counts(scores > 0.5, labels)))
    best = _scores(*_threshold_curve(scores, labels))
    result = {f"{name}_05": float(values[0]) for name, values in at_half.items()}
    result.update({f"{name}_best": float(values.max()) for name, values in best.items()})
    return result


def _counts(predicted: np.ndarray, labels: np.ndarray) -> tuple[int, int, int, int]:
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return tp, fp, fn, len(labels) - tp - fp - fn


def pixel_metrics(prob_map: np.ndarray, gt: np.ndarray, mode: str = "official") -> dict[str, float]:
    """Metrics of one forged image's map (H x W, P(forged)) against its binary mask."""
    if mode not in MODES:
        raise ValueError(f"unknown metrics mode {mode!r}; choose one of {MODES}")
    if prob_map.shape != gt.shape:
        raise ValueError(f"map {prob_map.shape} and mask {gt.shape} differ in size")
    gt = gt.astype(bool)
    scores = np.asarray(prob_map, dtype=np.float64)
    if mode == "benco":
        tp, fp, fn, _ = _counts(scores.ravel() > 0.5, gt.ravel())
        precision = tp / (tp + fp + 1e-8)
        recall = tp / (tp + fn + 1e-8)
        return {
            "f1": 2 * precision * recall / (precision + recall + 1e-8),
            "iou": tp / (tp + fp + fn + 1e-8),
            "auc": auc(scores, gt),
        }
    keep = border_excluded(gt)
    scores, labels = scores[keep], gt[keep]
    direct = _official_one_direction(scores, labels)
    inverted = _official_one_direction(1.0 - scores, labels)
    result = {name: max(direct[name], inverted[name]) for name in direct}
    area_under = auc(scores, labels)
    result["auc"] = max(area_under, 1.0 - area_under) if not math.isnan(area_under) else math.nan
    return result


def soft_f1(prob_map: np.ndarray, gt: np.ndarray) -> float:
    """Threshold-free F1: 2 sum(p g) / (sum p + sum g) (the phase-2 model selection metric)."""
    gt = gt.astype(np.float64)
    denominator = prob_map.sum() + gt.sum()
    return float(2 * (prob_map * gt).sum() / denominator) if denominator > 0 else 0.0


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy, accuracy and F1 of ``score > 0.5`` against labels (1 = forged)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    predicted = scores > 0.5
    tp, fp, fn, tn = _counts(predicted, labels)
    tpr = tp / (tp + fn) if tp + fn else math.nan
    tnr = tn / (tn + fp) if tn + fp else math.nan
    precision = tp / (tp + fp + 1e-9)
    recall = tp / (tp + fn + 1e-9)
    return {
        "auc": auc(scores, labels),
        "bacc": float(np.nanmean([tpr, tnr])) if not (math.isnan(tpr) and math.isnan(tnr)) else math.nan,
        "acc": (tp + tn) / len(labels) if len(labels) else math.nan,
        "f1": 2 * precision * recall / (precision + recall + 1e-9),
    }


@dataclass
class MetricAccumulator:
    """Collects per-image results; ``summary`` averages pixel metrics over forged images."""

    modes: tuple[str, ...] = MODES
    pixel: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    soft: list[float] = field(default_factory=list)
    count: int = 0
    forged: int = 0
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add(self, prob_map: np.ndarray | None, gt: np.ndarray, score: float | None = None) -> None:
        self.count += 1
        forged = bool(gt.any())
        self.forged += forged
        if forged and prob_map is not None:
            for mode in self.modes:
                self.pixel.setdefault(mode, []).append(pixel_metrics(prob_map, gt, mode))
            self.soft.append(soft_f1(prob_map, gt))
        if score is not None:
            self.scores.append(float(score))
            self.labels.append(int(forged))

    def summary(self) -> dict[str, float]:
        result: dict[str, float] = {"images": self.count, "forged": self.forged}
        for mode, rows in self.pixel.items():
            prefix = "px" if mode == "official" else "benco_px"
            for name in rows[0]:
                result[f"{prefix}_{name}"] = float(np.nanmean([row[name] for row in rows]))
        if self.soft:
            result["p-F1_smooth"] = float(np.mean(self.soft))
        if self.scores:
            image = image_metrics(np.array(self.scores), np.array(self.labels))
            result.update({"img_auc": image["auc"], "img_bacc": image["bacc"]})
            if "benco" in self.modes:
                result.update({"benco_img_acc": image["acc"], "benco_img_f1": image["f1"]})
        return result
