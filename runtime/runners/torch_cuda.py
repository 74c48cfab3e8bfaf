"""The PyTorch backend on a CUDA GPU, float32 or float16 autocast: the GPU path without TensorRT.

``precision="fp16"`` runs the encoder and both decoders under ``torch.autocast("cuda", float16)``
(autocast keeps LayerNorm, softmax and reductions in float32) and then, as the fp16 ONNX export
does, the final full-resolution resizes, the detection pooling and its MLP in float32: the score
pools up to ~12 M values, beyond what float16 sums keep. Noiseprint++ always runs in float32 (the
reference model leaves autocast for it), and cuDNN's TF32 convolutions are switched off for the
process: TF32 rounds a convolution's inputs as float16 does, which Noiseprint++ amplifies into a
residual up to 68% off (``python -m benchmarks.noiseprint_precision``). Inputs go through pinned memory with a
non-blocking copy. fp16 is refused on a CPU device rather than silently run in float32.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from export.contract import DEFAULT_TILE
from export.errors import BackendUnavailableError
from reference.model import TruFor, images_to_input

from .base import ModelIdentity
from .torch_runner import TorchBackend, _numpy, _outputs


class TorchCudaBackend(TorchBackend):
    """The ``torch`` backend on a CUDA device (``TorchBackend.create`` picks it for --device cuda)."""

    def __init__(self, model: TruFor, device: str | torch.device = "cuda", tile_size: int = DEFAULT_TILE,
                 precision: str = "fp32", identity: ModelIdentity | None = None):
        if precision not in self.precisions:
            raise ValueError(f"the torch CUDA backend runs {', '.join(self.precisions)}, not {precision!r}")
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"TorchCudaBackend needs a CUDA device, got {device}; use TorchBackend on the CPU")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"torch {torch.__version__} sees no CUDA device (CPU-only build or no GPU)")
        super().__init__(model, device, tile_size, identity)
        self.precision = precision
        torch.backends.cudnn.allow_tf32 = False  # on by default in torch; matmuls' TF32 is off by default

    def describe(self) -> str:
        autocast = ", float16 autocast" if self.precision == "fp16" else ""
        return f"torch ({torch.cuda.get_device_name(self.torch_device)}, {self.precision}{autocast}, tile {self.tile_size})"

    def _input(self, image: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] / 256 on the GPU (copied as uint8, 4x fewer bytes)."""
        pinned = torch.from_numpy(image).pin_memory()
        return images_to_input(pinned.to(self.torch_device, non_blocking=True))

    def _logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-resolution float32 logits; the network under autocast, the final resizes in float32."""
        model = self.model
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.precision == "fp16"):
            _, features = model.forward_features(x)
            loc, conf = model.decode_head(features), model.decode_head_conf(features)
        size = x.shape[2:]
        loc = F.interpolate(loc.float(), size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(conf.float(), size=size, mode="bilinear", align_corners=False)
        return loc, conf

    def _whole(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loc, conf = self._logits(self._input(feed["image"]))
        return _outputs(loc, conf, self.model.forward_score(loc, conf))

    def _tile(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loc, conf = self._logits(self._input(feed["image"]))
        return {"loc_logits": _numpy(loc), "conf_logits": _numpy(conf)}
