"""The PyTorch backend: the reference model behind the export's three-graph I/O contract."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from reference.config import PIXEL_SCALE
from reference.model import TruFor, TruForOutput, probabilities, to_tensor

from .base import Backend, BaseRunner, graph_io

DEFAULT_TILE_SIZE = 512


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] / 256.

    One image goes through ``reference.model.to_tensor`` itself: the CPU convolutions pick their
    kernels from the strides, so any other layout changes the outputs by float rounding.
    """
    if image.shape[0] == 1:
        return to_tensor(image[0]).to(device)
    return torch.from_numpy(image).to(device).permute(0, 3, 1, 2).float() / PIXEL_SCALE


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().cpu().numpy()


class TorchRunner(BaseRunner):
    """One graph as a function of the model; activation puts the model in eval mode on the device."""

    def __init__(self, graph: str, backend: TorchBackend, function: Callable[[dict], dict]):
        super().__init__(graph, backend.io[graph])
        self.backend = backend
        self.function = function

    def activate_impl(self) -> None:
        self.backend.model.eval().to(self.backend.device)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return self.function(feed)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: TruFor, device: str | torch.device = "cpu", tile_size: int = DEFAULT_TILE_SIZE):
        self.model = model
        self.device = torch.device(device)
        self.io = graph_io(tile_size, model.config.num_classes)
        super().__init__(
            "fp32",
            tile_size,
            {
                "whole": TorchRunner("whole", self, self._whole),
                "tile": TorchRunner("tile", self, self._tile),
                "score": TorchRunner("score", self, self._score),
            },
        )

    def _whole(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probs = probabilities(self.model(_image_tensor(feed["image"], self.device)))
        return {"map": _numpy(probs.map), "conf": _numpy(probs.conf), "score": _numpy(probs.score)}

    def _tile(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = _image_tensor(feed["image"], self.device)
        _, features = self.model.forward_features(x)
        loc_logits, conf_logits = self.model.forward_head(features, x.shape[2:])
        return {"loc_logits": _numpy(loc_logits), "conf_logits": _numpy(conf_logits)}

    def _score(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loc_logits = torch.from_numpy(feed["loc_logits"]).to(self.device)
        conf_logits = torch.from_numpy(feed["conf_logits"]).to(self.device)
        det_logit = self.model.forward_score(loc_logits, conf_logits)
        probs = probabilities(TruForOutput(loc_logits, conf_logits, det_logit, None))
        return {"map": _numpy(probs.map), "conf": _numpy(probs.conf), "score": _numpy(probs.score)}
