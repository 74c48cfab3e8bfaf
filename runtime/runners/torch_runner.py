"""The PyTorch backend: the reference model behind the export's three-graph I/O contract.

torch and the reference model load on first use (``lazy_import``), so the registry can list this
backend, and the ONNX Runtime and TensorRT paths can run, without importing torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engines.importer import lazy_import
from export.auto_precision import PrecisionChoice, on_gpu
from export.contract import DEFAULT_TILE, graph_specs
from reference.weights import OFFICIAL, ResolvedWeights, default_model_problem, resolve_weights
from reference.weights_args import FLAGS as WEIGHTS_FLAGS

from .base import Backend, BackendRequest, BaseRunner, Capabilities, ModelIdentity

torch = lazy_import("torch", install="pip install torch")
reference_model = lazy_import("reference.model", install="pip install torch")


def _image_tensor(image: np.ndarray, device):
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] / 256.

    One image goes through ``reference.model.to_tensor`` itself: the CPU convolutions pick their
    kernels from the strides, so any other layout changes the outputs by float rounding.
    """
    if image.shape[0] == 1:
        return reference_model.to_tensor(image[0]).to(device)
    return reference_model.images_to_input(torch.from_numpy(image).to(device))


def _numpy(tensor) -> np.ndarray:
    return tensor.float().cpu().numpy()


def _outputs(loc_logits, conf_logits, det_logit) -> dict[str, np.ndarray]:
    """The whole and score graphs' outputs from the logits: the official activations."""
    probs = reference_model.probabilities(reference_model.TruForOutput(loc_logits, conf_logits, det_logit, None))
    return {"map": _numpy(probs.map), "conf": _numpy(probs.conf), "score": _numpy(probs.score)}


class TorchRunner(BaseRunner):
    """One graph as a function of the model; activation puts the model in eval mode on the device.

    ``tensor_function``, when given, is the same graph on torch tensors already on the device
    (``submit_tensors``): nothing is copied or waited for, so on a GPU the kernels are only queued.
    """

    def __init__(self, graph: str, backend: TorchBackend, function: Callable[[dict], dict],
                 tensor_function: Callable[[dict], dict] | None = None):
        super().__init__(backend.specs[graph])
        self.backend = backend
        self.function = function
        self.tensor_function = tensor_function

    def activate_impl(self) -> None:
        self.backend.model.eval().to(self.backend.torch_device)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return self.function(feed)

    def submit_tensors(self, feed: dict) -> Callable[[], dict]:
        if self.tensor_function is None:
            return super().submit_tensors(feed)
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__} ({self.graph}) must be activated before submit_tensors()")
        with torch.inference_mode():
            outputs = self.tensor_function(feed)
        return lambda: outputs


class TorchBackend(Backend):
    name = "torch"
    summary = "the PyTorch reference model (--weights, default the project's trained model; fp16 on CUDA)"
    precisions = ("fp32", "fp16")
    flags = (*WEIGHTS_FLAGS, "--device", "--tile-size", "--threads")
    model_source = f"pass --weights {OFFICIAL}|ZIP|PATH (or nothing, for the project's default model) for torch"

    def __init__(self, model, device="cpu", tile_size: int = DEFAULT_TILE, identity: ModelIdentity | None = None,
                 *, device_tensors: bool = False, capabilities: Capabilities | None = None):
        """``device_tensors``: tiled images are cut, blended and pooled as tensors on ``device``
        (runtime.device_tiling) instead of NumPy arrays on the host."""
        self.model = model
        self.torch_device = torch.device(device)
        self.specs = graph_specs(tile_size, model.config.num_classes)
        super().__init__(
            "fp32",
            tile_size,
            {
                "whole": self._whole_runner(),
                "tile": TorchRunner("tile", self, self._tile, self._tile_tensors),
                "score": TorchRunner("score", self, self._score, self._score_tensors),
            },
            device=str(self.torch_device),
            identity=identity or ModelIdentity("a model built in this process"),
            capabilities=capabilities or Capabilities(gpu=self.torch_device.type == "cuda",
                                                      device_tensors=str(self.torch_device) if device_tensors else None),
        )

    def _whole_runner(self) -> BaseRunner:
        return TorchRunner("whole", self, self._whole)

    @classmethod
    def pick_precision(cls, request: BackendRequest) -> PrecisionChoice:
        if request.device.startswith("cuda"):
            return on_gpu(f"the PyTorch reference on {request.device}, under float16 autocast")
        return PrecisionChoice("fp32", "the PyTorch reference on the CPU runs float32 only")

    @classmethod
    def usage_problem(cls, request: BackendRequest) -> str | None:
        """fp16 runs under CUDA autocast only; int8 is the exported graphs' (onnxruntime, tensorrt)."""
        on_cuda = request.device.startswith("cuda")
        if request.precision in (cls.precisions if on_cuda else ("fp32",)):
            return None
        return (
            f"runs fp32 (and fp16 with --device cuda), but --precision {request.precision} was "
            f"given{'' if on_cuda else ' without --device cuda'}; use --backend onnxruntime with artifacts "
            f"built by python -m export.build --precision {request.precision}"
        )

    @classmethod
    def unavailable(cls, request: BackendRequest) -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "PyTorch is not installed"
        if request.weights is None and not request.random_weights:
            return default_model_problem()
        unresolved = request.weights is not None and not isinstance(request.weights, ResolvedWeights)
        if unresolved and str(request.weights) != OFFICIAL and not Path(request.weights).expanduser().is_file():
            return f"weights file {request.weights} does not exist"
        return None

    @classmethod
    def create(cls, request: BackendRequest) -> TorchBackend:
        if request.threads:
            torch.set_num_threads(request.threads)
        weights = resolve_weights(request.weights, request.preset, request.random_weights)
        model = weights.build()
        tile_size = request.tile_size or DEFAULT_TILE
        identity = weights_identity(weights)
        if request.device.startswith("cuda"):
            from .torch_cuda import TorchCudaBackend

            return TorchCudaBackend(model, request.device, tile_size, request.precision, identity)
        return cls(model, request.device, tile_size, identity)

    def _whole(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        output = self.model(_image_tensor(feed["image"], self.torch_device))
        return _outputs(output.loc_logits, output.conf_logits, output.det_logit)

    def _tile(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = self._tile_logits(_image_tensor(feed["image"], self.torch_device))
        return {name: _numpy(tensor) for name, tensor in logits.items()}

    def _tile_tensors(self, feed: dict) -> dict:
        return self._tile_logits(reference_model.images_to_input(feed["image"]))

    def _tile_logits(self, x) -> dict:
        _, features = self.model.forward_features(x)
        loc_logits, conf_logits = self.model.forward_head(features, x.shape[2:])
        return {"loc_logits": loc_logits, "conf_logits": conf_logits}

    def _score(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {name: torch.from_numpy(array).to(self.torch_device) for name, array in feed.items()}
        return {name: _numpy(tensor) for name, tensor in self._score_tensors(tensors).items()}

    def _score_tensors(self, feed: dict) -> dict:
        loc_logits, conf_logits = feed["loc_logits"], feed["conf_logits"]
        det_logit = self.model.forward_score(loc_logits, conf_logits)
        probs = reference_model.probabilities(reference_model.TruForOutput(loc_logits, conf_logits, det_logit, None))
        return {"map": probs.map, "conf": probs.conf, "score": probs.score}


def weights_identity(weights: ResolvedWeights) -> ModelIdentity:
    """The model of resolved weights: what they are and their sha256, or a preset's random weights."""
    if weights.random:
        return ModelIdentity(f"preset {weights.preset} (random weights)",
                             f"--random-weights --preset {weights.preset} runs")
    return ModelIdentity(f"{weights.description}, sha256 {weights.sha256}, preset {weights.preset}")
