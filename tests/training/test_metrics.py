"""Metrics against cases computed by hand: the official rule (``test_docker/metrics.py``), the
official selection metric ``avg_p-F1_smooth`` and IMDL-BenCo 0.1.45's tester protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    MetricAccumulator,
    auc,
    border_excluded,
    dilate,
    erode,
    image_metrics,
    p_f1_smooth,
    pixel_metrics,
)


def test_auc_by_hand():
    # Pairs (pos, neg): 0.35 > 0.1, 0.35 < 0.4, 0.8 > both: 3 of 4.
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 1])) == pytest.approx((0.5 + 1) / 2)  # a tie counts 1/2
    assert math.isnan(auc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_image_metrics_by_hand():
    scores = np.array([0.9, 0.2, 0.6, 0.4, 0.1])
    labels = np.array([1, 1, 0, 0, 0])
    result = image_metrics(scores, labels)
    # score > 0.5: TP 1, FN 1, FP 1, TN 2 -> TPR 1/2, TNR 2/3.
    assert result["bacc"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["acc"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx(2 * 0.5 * 0.5 / (0.5 + 0.5), abs=1e-6)
    # AUC: positives 0.9 beats all 3 negatives, 0.2 beats only 0.1: 4 of 6.
    assert result["auc"] == pytest.approx(4 / 6)
    assert result["dropped"] == 0


def test_non_finite_scores_are_dropped_and_counted():
    scores = np.array([0.9, 0.8, np.nan, np.inf, -np.inf, 0.3, 0.1])
    labels = np.array([1, 1, 0, 1, 0, 0, 0])
    result = image_metrics(scores, labels)
    # Left: 0.9, 0.8 forged and 0.3, 0.1 pristine, perfectly separated at 0.5.
    assert result["dropped"] == 3
    assert result["auc"] == pytest.approx(1.0)
    assert result["bacc"] == pytest.approx(1.0)
    assert result["acc"] == pytest.approx(1.0)


def test_erode_and_dilate_ignore_the_image_border():
    mask = np.zeros((10, 10), bool)
    mask[:4, :4] = True  # touches the top-left corner
    assert erode(mask, 3).sum() == 9  # rows/cols 0..2: the border does not erode
    assert dilate(mask, 3).sum() == 25


def square_mask() -> np.ndarray:
    """40x40, forged 20x20 square at [10:30, 10:30]. The official rule keeps its 6x6 core [17:23, 17:23]
    (erode 15) and the 700 pixels outside the 30x30 dilation (dilate 11); the 864-pixel band is excluded."""
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    return gt


def square_case():
    gt = square_mask()
    prob = np.zeros((40, 40))
    band = ~border_excluded(gt)
    prob[band] = 1.0  # anything in the band is ignored by the official rule
    prob[17:23, 17:20] = 0.9  # left half of the core: 18 pixels
    prob[17:23, 20:23] = 0.3  # right half: 18 pixels
    prob[0, :10] = 0.6  # 10 false positives outside the dilated mask
    return prob, gt, band


def test_border_band_size():
    _, gt, band = square_case()
    assert band.sum() == 900 - 36 and (~band).sum() == 36 + 700


def test_official_pixel_metrics_by_hand():
    prob, gt, _ = square_case()
    result = pixel_metrics(prob, gt, "official")
    # > 0.5: TP 18 (0.9), FP 10 (0.6), FN 18 (0.3): F1 = 36 / (36 + 28).
    assert result["f1_05"] == pytest.approx(36 / 64)
    assert result["iou_05"] == pytest.approx(18 / 46)
    mcc_05 = (18 * 690 - 10 * 18) / math.sqrt(28 * 36 * 700 * 708)
    assert result["mcc_05"] == pytest.approx(mcc_05)
    # Best threshold > 0: TP 36, FP 10, FN 0, TN 690.
    assert result["f1_best"] == pytest.approx(72 / 82)
    assert result["iou_best"] == pytest.approx(36 / 46)
    assert result["mcc_best"] == pytest.approx(36 * 690 / math.sqrt(46 * 36 * 700 * 690))
    # AUC: 18 positives at 0.9 beat all 700 negatives; 18 at 0.3 beat the 690 at 0.
    assert result["auc"] == pytest.approx((18 * 700 + 18 * 690) / (36 * 700))


def test_official_takes_the_better_of_map_and_inverted_map():
    prob, gt, _ = square_case()
    direct = pixel_metrics(prob, gt, "official")
    inverted = pixel_metrics(1.0 - prob, gt, "official")
    for name in direct:
        assert inverted[name] == pytest.approx(direct[name]), name


def test_constant_half_map_counts_its_inverse_at_half():
    """``s > 0.5`` marks nothing; its inverse ``s <= 0.5`` marks every kept pixel (a map rebuilt as
    1 - s would mark nothing again and score 0)."""
    result = pixel_metrics(np.full((40, 40), 0.5), square_mask(), "official")
    # Inverse: TP 36, FP 700, FN 0 of the kept pixels.
    assert result["f1_05"] == pytest.approx(72 / 772)
    assert result["iou_05"] == pytest.approx(36 / 736)
    assert result["mcc_05"] == 0.0  # no pixel is predicted authentic: 0/0, read as 0
    assert result["f1_best"] == pytest.approx(72 / 772)  # one distinct value: the same split
    assert result["auc"] == pytest.approx(0.5)


def test_inverted_map_of_tiny_probabilities():
    """Every value lies in [1e-30, 1e-17], where 1 - s is exactly 1.0 in float64: only swapped counts
    keep the thresholds apart. Forged pixels sit below authentic ones (an inverted, confident map)."""
    gt = square_mask()
    prob = np.full((40, 40), 1e-20)  # the band: ignored
    prob[~dilate(gt, 11)] = 1e-17  # 700 authentic pixels kept ...
    prob[0, :10] = 1e-25  # ... 10 of them lower
    prob[17:23, 17:20] = 1e-30  # 18 forged core pixels
    prob[17:23, 20:23] = 1e-18  # the other 18
    result = pixel_metrics(prob, gt, "official")
    # Best: the inverse at s <= 1e-18 marks the 36 forged and the 10 authentic at 1e-25:
    # TP 36, FP 10, FN 0, TN 690 (a 1 - s map would give only all-or-nothing, F1 72/772).
    assert result["f1_best"] == pytest.approx(72 / 82)
    assert result["iou_best"] == pytest.approx(36 / 46)
    assert result["mcc_best"] == pytest.approx(36 * 690 / math.sqrt(46 * 36 * 700 * 690))
    # At 0.5 the map marks nothing, its inverse everything kept.
    assert result["f1_05"] == pytest.approx(72 / 772)
    # AUC of the inverse: 690 at 1e-17 beat all 36 forged, 10 at 1e-25 beat the 18 at 1e-30.
    assert result["auc"] == pytest.approx((690 * 36 + 10 * 18) / (36 * 700))


def test_empty_mask():
    """All 1600 pixels kept, none forged. Predicted all authentic, the official F1 at 0.5 crashes
    (sklearn's 1x1 confusion matrix) and becomes NaN; here 0/0 counts as 0 as in the official F1."""
    gt = np.zeros((40, 40), bool)
    result = pixel_metrics(np.full((40, 40), 0.2), gt, "official")
    for name in ("f1_05", "mcc_05", "iou_05", "f1_best", "mcc_best", "iou_best"):
        assert result[name] == 0.0, name
    assert math.isnan(result["auc"])
    prob = np.full((40, 40), 0.2)
    prob[:2, :8] = 0.8  # 16 false positives: F1 0 (no TP) and inverse 0 (its TP is FN = 0)
    assert pixel_metrics(prob, gt, "official")["f1_05"] == 0.0
    # BenCo: F1 and IoU 0, pixel AUC 0 (its PixelAUC's value for a mask without forged pixels).
    assert pixel_metrics(prob, gt, "benco") == {"f1": 0.0, "iou": 0.0, "auc": 0.0}


def test_full_mask():
    """Every pixel forged: the eroded mask keeps all 1600 (the image border does not erode)."""
    gt = np.ones((40, 40), bool)
    confident = pixel_metrics(np.full((40, 40), 0.9), gt, "official")  # official: 1x1 matrix, NaN at 0.5
    assert confident["f1_05"] == 1.0 and confident["iou_05"] == 1.0 and confident["f1_best"] == 1.0
    assert math.isnan(confident["auc"])
    missed = pixel_metrics(np.full((40, 40), 0.1), gt, "official")
    assert missed["f1_05"] == 1.0  # the inverse s <= 0.5 marks every pixel
    benco = pixel_metrics(np.full((40, 40), 0.9), gt, "benco")
    assert benco["f1"] == pytest.approx(1.0) and benco["iou"] == pytest.approx(1.0)
    assert pixel_metrics(np.full((40, 40), 0.1), gt, "benco")["f1"] == 0.0  # no inverse in BenCo


def test_mask_erased_by_the_border_band():
    """A 5x5 mask: erosion by 15 removes it, dilation by 11 covers 15x15 = 225 pixels; the 1375 kept
    pixels are all authentic."""
    gt = np.zeros((40, 40), bool)
    gt[10:15, 10:15] = True
    assert border_excluded(gt).sum() == 1600 - 225 and not (border_excluded(gt) & gt).any()
    result = pixel_metrics(np.full((40, 40), 0.9), gt, "official")  # all kept pixels false positives
    assert result["f1_05"] == 0.0 and result["f1_best"] == 0.0
    assert math.isnan(result["auc"])
    assert pixel_metrics(np.full((40, 40), 0.2), gt, "official")["f1_05"] == 0.0  # official: crash, NaN


def test_band_covering_the_whole_image_scores_nothing():
    gt = np.zeros((10, 10), bool)
    gt[3:8, 3:8] = True  # dilated by 11 it covers the whole 10x10 image, eroded by 15 it is gone
    result = pixel_metrics(np.full((10, 10), 0.9), gt, "official")
    assert all(math.isnan(value) for value in result.values()), result


def test_perfect_map_scores_one():
    gt = square_mask()
    result = pixel_metrics(gt.astype(float), gt, "official")
    assert all(value == pytest.approx(1.0) for value in result.values()), result


def test_benco_mode_by_hand():
    prob, gt, _ = square_case()
    result = pixel_metrics(prob, gt, "benco")
    # No exclusion: > 0.5 is the 864-pixel band (364 forged, 500 not), the 18 core pixels at 0.9 and
    # the 10 false positives: TP 382, FP 510, FN 18 (core at 0.3).
    tp, fp, fn = 382, 510, 18
    precision, recall = tp / (tp + fp + 1e-8), tp / (tp + fn + 1e-8)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall + 1e-8))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    # No inversion either: the inverted map scores differently.
    assert pixel_metrics(1 - prob, gt, "benco")["f1"] != pytest.approx(result["f1"])


def test_p_f1_smooth_by_hand():
    gt = np.zeros((10, 10), bool)
    gt[:4, :4] = True  # 16 forged pixels
    prob = np.full((10, 10), 0.2)
    prob[:3, :4] = 0.9  # TP 12, FN 4
    prob[9, :4] = 0.7  # FP 4, TN 80
    # max((24 + 1) / (24 + 4 + 4 + 1), (8 + 1) / (24 + 4 + 80 + 1))
    assert p_f1_smooth(prob, gt) == pytest.approx(25 / 33)
    assert p_f1_smooth(prob, np.zeros((10, 10), bool)) == pytest.approx(1 / 17)  # pristine, 16 FP
    assert p_f1_smooth(np.full((10, 10), 0.5), np.zeros((10, 10), bool)) == 1.0  # 0.5 is not > 0.5
    # The official inverse term as written: a map marking exactly the authentic pixels has TP 0,
    # FN 16, FP 84, TN 0 and scores (32 + 1) / (0 + 16 + 0 + 1), above 1.
    assert p_f1_smooth((~gt).astype(float), gt) == pytest.approx(33 / 17)


def mixed_set():
    """10x10 images: a partly right map, a perfect one and a pristine image with 30 false positives."""
    gt = np.zeros((10, 10), bool)
    gt[:4, :4] = True
    partial = np.full((10, 10), 0.2)
    partial[:3, :4] = 0.9  # TP 12, FN 4 (at 0.2)
    partial[9, :4] = 0.7  # FP 4; 80 TN at 0.2
    pristine = np.full((10, 10), 0.1)
    pristine[:3] = 0.9  # 30 FP, 70 TN
    return [(partial, gt, 0.8), (gt.astype(float), gt, 0.7), (pristine, np.zeros((10, 10), bool), 0.3)]


def test_benco_mode_averages_pixel_metrics_over_all_images():
    accumulator = MetricAccumulator()
    for prob, gt, score in mixed_set():
        accumulator.add(prob, gt, score)
    summary = accumulator.summary()
    assert summary["images"] == 3 and summary["forged"] == 2
    # Partial map: precision = recall = 12/16, F1 0.75, IoU 12/20. AUC: the 12 at 0.9 beat all 84
    # authentic pixels, the 4 at 0.2 tie with the 80 at 0.2: (12 * 84 + 4 * 80 / 2) / (16 * 84) = 73/84.
    # The pristine image counts F1 = IoU = AUC = 0; a forged-only mean would give (0.75 + 1) / 2.
    assert summary["benco_px_f1"] == pytest.approx((0.75 + 1 + 0) / 3)
    assert summary["benco_px_iou"] == pytest.approx((0.6 + 1 + 0) / 3)
    assert summary["benco_px_auc"] == pytest.approx((73 / 84 + 1 + 0) / 3)
    # Official pixel metrics: the two forged images only.
    assert len(accumulator.pixel["official"]) == 2 and len(accumulator.pixel["benco"]) == 3
    # p-F1_smooth over all three: 25/33, 1 (33/33), and pristine max(1/31, 1/71).
    assert summary["p-F1_smooth"] == pytest.approx((25 / 33 + 1 + 1 / 31) / 3)
    assert summary["img_auc"] == pytest.approx(1.0) and summary["img_bacc"] == pytest.approx(1.0)
    assert summary["benco_img_acc"] == pytest.approx(1.0) and summary["img_scores_dropped"] == 0


def test_accumulator_averages_official_pixel_metrics_over_forged_images_only():
    prob, gt, _ = square_case()
    accumulator = MetricAccumulator()
    accumulator.add(prob, gt, 0.8)
    accumulator.add(gt.astype(float), gt, float("nan"))
    accumulator.add(np.full((40, 40), 0.9), np.zeros((40, 40), bool), 0.3)  # pristine
    summary = accumulator.summary()
    assert summary["images"] == 3 and summary["forged"] == 2
    assert summary["px_f1_best"] == pytest.approx((72 / 82 + 1.0) / 2)
    # The NaN score is dropped: one forged at 0.8 and one pristine at 0.3 remain.
    assert summary["img_scores_dropped"] == 1
    assert summary["img_auc"] == pytest.approx(1.0)
    assert summary["img_bacc"] == pytest.approx(1.0)


def test_accumulator_ranks_images_by_their_maps_too():
    """The map's maximum and forged fraction as image scores, beside the score head's AUC: here the
    head ranks backwards while the map ranks right (what a weak detection head looks like)."""
    pristine = np.zeros((10, 10), bool)
    forged = pristine.copy()
    forged[:3, :3] = True
    flat, spot, patch = np.full((10, 10), 0.3), np.full((10, 10), 0.3), np.full((10, 10), 0.2)
    spot[0, 0] = 0.7  # max 0.7, forged fraction 1/100
    patch[:4, :4] = 0.95  # max 0.95, forged fraction 16/100
    accumulator = MetricAccumulator(modes=("official",))
    accumulator.add(flat, pristine, 0.9)
    accumulator.add(spot, pristine, 0.8)
    accumulator.add(patch, forged, 0.1)
    accumulator.add(patch, None, 0.2)  # a forged image without a usable mask still counts at image level
    summary = accumulator.summary()
    assert summary["img_auc"] == pytest.approx(0.0)
    assert summary["img_auc_map_max"] == pytest.approx(1.0)
    assert summary["img_auc_forged_fraction"] == pytest.approx(1.0)
