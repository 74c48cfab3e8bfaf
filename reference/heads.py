"""The two all-MLP decoders and the confidence-pooling detection head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Localization decoder BN eps set by the official head initialisation; the confidence decoder's
# depends on the official entry point and comes from the config (ARCHITECTURE.md 4.7).
LOC_BN_EPS = 1e-3


class TokenProjection(nn.Module):
    """Holds one stage's Linear(C_i, dim) under the official key name; MLPDecoder applies it."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)


class MLPDecoder(nn.Module):
    """SegFormer head: project each stage to ``dim``, upsample to stride 4, concat [c4, c3, c2, c1], fuse."""

    def __init__(self, in_dims: tuple[int, ...], dim: int, num_classes: int, bn_eps: float, dropout: float = 0.1):
        super().__init__()
        for i in reversed(range(len(in_dims))):  # official registration order: c4 first
            setattr(self, f"linear_c{i + 1}", TokenProjection(in_dims[i], dim))
        self.num_inputs = len(in_dims)
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(len(in_dims) * dim, dim, 1), nn.BatchNorm2d(dim, eps=bn_eps), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Same result as the official project-upsample-concat-fuse, at a small fraction of its cost.

        Projection, bilinear resize (weights summing to 1) and the 1x1 fuse conv are all linear, so
        each stage's projection is composed with its slice of the fuse conv and applied at the
        stage's own resolution; the resized maps are then summed instead of concatenated. This
        avoids the (4 * dim)-channel map at stride 4 and ~25x of the decoder's multiply-adds.
        """
        size = features[0].shape[2:]
        fuse = self.linear_fuse[0]
        fuse_slices = fuse.weight.flatten(1).split(fuse.out_channels, dim=1)  # ordered c4, c3, c2, c1
        fused = None
        for slice_index, i in enumerate(reversed(range(self.num_inputs))):
            proj = getattr(self, f"linear_c{i + 1}").proj
            weight = fuse_slices[slice_index] @ proj.weight
            bias = fuse_slices[slice_index] @ proj.bias
            x = F.conv2d(features[i], weight[:, :, None, None], bias)
            if i > 0:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            fused = x if fused is None else fused + x
        fused = fused + fuse.bias[None, :, None, None]
        return self.linear_pred(self.dropout(self.linear_fuse[2](self.linear_fuse[1](fused))))


def weighted_statistics_pooling(values: Tensor, log_weights: Tensor | None = None) -> Tensor:
    """[soft-min, soft-max, mean, mean-square] of each map, weighted by softmax(log_weights) over pixels.

    ``values``: (B, 1, H, W); ``log_weights``: (B, 1, H, W) or None for uniform weights.
    Returns (B, 4).
    """
    values = values.flatten(1)
    # Uniform weights as the official code makes them, log_softmax of zeros: unlike a Python
    # -log(N), this keeps N a graph value when the model is traced for export.
    log_w = F.log_softmax(torch.zeros_like(values) if log_weights is None else log_weights.flatten(1), dim=1)
    soft_min = -torch.logsumexp(log_w - values, dim=1)
    soft_max = torch.logsumexp(log_w + values, dim=1)
    w = log_w.exp()
    mean = (w * values).sum(dim=1)
    mean_square = (w * values * values).sum(dim=1)
    return torch.stack((soft_min, soft_max, mean, mean_square), dim=1)


def detection_features(loc_logits: Tensor, conf_logits: Tensor) -> Tensor:
    """The 8 pooled statistics the detection MLP reads, from full-resolution logits.

    First the confidence logit under uniform weights, then the localization logit difference
    weighted by sigmoid(confidence).
    """
    uniform = weighted_statistics_pooling(conf_logits)
    difference = loc_logits[:, 1:2] - loc_logits[:, 0:1]
    weighted = weighted_statistics_pooling(difference, F.logsigmoid(conf_logits))
    return torch.cat((uniform, weighted), dim=1)


class DetectionHead(nn.Sequential):
    """Integrity-score MLP over the pooled statistics: Linear(8, 128), ReLU, Dropout, Linear(128, 1)."""

    def __init__(self, in_features: int = 8, hidden: int = 128, dropout: float = 0.5):
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )
