"""TruFor: Noiseprint++ and RGB fused in a dual MiT encoder, two MLP decoders and a detection head.

``TruFor`` takes the official input, RGB scaled by 1/256 (see ``to_tensor``), and
returns logits; ``probabilities`` turns them into the official ``map``, ``conf`` and ``score``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE, TruForConfig
from .encoder import DualMiTEncoder
from .heads import LOC_BN_EPS, DetectionHead, MLPDecoder, detection_features
from .noiseprint import Noiseprint


def to_tensor(rgb: np.ndarray) -> Tensor:
    """The model input for one HxWx3 uint8 RGB array: (1, 3, H, W) float32 scaled by 1/256.

    Kept apart from ``images_to_input``: the CPU convolutions pick their kernels from the strides,
    and this layout is the one the official outputs (and the golden tests) were computed with.
    """
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(PIXEL_SCALE)


def images_to_input(images: Tensor) -> Tensor:
    """The model input for a (B, H, W, 3) uint8 RGB batch, on its device: (B, 3, H, W) float32 scaled by 1/256.

    The exported graphs trace this, so they take decoded pixels and scale them inside. The cast comes
    first: TensorRT takes a UINT8 network input only when a Cast reads it directly.
    """
    return images.float().permute(0, 3, 1, 2) / PIXEL_SCALE


class TruForOutput(NamedTuple):
    """Raw outputs at full input resolution."""

    loc_logits: Tensor  # (B, num_classes, H, W)
    conf_logits: Tensor  # (B, 1, H, W)
    det_logit: Tensor  # (B, 1)
    noiseprint: Tensor  # (B, 1, H, W), the raw Noiseprint++ residual


class TruForProbabilities(NamedTuple):
    map: Tensor  # (B, H, W) P(forged) per pixel
    conf: Tensor  # (B, H, W) reliability of the map
    score: Tensor  # (B,) P(image forged)


def probabilities(output: TruForOutput) -> TruForProbabilities:
    """The official output activations: softmax class 1, sigmoid, sigmoid."""
    return TruForProbabilities(
        map=output.loc_logits.softmax(dim=1)[:, 1],
        conf=output.conf_logits.sigmoid()[:, 0],
        score=output.det_logit.sigmoid()[:, 0],
    )


class TruFor(nn.Module):
    """The TruFor detector and localizer; attribute names match the official state_dict."""

    def __init__(self, config: TruForConfig = TruForConfig()):
        super().__init__()
        self.config = config
        self.backbone = DualMiTEncoder(
            embed_dims=config.embed_dims,
            num_heads=config.num_heads,
            depths=config.depths,
            sr_ratios=config.sr_ratios,
            mlp_ratio=config.mlp_ratio,
            drop_path_rate=config.drop_path_rate,
            fused_attention=config.fused_attention,
        )
        self.decode_head = MLPDecoder(config.embed_dims, config.decoder_dim, config.num_classes, LOC_BN_EPS)
        self.decode_head_conf = MLPDecoder(config.embed_dims, config.decoder_dim, 1, config.conf_bn_eps)
        self.detection = DetectionHead()
        self.dncnn = Noiseprint(config.noiseprint_depth, config.noiseprint_width)
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward_features(self, x: Tensor, noiseprint: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Noiseprint++ residual and the four fused encoder maps for a (B, 3, H, W) input in [0, 1).

        ``noiseprint``: the residual of ``x`` when it was computed elsewhere (training runs the
        frozen extractor from a BatchNorm-folded copy, twice as fast on CPUs).
        """
        if noiseprint is None:
            noiseprint = self.dncnn(x)
        # The Noiseprint++ stream sees the raw residual on all three channels (no normalization);
        # expand keeps the exported graph free of Tile's control flow.
        extra = noiseprint.expand(-1, 3, -1, -1)
        rgb = (x - self.rgb_mean) / self.rgb_std
        return noiseprint, self.backbone(rgb, extra)

    def forward_head(self, features: list[Tensor], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Localization and confidence logits, resized from stride 4 to exactly ``size``."""
        loc = F.interpolate(self.decode_head(features), size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(self.decode_head_conf(features), size=size, mode="bilinear", align_corners=False)
        return loc, conf

    def forward_score(self, loc_logits: Tensor, conf_logits: Tensor) -> Tensor:
        """Detection logit pooled over the full-resolution maps (the whole image, not a tile)."""
        return self.detection(detection_features(loc_logits, conf_logits))

    def forward(self, x: Tensor) -> TruForOutput:
        noiseprint, features = self.forward_features(x)
        loc_logits, conf_logits = self.forward_head(features, x.shape[2:])
        return TruForOutput(loc_logits, conf_logits, self.forward_score(loc_logits, conf_logits), noiseprint)
