"""The PyTorch backend on a CUDA GPU, float32 or float16 autocast: the GPU path without TensorRT.

``precision="fp16"`` runs the encoder and both decoders under ``torch.autocast("cuda", float16)``
(autocast keeps LayerNorm, softmax and reductions in float32) and then, as the fp16 ONNX export
does, the final full-resolution resizes, the detection pooling and its MLP in float32: the score
pools up to ~12 M values, beyond what float16 sums keep. Noiseprint++ always runs in float32 (the
reference model leaves autocast for it), and cuDNN's TF32 convolutions are switched off for the
process: TF32 rounds a convolution's inputs as float16 does, which Noiseprint++ amplifies into a
residual up to 68% off (``python -m benchmarks.noiseprint_precision``). fp16 is refused on a CPU
device rather than silently run in float32.

Fast by design (the device check, ``benchmarks.gpu_check``, measures it):

- tiled images never leave the GPU between the tile and score graphs (``Capabilities.device_tensors``,
  ``runtime.device_tiling``): tiles are cut, blended and pooled there, and only the maps come back;
- whole images run on two ``Lane``s, each a CUDA stream with its own pinned staging buffers, so the
  Predictor's next call (another size, say) is copied and computed while the previous one finishes;
- pinned buffers are grown, never pinned per call (``pin_memory()`` on every call costs a page-locking
  system call and a host copy), and device memory comes from torch's caching allocator, whose frees
  never synchronize the device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from export.contract import DEFAULT_TILE
from export.errors import BackendUnavailableError
from reference.model import TruFor, images_to_input

from .base import BaseRunner, Capabilities, ModelIdentity
from .torch_runner import TorchBackend

LANES = 2


class PinnedBuffer:
    """A page-locked host buffer that grows (by half again) instead of being pinned anew per call."""

    def __init__(self):
        self.storage = torch.empty(0, dtype=torch.uint8)

    def view(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor of ``dtype`` and ``shape`` over the buffer's first bytes (valid until it grows again)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes > self.storage.numel():
            self.storage = torch.empty(max(nbytes, self.storage.numel() * 3 // 2), dtype=torch.uint8, pin_memory=True)
        return self.storage[:nbytes].view(dtype).view(shape)


class Lane:
    """One CUDA stream with its pinned input and output staging; ``pending`` is its call in flight."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)
        self.done = torch.cuda.Event()
        self.inputs = PinnedBuffer()
        self.outputs: dict[str, PinnedBuffer] = {}
        self.pending: Callable[[], dict[str, np.ndarray]] | None = None

    def to_host(self, tensors: dict[str, torch.Tensor]) -> Callable[[], dict[str, np.ndarray]]:
        """Queue the copies of ``tensors`` into this lane's pinned buffers; the returned call waits for
        them (once) and gives numpy copies, so the buffers can take the lane's next call."""
        staged = {}
        for name, tensor in tensors.items():
            staged[name] = self.outputs.setdefault(name, PinnedBuffer()).view(tensor.dtype, tuple(tensor.shape))
            staged[name].copy_(tensor, non_blocking=True)
        self.done.record(self.stream)
        result: dict[str, np.ndarray] = {}

        def wait() -> dict[str, np.ndarray]:
            if not result:
                self.done.synchronize()
                result.update({name: array.numpy().copy() for name, array in staged.items()})
                self.pending = None
            return result

        self.pending = wait
        return wait


class LanedWholeRunner(BaseRunner):
    """The whole graph on alternating lanes: ``submit_batch`` returns once the work is queued."""

    def __init__(self, backend: TorchCudaBackend):
        super().__init__(backend.specs["whole"])
        self.backend = backend
        self.lanes: list[Lane] = []
        self._next = 0

    def activate_impl(self) -> None:
        device = self.backend.torch_device
        self.backend.model.eval().to(device)
        self.lanes = [Lane(device) for _ in range(LANES)]
        for lane in self.lanes:  # the weights were copied on the current stream
            lane.stream.wait_stream(torch.cuda.current_stream(device))

    def submit_batch(self, feed: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__} ({self.graph}) must be activated before submit_batch()")
        for spec in self.spec.inputs:
            spec.check(self.graph, feed[spec.name])
        lane = self.lanes[self._next]
        self._next = (self._next + 1) % len(self.lanes)
        if lane.pending is not None:  # its staging buffers are about to be reused
            lane.pending()
        image = feed["image"]
        staged = lane.inputs.view(torch.uint8, image.shape)
        staged.numpy()[...] = image
        with torch.cuda.stream(lane.stream), torch.inference_mode():
            outputs = self.backend.whole_tensors(staged.to(self.backend.torch_device, non_blocking=True))
            return lane.to_host(outputs)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.submit_batch(feed)()

    def deactivate_impl(self) -> None:
        for lane in self.lanes:
            lane.stream.synchronize()
        self.lanes = []


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
        capabilities = Capabilities(async_submit=True, gpu=True, device_tensors=str(device))
        super().__init__(model, device, tile_size, identity, capabilities=capabilities)
        self.precision = precision
        torch.backends.cudnn.allow_tf32 = False  # on by default in torch; matmuls' TF32 is off by default

    def _whole_runner(self) -> BaseRunner:
        return LanedWholeRunner(self)

    def describe(self) -> str:
        autocast = ", float16 autocast" if self.precision == "fp16" else ""
        return f"torch ({torch.cuda.get_device_name(self.torch_device)}, {self.precision}{autocast}, tile {self.tile_size})"

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

    def whole_tensors(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 [B, H, W, 3] on the device -> map, conf, score on the device (queued, not waited for)."""
        loc, conf = self._logits(images_to_input(image))
        return self._score_tensors({"loc_logits": loc, "conf_logits": conf})

    def _tile_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        loc, conf = self._logits(x)
        return {"loc_logits": loc, "conf_logits": conf}
