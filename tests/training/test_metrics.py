"""Metrics against cases computed by hand."""

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


def test_erode_and_dilate_ignore_the_image_border():
    mask = np.zeros((10, 10), bool)
    mask[:4, :4] = True  # touches the top-left corner
    assert erode(mask, 3).sum() == 9  # rows/cols 0..2: the border does not erode
    assert dilate(mask, 3).sum() == 25


def square_case():
    """40x40, forged 20x20 square at [10:30, 10:30]. The official rule keeps its 6x6 core (erode 15)
    and the 700 pixels outside the 30x30 dilation (dilate 11); the 864-pixel band is excluded."""
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
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
    # Best threshold 0.3: TP 36, FP 10, FN 0, TN 690.
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


def test_perfect_map_scores_one():
    _, gt, _ = square_case()
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


def test_accumulator_averages_pixel_metrics_over_forged_images_only():
    prob, gt, _ = square_case()
    accumulator = MetricAccumulator()
    accumulator.add(prob, gt, 0.8)
    accumulator.add(gt.astype(float), gt, 0.7)
    accumulator.add(np.full((40, 40), 0.9), np.zeros((40, 40), bool), 0.3)  # pristine: image metrics only
    summary = accumulator.summary()
    assert summary["images"] == 3 and summary["forged"] == 2
    assert summary["px_f1_best"] == pytest.approx((72 / 82 + 1.0) / 2)
    assert summary["img_auc"] == pytest.approx(1.0)
    assert summary["img_bacc"] == pytest.approx(1.0)
    assert summary["benco_img_acc"] == pytest.approx(1.0)
    assert summary["p-F1_smooth"] == pytest.approx(
        (2 * (prob * gt).sum() / (prob.sum() + gt.sum()) + 1.0) / 2
    )
