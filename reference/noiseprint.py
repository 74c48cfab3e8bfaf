"""Noiseprint++: the DnCNN-style camera-noise extractor (17 convs, no residual connection)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

NOISEPRINT_BN_EPS = 1e-5


class Noiseprint(nn.Sequential):
    """Conv+ReLU, (depth - 2) x Conv+BN+ReLU, Conv; all 3x3, stride 1, same padding.

    A plain Sequential so its indices (0, 2, 3, ..., 47 for depth 17) match the official
    ``dncnn.*`` keys and the released ``noiseprint++.th`` file.
    """

    def __init__(self, depth: int = 17, width: int = 64, in_chans: int = 3, out_chans: int = 1):
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width, eps=NOISEPRINT_BN_EPS),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(width, out_chans, 3, padding=1))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Always in float32, under autocast too: the residual is small next to the activations, and
        the released weights amplify rounding 2000 to 3000 times (float16 storage gives a residual up to 68% off;
        ``python -m benchmarks.noiseprint_precision``)."""
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(torch.promote_types(x.dtype, torch.float32)))  # float64 stays
