"""Forgery localization and detection metrics in two protocols, each equal to its reference code.

``official``: the authors' ``test_docker/metrics.py`` (TruFor, CVPR 2023). Pixel metrics of each
forged image, averaged over the forged images (NaN left out):

- the border band of the mask is excluded (pixels in the mask dilated 11x11 but not in the mask
  eroded 15x15);
- each metric is the better of the map and its inverse. The inverse of "forged if s > t" is
  "forged if s <= t", so its confusion counts are the map's swapped (TP<->FN, FP<->TN); the map
  is never rebuilt as 1 - s (at t = 0.5 a pixel at exactly 0.5 would change sides, and in
  float64 every probability below ~1e-16 would become 1.0);
- F1, MCC and IoU at ``s > 0.5`` and at the best threshold of that image (``s > v`` for every
  distinct float32 value v of the kept pixels, as the official sweep), and the pixel AUC (the
  better of AUC and 1 - AUC). The official file reports F1 only; MCC, IoU and AUC follow its rule.

Image level: AUC of the score and balanced accuracy of ``score > 0.5``. Beside them, not part of
the official protocol, the AUC of two rankings read off the map, for models whose score head ranks
worse than their map: its maximum (``img_auc_map_max``) and the share of its pixels above 0.5
(``img_auc_forged_fraction``, the forged fraction ``runtime.scan`` records and its report sorts by).

``benco``: IMDL-BenCo 0.1.45's tester with its evaluators in mode "origin". ``s > 0.5`` on the
whole map, no border band, no inverse; precision, recall and F1 with their 1e-8 terms, IoU =
TP / (TP + FP + FN + 1e-8). Pixel metrics are averaged over ALL test images: a pristine image
scores F1 = IoU = 0 and pixel AUC 0 (BenCo's value for a mask without forged pixels). Image
level: AUC, and accuracy and F1 (1e-9 terms) of ``score > 0.5``.

``p-F1_smooth`` is the official training code's phase-2 selection metric (see ``p_f1_smooth``),
averaged over every image with a map.

Where the reference code crashes, gives NaN or depends on sort order, this module keeps the
defined value:

- the official ``computeMetrics_th`` crashes (sklearn returns a 1x1 confusion matrix) when the
  kept pixels and the predictions are all one class, and the image's F1 at 0.5 becomes NaN and
  leaves the mean. Here 0/0 counts as 0 (the official F1's own rule): an empty or border-erased
  mask predicted all-authentic scores 0, a full mask predicted all-forged scores 1;
- non-finite image scores are dropped in both modes, as the official ``computeDetectionMetrics``
  drops NaN and -inf (it asserts on +inf; BenCo's sklearn call raises on NaN), and counted in
  ``img_scores_dropped``;
- a pixel AUC with one class only (full mask in either mode, any mask the band erases) is NaN and
  left out of the mean (BenCo's trapezoid gives NaN for a full mask, which turns its mean into
  NaN); tied scores count one half, where BenCo's sort leaves them in arbitrary order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BORDER_ERODE, BORDER_DILATE = 15, 11
MODES = ("official", "benco")
COUNTS = ("images", "forged", "img_scores_dropped")  # summary entries that are counts, not means


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


def _better_of_map_and_inverse(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Each metric of ``s > t`` or of its inverse ``s <= t`` (the counts swapped), whichever is higher."""
    direct, inverse = _scores(tp, fp, fn, tn), _scores(fn, tn, tp, fp)
    return {name: np.maximum(direct[name], inverse[name]) for name in direct}


def _threshold_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN for "positive if score > v" at every distinct score v (the largest: nothing positive)."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    run_starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_scores)) + 1))
    tp = np.concatenate(([0], np.cumsum(sorted_labels)))[run_starts]
    fp = run_starts - tp
    positives, total = int(labels.sum()), len(labels)
    return tp, fp, positives - tp, total - positives - fp


def _counts(predicted: np.ndarray, labels: np.ndarray) -> tuple[int, int, int, int]:
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return tp, fp, fn, len(labels) - tp - fp - fn


def _official_pixel_metrics(scores: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    keep = border_excluded(gt)
    scores, labels = scores[keep], gt[keep]
    at_half = _better_of_map_and_inverse(*_counts(scores > 0.5, labels))
    best = _better_of_map_and_inverse(*_threshold_curve(scores.astype(np.float32), labels))
    result = {f"{name}_05": float(value) for name, value in at_half.items()}
    result.update({f"{name}_best": float(values.max()) for name, values in best.items()})
    area_under = auc(scores, labels)
    result["auc"] = max(area_under, 1.0 - area_under) if not math.isnan(area_under) else math.nan
    return result if len(labels) else dict.fromkeys(result, math.nan)  # the band covered the whole image


def _benco_pixel_metrics(scores: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    tp, fp, fn, _ = _counts(scores.ravel() > 0.5, gt.ravel())
    precision = tp / (tp + fp + 1e-8)
    recall = tp / (tp + fn + 1e-8)
    return {
        "f1": 2 * precision * recall / (precision + recall + 1e-8),
        "iou": tp / (tp + fp + fn + 1e-8),
        "auc": auc(scores, gt) if gt.any() else 0.0,  # BenCo's PixelAUC returns 0 for a pristine mask
    }


def pixel_metrics(prob_map: np.ndarray, gt: np.ndarray, mode: str = "official") -> dict[str, float]:
    """Metrics of one image's map (H x W, P(forged)) against its binary mask, by ``mode``'s rules."""
    if mode not in MODES:
        raise ValueError(f"unknown metrics mode {mode!r}; choose one of {MODES}")
    if prob_map.shape != gt.shape:
        raise ValueError(f"map {prob_map.shape} and mask {gt.shape} differ in size")
    scores = np.asarray(prob_map, dtype=np.float64)
    if mode == "benco":
        return _benco_pixel_metrics(scores, gt.astype(bool))
    return _official_pixel_metrics(scores, gt.astype(bool))


def p_f1_smooth(prob_map: np.ndarray, gt: np.ndarray) -> float:
    """One image's term of the official phase-2 selection metric ``avg_p-F1_smooth``
    (``TruFor_train_test/lib/core/function.py``): on every pixel, hard predictions ``map > 0.5``
    (the argmax of the two logits), the higher of (2 TP + 1) / (2 TP + FN + FP + 1) and
    (2 FN + 1) / (2 TP + FN + TN + 1). The second term is kept as the official code writes it, so
    that phase 2 picks the checkpoint the authors' selection would; swapped counts would put
    2 FN + TP + TN below it. As written it exceeds 1 when FN > TP + TN (nothing predicted on an
    image more than half forged scores (2 FN + 1) / (FN + TN + 1), above a perfect map's 1)."""
    tp, fp, fn, tn = _counts(np.asarray(prob_map).ravel() > 0.5, gt.astype(bool).ravel())
    return max((2 * tp + 1) / (2 * tp + fn + fp + 1), (2 * fn + 1) / (2 * tp + fn + tn + 1))


def image_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy, accuracy and F1 of ``score > 0.5`` against labels (1 = forged) over the
    finite scores; ``dropped`` counts the non-finite ones left out."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    finite = np.isfinite(scores)
    scores, labels = scores[finite], np.asarray(labels).astype(bool).ravel()[finite]
    tp, fp, fn, tn = _counts(scores > 0.5, labels)
    tpr = tp / (tp + fn) if tp + fn else math.nan
    tnr = tn / (tn + fp) if tn + fp else math.nan
    precision = tp / (tp + fp + 1e-9)
    recall = tp / (tp + fn + 1e-9)
    return {
        "auc": auc(scores, labels),
        "bacc": float(np.nanmean([tpr, tnr])) if not (math.isnan(tpr) and math.isnan(tnr)) else math.nan,
        "acc": (tp + tn) / len(labels) if len(labels) else math.nan,
        "f1": 2 * precision * recall / (precision + recall + 1e-9),
        "dropped": int((~finite).sum()),
    }


def mean_of_defined(values: list[float]) -> float:
    """Mean of the non-NaN values (NaN when there are none), without numpy's empty-slice warning."""
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


@dataclass
class MetricAccumulator:
    """Collects per-image results; ``summary`` averages each protocol's pixel metrics over its images
    (official: forged ones, benco: all) and ``p-F1_smooth`` over every image with a map."""

    modes: tuple[str, ...] = MODES
    pixel: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    smooth_f1: list[float] = field(default_factory=list)
    count: int = 0
    forged: int = 0
    scores: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    map_scores: list[tuple[float, float]] = field(default_factory=list)  # (max, forged fraction) per map
    map_labels: list[int] = field(default_factory=list)

    def add(self, prob_map: np.ndarray | None, gt: np.ndarray | None, score: float | None = None) -> None:
        """``gt`` None: a forged image without a usable mask, counted in the image-level metrics only."""
        self.count += 1
        forged = gt is None or bool(gt.any())
        self.forged += forged
        if prob_map is not None:
            self.map_scores.append((float(prob_map.max()), float(np.count_nonzero(prob_map > 0.5) / prob_map.size)))
            self.map_labels.append(int(forged))
        if prob_map is not None and gt is not None:
            for mode in self.modes:
                if forged or mode == "benco":
                    self.pixel.setdefault(mode, []).append(pixel_metrics(prob_map, gt, mode))
            self.smooth_f1.append(p_f1_smooth(prob_map, gt))
        if score is not None:
            self.scores.append(float(score))
            self.labels.append(int(forged))

    def summary(self) -> dict[str, float]:
        result: dict[str, float] = {"images": self.count, "forged": self.forged}
        for mode, rows in self.pixel.items():
            prefix = "px" if mode == "official" else "benco_px"
            for name in rows[0]:
                result[f"{prefix}_{name}"] = mean_of_defined([row[name] for row in rows])
        if self.smooth_f1:
            result["p-F1_smooth"] = float(np.mean(self.smooth_f1))
        if self.scores:
            image = image_metrics(np.array(self.scores), np.array(self.labels))
            result.update({"img_auc": image["auc"], "img_bacc": image["bacc"], "img_scores_dropped": image["dropped"]})
            if "benco" in self.modes:
                result.update({"benco_img_acc": image["acc"], "benco_img_f1": image["f1"]})
        if self.map_scores:
            by_map = np.array(self.map_scores)
            result["img_auc_map_max"] = auc(by_map[:, 0], np.array(self.map_labels))
            result["img_auc_forged_fraction"] = auc(by_map[:, 1], np.array(self.map_labels))
        return result
