"""The reference (PyTorch) predictor: one image at native resolution, as the official code runs it."""

from __future__ import annotations

import os

import numpy as np
import torch

from .image import DEFAULT_MAX_PIXELS, load_rgb
from .model import TruFor, probabilities, to_tensor
from .optimize import optimize_for_inference
from .result import TruForResult
from .weights import ResolvedWeights, resolve_weights


class ReferencePredictor:
    """Runs the PyTorch model on one image at native resolution, as the official code does.

    It keeps its own inference-optimized copy of ``model`` (BatchNorm folded, channels-last).
    """

    def __init__(
        self,
        model: TruFor,
        device: str | torch.device = "cpu",
        *,
        exif_transpose: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.device = torch.device(device)
        self.model = optimize_for_inference(model).to(self.device)
        self.exif_transpose = exif_transpose
        self.max_pixels = max_pixels
        self.weights: ResolvedWeights | None = None  # set by from_weights

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike | ResolvedWeights | None = None,
        preset: str | None = None,
        device: str | torch.device = "cpu",
        *,
        random_weights: bool = False,
        exif_transpose: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        **overrides,
    ) -> ReferencePredictor:
        """``weights``: None (the project's default model), ``"official"`` (the authors' release), their
        zip, a checkpoint path, or ``resolve_weights``' result; ``random_weights=True`` (with ``preset``)
        for an untrained model. ``overrides`` replace preset fields (e.g. ``conf_bn_variant="train"``).
        ``predictor.weights`` says which weights it runs."""
        resolved = resolve_weights(weights, preset, random_weights)
        predictor = cls(resolved.build(**overrides), device, exif_transpose=exif_transpose, max_pixels=max_pixels)
        predictor.weights = resolved
        return predictor

    @torch.inference_mode()
    def predict(self, image, *, noiseprint: bool = False, logits: bool = False) -> TruForResult:
        """``image``: a path, encoded bytes, a PIL image or an HxWx3 uint8 RGB array."""
        rgb = load_rgb(image, exif_transpose=self.exif_transpose, max_pixels=self.max_pixels)
        output = self.model(to_tensor(rgb).to(self.device))
        probs = probabilities(output)
        return TruForResult(
            map=_to_numpy(probs.map[0]),
            conf=_to_numpy(probs.conf[0]),
            score=float(probs.score[0]),
            noiseprint=_to_numpy(output.noiseprint[0, 0]) if noiseprint else None,
            loc_logits=_to_numpy(output.loc_logits[0]) if logits else None,
            conf_logits=_to_numpy(output.conf_logits[0]) if logits else None,
            det_logit=float(output.det_logit[0, 0]) if logits else None,
        )


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.float().cpu().numpy())
