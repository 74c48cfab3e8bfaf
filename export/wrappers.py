"""Export-only modules over the reference model: they fix the graphs' inputs and outputs.

Every graph takes what a decoder gives, uint8 RGB in NHWC layout, and does the official /256
scaling and the NHWC -> NCHW transpose inside, so a runtime never has to know the preprocessing.
Outputs are float32 whatever the precision inside the graph.

The three modules share one ``model`` attribute and one ``heads`` module, so the exported graphs
name the same tensors the same way: INT8 ranges calibrated on the tile graph apply to the whole graph.

``FoldedDecoder`` is the one change of computation (not of result) made for deployment: the
decoders' 2048-channel concat at stride 4 followed by a 1x1 conv is distributed over the concat and
commuted with the bilinear upsampling (both are linear, and the interpolation weights sum to 1),
so each stage is projected straight to the fuse conv's output at its own resolution. Same function
up to float rounding, ~200 GFLOP and ~0.8 GB less at 1024 x 768 for the full model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference.config import PIXEL_SCALE
from reference.heads import MLPDecoder, weighted_statistics_pooling
from reference.model import TruFor, TruForOutput, probabilities


def image_to_input(image: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 RGB to the model's (B, 3, H, W) float input in [0, 255/256]."""
    return image.permute(0, 3, 1, 2).to(torch.float32) / PIXEL_SCALE


class FoldedDecoder(nn.Module):
    """An eval-mode ``MLPDecoder`` with linear_c{i}, the fuse conv and its BatchNorm folded per stage.

    fuse(cat_i up(L_i x_i)) = sum_i up(W_i L_i x_i) + b, and the BN is affine, so stage i becomes one
    1x1 conv C_i -> dim at stride 2^(i+1); the maps are upsampled, summed, passed through the ReLU
    and ``linear_pred`` as before. Folding runs in float64.
    """

    def __init__(self, decoder: MLPDecoder):
        super().__init__()
        fuse, bn = decoder.linear_fuse[0], decoder.linear_fuse[1]
        assert not bn.training and fuse.kernel_size == (1, 1)
        dim, n = fuse.out_channels, decoder.num_inputs
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shift = bn.bias.double() - bn.running_mean.double() * scale + scale * fuse.bias.double()
        # The concat order is [c4, c3, c2, c1]: block j of the fuse weight reads stage n - j.
        blocks = fuse.weight.double()[:, :, 0, 0].split(dim, dim=1)
        self.proj = nn.ModuleList()
        for i in range(n):
            linear = getattr(decoder, f"linear_c{i + 1}").proj
            block = blocks[n - 1 - i]
            conv = nn.Conv2d(linear.in_features, dim, 1)
            weight = scale[:, None] * (block @ linear.weight.double())
            bias = scale * (block @ linear.bias.double()) + (shift if i == 0 else 0.0)
            with torch.no_grad():
                conv.weight.copy_(weight[:, :, None, None].float())
                conv.bias.copy_(bias.float())
            self.proj.append(conv)
        self.linear_pred = decoder.linear_pred

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[2:]
        x = self.proj[0](features[0])
        for proj, feature in zip(self.proj[1:], features[1:]):
            x = x + F.interpolate(proj(feature), size=size, mode="bilinear", align_corners=False)
        return self.linear_pred(F.relu(x))


class Heads(nn.Module):
    """``model.forward_head``: both decoders, resized to the full ``size``; optionally folded."""

    def __init__(self, model: TruFor, fold_decoders: bool = True):
        super().__init__()
        wrap = FoldedDecoder if fold_decoders else (lambda decoder: decoder)
        self.loc = wrap(model.decode_head)
        self.conf = wrap(model.decode_head_conf)

    def forward(self, features: list[Tensor], size) -> tuple[Tensor, Tensor]:
        loc = F.interpolate(self.loc(features), size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(self.conf(features), size=size, mode="bilinear", align_corners=False)
        return loc, conf


def _uniform_pooling(values: Tensor) -> Tensor:
    """``weighted_statistics_pooling(values)`` (uniform weights 1/N) with N read from the graph's shape.

    The reference computes ``-math.log(N)`` in Python, which a trace bakes in as a constant of the
    example size (its TracerWarning says so); here N stays a graph value, so any H x W is right.
    """
    values = values.flatten(1)
    log_w = -(torch.ones_like(values[:, :1]) * values.shape[1]).log()
    soft_min = -torch.logsumexp(log_w - values, dim=1)
    soft_max = torch.logsumexp(log_w + values, dim=1)
    w = log_w.exp()
    mean = (w * values).sum(dim=1)
    mean_square = (w * values * values).sum(dim=1)
    return torch.stack((soft_min, soft_max, mean, mean_square), dim=1)


def detection_logit(model: TruFor, loc_logits: Tensor, conf_logits: Tensor) -> Tensor:
    """``model.forward_score`` in a form that traces for every input size (see ``_uniform_pooling``)."""
    uniform = _uniform_pooling(conf_logits)
    difference = loc_logits[:, 1:2] - loc_logits[:, 0:1]
    weighted = weighted_statistics_pooling(difference, F.logsigmoid(conf_logits))
    return model.detection(torch.cat((uniform, weighted), dim=1))


class WholeImageModel(nn.Module):
    """``image`` (B, H, W, 3) uint8 -> ``map``, ``conf`` (B, H, W) and ``score`` (B,): the official outputs."""

    input_names = ("image",)
    output_names = ("map", "conf", "score")

    def __init__(self, model: TruFor, fold_decoders: bool = True):
        super().__init__()
        self.model = model
        self.heads = Heads(model, fold_decoders)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = image_to_input(image)
        _, features = self.model.forward_features(x)
        loc_logits, conf_logits = self.heads(features, x.shape[2:])
        det_logit = detection_logit(self.model, loc_logits, conf_logits)
        probs = probabilities(TruForOutput(loc_logits, conf_logits, det_logit, loc_logits))
        return probs.map, probs.conf, probs.score


class TileModel(nn.Module):
    """``image`` (B, T, T, 3) uint8 -> full-resolution ``loc_logits`` (B, 2, T, T) and ``conf_logits`` (B, 1, T, T).

    No score: the detection head pools over the whole image, so the runtime stitches the tiles'
    logits and runs :class:`ScoreModel` on the result.
    """

    input_names = ("image",)
    output_names = ("loc_logits", "conf_logits")

    def __init__(self, model: TruFor, fold_decoders: bool = True):
        super().__init__()
        self.model = model
        self.heads = Heads(model, fold_decoders)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        x = image_to_input(image)
        _, features = self.model.forward_features(x)
        return self.heads(features, x.shape[2:])


class ScoreModel(nn.Module):
    """Full-resolution logits -> ``map``, ``conf`` (B, H, W) and ``score`` (B,): detection head + activations."""

    input_names = ("loc_logits", "conf_logits")
    output_names = ("map", "conf", "score")

    def __init__(self, model: TruFor):
        super().__init__()
        self.model = model

    def forward(self, loc_logits: Tensor, conf_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        det_logit = detection_logit(self.model, loc_logits, conf_logits)
        probs = probabilities(TruForOutput(loc_logits, conf_logits, det_logit, conf_logits))
        return probs.map, probs.conf, probs.score
