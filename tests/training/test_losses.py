"""The training losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    DET_WEIGHT_FAKE,
    DET_WEIGHT_REAL,
    confident_regions,
    contrastive_loss,
    detection_loss,
    dice_entropy_loss,
    image_labels,
    nearest_neighbour_accuracy,
    soft_dice_loss,
    tcp_confidence_loss,
    weighted_cross_entropy,
)


def two_pixel_case():
    """Pixel 0: logits (0, 0), label 0 -> p1 = 1/2; pixel 1: logits (0, log 3), label 1 -> p1 = 3/4;
    pixel 2: ignored, with logits that would dominate any loss."""
    logits = torch.tensor([[0.0, 0.0, 50.0], [0.0, math.log(3.0), -50.0]]).reshape(1, 2, 1, 3)
    label = torch.tensor([[[0, 1, -1]]])
    return logits, label


def test_weighted_cross_entropy_by_hand():
    logits, label = two_pixel_case()
    expected = (0.5 * math.log(2) + 2.5 * math.log(4 / 3)) / (0.5 + 2.5)
    assert float(weighted_cross_entropy(logits, label)) == pytest.approx(expected, rel=1e-6)


def test_soft_dice_by_hand():
    logits, label = two_pixel_case()
    # 1 - 2 * sum(p t) / (sum p^2 + sum t^2) with p = (1/2, 3/4), t = (0, 1); pixel 2 ignored.
    expected = 1 - (2 * 0.75) / (0.25 + 0.5625 + 1.0)
    assert float(soft_dice_loss(logits, label)) == pytest.approx(expected, rel=1e-6)


def test_dice_entropy_is_the_official_mix():
    logits, label = two_pixel_case()
    total, parts = dice_entropy_loss(logits, label)
    assert float(total) == pytest.approx(0.3 * parts["ce"] + 0.7 * parts["dice"], rel=1e-6)


def test_dice_denominator_floor_on_a_pristine_crop():
    # Every pixel surely pristine: numerator 0, denominator ~ 0 -> floored at 1e-5, loss exactly 1.
    logits = torch.stack([torch.full((1, 4, 4), 60.0), torch.full((1, 4, 4), -60.0)], dim=1)
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    assert float(soft_dice_loss(logits, label)) == pytest.approx(1.0)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.zeros(1, 2, 3, 3, requires_grad=True)
    label = torch.full((1, 3, 3), -1)
    total, _ = dice_entropy_loss(logits, label)
    assert float(total.detach()) == pytest.approx(0.7)  # CE 0 (nothing to average), Dice 1 - 0 / floor
    total.backward()
    assert torch.isfinite(logits.grad).all()


def square_label(size=40, top=10, side=20):
    label = torch.zeros(1, size, size, dtype=torch.long)
    label[:, top : top + side, top : top + side] = 1
    return label


def test_confident_regions_erode_15_dilate_11():
    sure_forged, sure_pristine = confident_regions(square_label())
    # Erosion by 15x15 removes 7 pixels per side: a 6x6 core. Dilation by 11x11 adds 5 per side:
    # 30x30, so 1600 - 900 = 700 pixels are surely pristine.
    assert int(sure_forged.sum()) == 36 and bool(sure_forged[0, 17:23, 17:23].all())
    assert int(sure_pristine.sum()) == 700 and not bool(sure_pristine[0, 5:35, 5:35].any())


def test_confident_regions_skip_ignored_pixels():
    label = square_label()
    label[:, :, :2] = -1
    _, sure_pristine = confident_regions(label)
    assert int(sure_pristine.sum()) == 700 - 2 * 40


def test_tcp_loss_by_hand():
    label = square_label()
    # Localization P(forged) = 0.8 everywhere; confidence sigmoid = 0.6 everywhere.
    loc = torch.stack([torch.zeros(1, 40, 40), torch.full((1, 40, 40), math.log(4.0))], dim=1)
    conf = torch.full((1, 1, 40, 40), math.log(0.6 / 0.4))
    # Forged core: TCP = p1 = 0.8 -> (0.6 - 0.8)^2; pristine region: TCP = p0 = 0.2 -> (0.6 - 0.2)^2.
    expected = (36 * 0.04 + 700 * 0.16) / 736
    assert float(tcp_confidence_loss(conf, loc, label)) == pytest.approx(expected, rel=1e-5)


def test_tcp_target_is_not_trained_through_the_localization():
    label = square_label()
    loc = torch.randn(1, 2, 40, 40, requires_grad=True)
    conf = torch.zeros(1, 1, 40, 40, requires_grad=True)
    tcp_confidence_loss(conf, loc, label).backward()
    assert loc.grad is None and conf.grad is not None


def test_image_label_needs_more_than_three_forged_pixels():
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[0].view(-1)[:3] = 1
    label[1].view(-1)[:4] = 1
    assert image_labels(label).tolist() == [0.0, 1.0]


def test_detection_loss_weights_by_hand():
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[1, :4, :4] = 1  # sample 1 forged, sample 0 pristine
    logit = torch.zeros(2, 1)
    expected = (DET_WEIGHT_REAL * math.log(2) + DET_WEIGHT_FAKE * math.log(2)) / 2
    assert float(detection_loss(logit, label)) == pytest.approx(expected, rel=1e-6)
    assert DET_WEIGHT_FAKE == pytest.approx(0.5 / 0.7) and DET_WEIGHT_REAL == pytest.approx(0.5 / 0.3)


def test_contrastive_loss_by_hand():
    # Residuals 0, 0, 1, 1 (one pixel each) in groups 0, 0, 1, 1: each anchor has its positive at
    # distance 0 and two negatives at distance 1, so p_pos = 1 / (1 + 2 e^-1) for every anchor.
    residuals = torch.tensor([0.0, 0.0, 1.0, 1.0]).reshape(4, 1, 1, 1)
    groups = torch.tensor([0, 0, 1, 1])
    assert float(contrastive_loss(residuals, groups)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert float(contrastive_loss(residuals, groups, temperature=0.5)) == pytest.approx(math.log(1 + 2 / math.e**2), rel=1e-6)


def test_contrastive_loss_counts_every_positive():
    # Groups of three and two. Anchors of the first: two positives at distance 0, two negatives at
    # distance 1; anchors of the second: one positive at 0, three negatives at 1.
    residuals = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]).reshape(5, 1, 1, 1)
    groups = torch.tensor([0, 0, 0, 1, 1])
    big = -math.log(2 / (2 + 2 / math.e))
    small = -math.log(1 / (1 + 3 / math.e))
    assert float(contrastive_loss(residuals, groups)) == pytest.approx((3 * big + 2 * small) / 5, rel=1e-6)


def test_nearest_neighbour_accuracy():
    residuals = torch.tensor([0.0, 0.13, 1.0, 1.2, 0.05]).reshape(5, 1, 1, 1)
    groups = torch.tensor([0, 0, 1, 1, 1])
    # 0.0 and 0.13 are both nearest to 0.05 (group 1): wrong; 1.0 <-> 1.2: right; 0.05 -> 0.0: wrong.
    assert nearest_neighbour_accuracy(residuals, groups) == pytest.approx(2 / 5)
