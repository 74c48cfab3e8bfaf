"""Export-only modules over the reference model: they fix the graphs' inputs and outputs.

Every graph takes what a decoder gives, uint8 RGB in NHWC layout, and does the official /256
scaling and the NHWC -> NCHW transpose inside, so a runtime never has to know the preprocessing.
Outputs are float32 whatever the precision inside the graph.

The three modules share one ``model`` attribute, so the exported graphs name the same tensors the
same way: INT8 ranges calibrated on the tile graph apply to the whole graph. The model is expected
with its BatchNorms folded (``reference.optimize.fold_batchnorm_``); the decoders already run in
their composed form (``reference.heads.MLPDecoder``).
"""

from __future__ import annotations

from torch import Tensor, nn

from reference.model import TruFor, TruForOutput, images_to_input, probabilities


class WholeImageModel(nn.Module):
    """``image`` (B, H, W, 3) uint8 -> ``map``, ``conf`` (B, H, W) and ``score`` (B,): the official outputs."""

    input_names = ("image",)
    output_names = ("map", "conf", "score")

    def __init__(self, model: TruFor):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = images_to_input(image)
        _, features = self.model.forward_features(x)
        loc_logits, conf_logits = self.model.forward_head(features, x.shape[2:])
        det_logit = self.model.forward_score(loc_logits, conf_logits)
        probs = probabilities(TruForOutput(loc_logits, conf_logits, det_logit, loc_logits))
        return probs.map, probs.conf, probs.score


class TileModel(nn.Module):
    """``image`` (B, T, T, 3) uint8 -> full-resolution ``loc_logits`` (B, 2, T, T) and ``conf_logits`` (B, 1, T, T).

    No score: the detection head pools over the whole image, so the runtime stitches the tiles'
    logits and runs :class:`ScoreModel` on the result.
    """

    input_names = ("image",)
    output_names = ("loc_logits", "conf_logits")

    def __init__(self, model: TruFor):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = images_to_input(image)
        _, features = self.model.forward_features(x)
        return self.model.forward_head(features, x.shape[2:])


class ScoreModel(nn.Module):
    """Full-resolution logits -> ``map``, ``conf`` (B, H, W) and ``score`` (B,): detection head + activations."""

    input_names = ("loc_logits", "conf_logits")
    output_names = ("map", "conf", "score")

    def __init__(self, model: TruFor):
        super().__init__()
        self.model = model

    def forward(self, loc_logits: Tensor, conf_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        det_logit = self.model.forward_score(loc_logits, conf_logits)
        probs = probabilities(TruForOutput(loc_logits, conf_logits, det_logit, conf_logits))
        return probs.map, probs.conf, probs.score
