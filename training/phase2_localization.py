"""Phase 2, localization: the dual encoder and the anomaly decoder, Noiseprint++ frozen.

Official recipe (ARCHITECTURE.md 6): Noiseprint++ runs in eval mode without gradients (its
BatchNorm statistics stay fixed); the loss is ``dice_entropy`` (0.3 x weighted CE + 0.7 x soft
Dice) on the full-resolution localization logits; the encoder may start from a MiT checkpoint
copied into both streams; the heads get Kaiming-normal initialisation. Model selection on the
official ``avg_p-F1_smooth`` (``training.metrics.p_f1_smooth``) of the validation images.
"""

from __future__ import annotations

import torch.nn.functional as F

from .loop import SegmentationPhase
from .losses import dice_entropy_loss
from .validation import validate_images
from .weights import (
    init_decoder_,
    init_encoder_,
    load_matching,
    load_mit,
    load_noiseprint_weights,
)


class LocalizationPhase(SegmentationPhase):
    number = 2
    trainable = ("backbone", "decode_head")
    best_key = "avg_p-F1_smooth"

    def initialize(self, model) -> list[str]:
        init_encoder_(model.backbone)
        init_decoder_(model.decode_head)
        init_decoder_(model.decode_head_conf)
        lines = ["encoder: MiT-style random initialisation; decoders: Kaiming-normal (fan_in, relu)"]
        if self.config.init:
            loaded, missing = load_matching(model, self.config.init)
            lines.append(f"loaded {', '.join(loaded)} from {self.config.init} ({len(missing)} tensors not in it)")
        if self.config.noiseprint:
            lines.append(load_noiseprint_weights(model, self.config.noiseprint))
        if self.config.mit:
            count = load_mit(model.backbone, self.config.mit)
            lines.append(f"encoder streams: {count} tensors from MiT checkpoint {self.config.mit}")
        return lines

    def loss(self, model, batch):
        image, label = (t.to(self.device) for t in batch)
        _, features = self.features(model, image)
        logits = F.interpolate(model.decode_head(features), size=image.shape[2:], mode="bilinear", align_corners=False)
        return dice_entropy_loss(logits, label)

    def validate(self, model):
        return validate_images(model, self.data.validation_samples(), self.device, scores=False)
