"""The training losses: phase 1 contrastive, phase 2 ``dice_entropy``, phase 3 TCP confidence + detection.

Label maps are int64 (B, H, W) with 1 = forged, 0 = pristine and -1 = ignored (padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL = -1
CE_CLASS_WEIGHTS = (0.5, 2.5)
CE_FACTOR, DICE_FACTOR = 0.3, 0.7
DICE_SMOOTH, DICE_FLOOR = 0.0, 1e-5
CONF_ERODE, CONF_DILATE = 15, 11
CONF_FACTOR, DET_FACTOR = 1.0, 0.5
DET_MIN_PIXELS = 3  # an image is forged when more than this many crop pixels are
DET_WEIGHT_FAKE, DET_WEIGHT_REAL = 0.5 / 0.7, 0.5 / 0.3


def weighted_cross_entropy(logits: Tensor, label: Tensor, class_weights=CE_CLASS_WEIGHTS) -> Tensor:
    """PyTorch's weighted mean CE (sum w_y * nll / sum w_y over non-ignored pixels); 0 if none."""
    if not (label != IGNORE_LABEL).any():
        return logits.sum() * 0.0
    weight = torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, label, weight=weight, ignore_index=IGNORE_LABEL)


def soft_dice_loss(logits: Tensor, label: Tensor, smooth: float = DICE_SMOOTH, floor: float = DICE_FLOOR) -> Tensor:
    """1 - (2 sum p t + s) / max(sum p^2 + sum t^2 + s, floor), with p = P(class 1), over the
    non-ignored pixels of the whole batch (one ratio per batch)."""
    valid = (label != IGNORE_LABEL).to(logits.dtype)
    p = logits.softmax(dim=1)[:, 1] * valid
    t = (label == 1).to(logits.dtype)
    numerator = 2 * (p * t).sum() + smooth
    denominator = torch.clamp((p * p).sum() + (t * t).sum() + smooth, min=floor)
    return 1 - numerator / denominator


def dice_entropy_loss(logits: Tensor, label: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Phase 2: 0.3 x weighted CE + 0.7 x soft Dice."""
    ce = weighted_cross_entropy(logits, label)
    dice = soft_dice_loss(logits, label)
    return CE_FACTOR * ce + DICE_FACTOR * dice, {"ce": float(ce.detach()), "dice": float(dice.detach())}


def erode(mask: Tensor, size: int) -> Tensor:
    """Binary erosion of a (B, H, W) {0, 1} float map by a size x size square (a min filter);
    pixels outside the image do not erode."""
    return -F.max_pool2d(-mask[:, None], size, stride=1, padding=size // 2)[:, 0]


def dilate(mask: Tensor, size: int) -> Tensor:
    return F.max_pool2d(mask[:, None], size, stride=1, padding=size // 2)[:, 0]


def confident_regions(label: Tensor, erode_size: int = CONF_ERODE, dilate_size: int = CONF_DILATE) -> tuple[Tensor, Tensor]:
    """(confidently forged, confidently pristine) boolean maps: the mask eroded, and the complement
    of the mask dilated; the band between them and ignored pixels are in neither."""
    forged = (label == 1).float()
    valid = label != IGNORE_LABEL
    sure_forged = (erode(forged, erode_size) > 0.5) & valid
    sure_pristine = (dilate(forged, dilate_size) < 0.5) & valid
    return sure_forged, sure_pristine


def tcp_confidence_loss(conf_logits: Tensor, loc_logits: Tensor, label: Tensor) -> Tensor:
    """MSE between sigmoid(confidence) and the true-class probability of the (frozen) localization,
    over the confidently forged and confidently pristine pixels; 0 if there are none."""
    sure_forged, sure_pristine = confident_regions(label)
    probs = loc_logits.detach().softmax(dim=1)
    tcp = probs[:, 1] * sure_forged + probs[:, 0] * sure_pristine
    selected = sure_forged | sure_pristine
    if not selected.any():
        return conf_logits.sum() * 0.0
    return F.mse_loss(conf_logits[:, 0].sigmoid()[selected], tcp[selected])


def image_labels(label: Tensor, min_pixels: int = DET_MIN_PIXELS) -> Tensor:
    """1.0 for crops with more than ``min_pixels`` forged pixels, else 0.0; shape (B,)."""
    return ((label == 1).flatten(1).sum(dim=1) > min_pixels).float()


def detection_loss(det_logit: Tensor, label: Tensor) -> Tensor:
    """Weighted BCE on the image label: weight 0.5/0.7 for forged crops, 0.5/0.3 for pristine ones."""
    target = image_labels(label).to(det_logit.dtype)
    weight = target * DET_WEIGHT_FAKE + (1 - target) * DET_WEIGHT_REAL
    return F.binary_cross_entropy_with_logits(det_logit[:, 0], target, weight=weight)


def confidence_detection_loss(
    conf_logits: Tensor, loc_logits: Tensor, det_logit: Tensor, label: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """Phase 3: 1.0 x CONF + 0.5 x DET."""
    conf = tcp_confidence_loss(conf_logits, loc_logits, label)
    det = detection_loss(det_logit, label)
    return CONF_FACTOR * conf + DET_FACTOR * det, {"conf": float(conf.detach()), "det": float(det.detach())}


def contrastive_loss(residuals: Tensor, groups: Tensor, temperature: float = 1.0) -> Tensor:
    """Distance-based InfoNCE over a batch of Noiseprint residuals (N, C, H, W).

    For anchor i, p_ij = softmax_j(-d_ij / temperature) over all j != i, with d_ij the mean squared
    difference of the two residuals; the loss is -log sum_{j positive} p_ij (positives: same group),
    averaged over anchors.
    """
    flat = residuals.flatten(1)
    squared = (flat * flat).sum(dim=1)
    distances = (squared[:, None] + squared[None, :] - 2 * flat @ flat.T).clamp_min(0) / flat.shape[1]
    logits = -distances / temperature
    eye = torch.eye(len(groups), dtype=torch.bool, device=residuals.device)
    logits = logits.masked_fill(eye, float("-inf"))
    positive = (groups[:, None] == groups[None, :]) & ~eye
    log_all = torch.logsumexp(logits, dim=1)
    log_positive = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (log_all - log_positive).mean()


def nearest_neighbour_accuracy(residuals: Tensor, groups: Tensor) -> float:
    """Fraction of patches whose nearest other patch (by residual distance) is in their group."""
    flat = residuals.flatten(1)
    distances = torch.cdist(flat, flat)
    distances.fill_diagonal_(float("inf"))
    return float((groups[distances.argmin(dim=1)] == groups).float().mean())
