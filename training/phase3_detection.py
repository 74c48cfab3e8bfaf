"""Phase 3, confidence and detection: the confidence decoder and the detection head, all else frozen.

Official recipe (ARCHITECTURE.md 6): start from the phase-2 checkpoint (every tensor it has is
loaded), run Noiseprint++, the encoder and the anomaly decoder in eval mode without gradients,
and train on 1.0 x CONF + 0.5 x DET: CONF regresses sigmoid(confidence) onto the localization's
true-class probability away from mask borders, DET is a weighted BCE on the image label. The
confidence decoder's BatchNorm eps is 1e-3 here, as in the official training; see
``training.release`` for running such a model with the docker eps (1e-5). Model selection on
the balanced accuracy of the score at 0.5 (``avg_img_bacc``; ``avg_det_bacc`` officially).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .loop import SegmentationPhase
from .losses import confidence_detection_loss
from .validation import validate_images
from .weights import init_decoder_, load_matching


class DetectionPhase(SegmentationPhase):
    number = 3
    trainable = ("decode_head_conf", "detection")
    best_key = "avg_img_bacc"

    def initialize(self, model) -> list[str]:
        init_decoder_(model.decode_head_conf)
        loaded, missing = load_matching(model, self.config.init)
        lines = [f"loaded {', '.join(loaded)} from {self.config.init}"]
        if missing:
            lines.append(f"{len(missing)} tensors not in it keep their initialisation (e.g. {missing[0]})")
        return lines

    def loss(self, model, batch):
        image, label = (t.to(self.device) for t in batch)
        size = image.shape[2:]
        with torch.no_grad():
            _, features = self.features(model, image)
            loc_logits = F.interpolate(model.decode_head(features), size=size, mode="bilinear", align_corners=False)
        conf_logits = F.interpolate(model.decode_head_conf(features), size=size, mode="bilinear", align_corners=False)
        det_logit = model.forward_score(loc_logits, conf_logits)
        return confidence_detection_loss(conf_logits, loc_logits, det_logit, label)

    def validate(self, model):
        return validate_images(model, self.data.validation_samples(), self.device, scores=True)
