"""Inference-only rewrites that keep results within float rounding and save time."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm_(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv in a Sequential into that conv, in place.

    That covers the 15 DnCNN BNs (one full-resolution pass each), both decoder BNs and the FFM
    channel-embed BNs; the FFM output BN follows a residual sum and stays.
    """
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequential) - 1):
            conv, bn = sequential[i], sequential[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                sequential[i] = fuse_conv_bn_eval(conv, bn)
                sequential[i + 1] = nn.Identity()
    return model


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy with BatchNorms folded and weights in channels-last layout.

    Channels-last lets oneDNN run the full-resolution DnCNN convs without layout reorders, and
    makes the encoder's map-to-token reshapes free. The original model is left untouched.
    """
    optimized = fold_batchnorm_(copy.deepcopy(model).eval())
    for parameter in optimized.parameters():
        parameter.requires_grad_(False)
    return optimized.to(memory_format=torch.channels_last)
