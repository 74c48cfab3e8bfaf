"""The TensorRT backend: the three graphs' engines from ``engines.build``, checked, on CUDA streams.

Whole and tile engines run on ``streams`` execution contexts each (the tile engine with CUDA
graphs); the score engine on one. Engines are opened through ``engines.artifacts.load_engine``,
which refuses plans built for another GPU, TensorRT or ONNX graph. The whole engine's profile was
sized from the manifest's whole-image rule, which the Predictor also runs by, so whole images fit
it; inputs outside an engine's profile (a stitched image beyond --max-score-side) run the same
ONNX graph on ONNX Runtime, said once on stderr, and results say so (``ran_on``); pass
``fallback=False`` to make them errors instead. A missing score engine is served that way too.

With a CUDA build of PyTorch the tiled path stays on the GPU (``Capabilities.device_tensors``): the
tile engine writes its logits into torch tensors, which are blended there and read in place by the
score engine (runtime/device_tiling.py); without one, tiles are blended on the host.
"""

from __future__ import annotations

import functools
import importlib.util
import os

from engines._trt import INSTALL, tensorrt, tensorrt_lean
from engines.artifacts import engines_unavailable_reason, load_engine, read_index, rebuild_command
from engines.cuda import device_info, gpu_unavailable_reason
from export.auto_precision import PrecisionChoice, on_gpu
from export.contract import GRAPH_NAMES
from export.errors import ArtifactError
from export.manifest import load_manifest

from .base import Backend, BackendRequest, Capabilities
from .ort_runner import OrtRunner, artifacts_identity, default_providers, other_model
from .trt_runner import TrtRunner


def _torch_sees_cuda() -> bool:
    """Whether tiles can be blended on the GPU: a CUDA build of PyTorch that sees the device."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def tensorrt_unavailable(artifacts_dir, precision: str) -> str | None:
    """Why the TensorRT backend cannot run here (no runtime, no GPU, missing or mismatched engines)."""
    if not (tensorrt.is_importable or tensorrt_lean.is_importable):
        return f"TensorRT is not importable ({tensorrt.import_error}); {INSTALL}"
    reason = gpu_unavailable_reason()
    if reason:
        return reason
    return engines_unavailable_reason(artifacts_dir, precision, device_info())


class TensorRTBackend(Backend):
    name = "tensorrt"
    summary = "TensorRT engines on an NVIDIA GPU"
    flags = ("--artifacts", "--threads")  # --threads: the ONNX Runtime fallback's
    model_source = "tensorrt takes the model from --artifacts (build them with python -m export.build)"

    def __init__(self, artifacts_dir: str | os.PathLike, precision: str = "fp16", *, streams: int = 2,
                 cuda_graphs: bool = True, timing: bool = False, fallback: bool = True, stream=None, device=None,
                 threads: int | None = None):
        self.manifest = load_manifest(artifacts_dir, precision)  # ArtifactError for missing or stale graphs
        index = read_index(artifacts_dir, precision)
        hint = f"Rebuild with: {rebuild_command(artifacts_dir, precision)}"
        runners = {}
        for graph in GRAPH_NAMES:
            spec = self.manifest.graph(graph).spec
            onnx_fallback = OrtRunner(spec, self.manifest.graph(graph).path, default_providers(), threads) if fallback else None
            if graph not in index["engines"]:
                if graph != "score" or onnx_fallback is None:
                    raise ArtifactError(f"{index.get('precision')} engines in {artifacts_dir} lack the {graph} "
                                        f"engine. {hint}")
                runners[graph] = onnx_fallback
                continue
            runners[graph] = TrtRunner(
                spec, functools.partial(self._load, graph, device),
                streams=1 if graph == "score" else streams, cuda_graphs=cuda_graphs and graph == "tile",
                timing=timing, stream=stream, fallback=onnx_fallback, rebuild_hint=hint,
            )
        capabilities = Capabilities(async_submit=True, gpu=True, release_memory=True,
                                    device_tensors="cuda" if _torch_sees_cuda() else None)
        super().__init__(precision, self.manifest.tile_size, runners, device="cuda",
                         identity=artifacts_identity(self.manifest), capabilities=capabilities,
                         whole_rule=self.manifest.whole_rule)
        self.streams = streams
        self.gpu = None  # engines.cuda.DeviceInfo of the GPU, once an engine is loaded

    @classmethod
    def unavailable(cls, request: BackendRequest) -> str | None:
        reason = tensorrt_unavailable(request.artifacts, request.precision)
        if reason is not None:
            return reason
        return other_model(request, load_manifest(request.artifacts, request.precision, verify=False))

    @classmethod
    def create(cls, request: BackendRequest) -> TensorRTBackend:
        return cls(request.artifacts, request.precision, threads=request.threads)

    @classmethod
    def pick_precision(cls, request: BackendRequest) -> PrecisionChoice:
        return on_gpu("TensorRT engines on an NVIDIA GPU")

    def _load(self, graph: str, device):
        self.gpu = device or self.gpu or device_info()
        self.device = self.gpu.name
        loaded, _ = load_engine(self.manifest, graph, self.gpu)
        return loaded

    def describe(self) -> str:
        gpu = f", {self.gpu.name}" if self.gpu is not None else ""
        return f"tensorrt ({self.precision}, tile {self.tile_size}{gpu}, {self.streams} streams)"
