"""The ONNX Runtime backend: one InferenceSession per exported graph (whole, tile, score)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from export.contract import GRAPH_NAMES, MIN_SIDE, GraphSpec
from export.errors import ArtifactError, BackendUnavailableError
from export.manifest import GraphEntry, Manifest, load_manifest
from reference.errors import TruForError
from reference.weights import resolve_weights

from .base import Backend, BackendRequest, BaseRunner, Capabilities, ModelIdentity, cpu_count

_ORT_TYPES = {"tensor(uint8)": np.dtype(np.uint8), "tensor(float)": np.dtype(np.float32)}
# Tried in this order when present; TensorRT's provider is used only when asked for by name.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# The CUDA provider runs float32 convolutions and matmuls in TF32 by default (Ampere and later),
# which rounds their inputs as float16 does: Noiseprint++ amplifies that into a residual up to 68% off
# (python -m benchmarks.noiseprint_precision), so float32 stays float32.
PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}


def session_providers(providers: list[str]) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` with the options this project needs (see ``PROVIDER_OPTIONS``)."""
    return [(name, PROVIDER_OPTIONS[name]) if name in PROVIDER_OPTIONS else name for name in providers]


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendUnavailableError(
            f"the onnxruntime backend needs the onnxruntime package ({error}); pip install onnxruntime"
        ) from error
    return onnxruntime


def default_providers() -> list[str]:
    available = _onnxruntime().get_available_providers()
    return [name for name in DEFAULT_PROVIDERS if name in available]


def artifacts_identity(manifest: Manifest) -> ModelIdentity:
    """The model of exported artifacts: their folder and the weights they were exported from."""
    checkpoint = manifest.checkpoint
    if checkpoint is None:
        source = "random weights"
    elif "description" in checkpoint:  # manifests written since --weights
        source = f"{checkpoint['description']}, sha256 {checkpoint['sha256']}"
    else:
        source = f"checkpoint sha256 {checkpoint['sha256']}"
    random = None if checkpoint else f"{manifest.path} was exported without a checkpoint: it holds"
    return ModelIdentity(f"artifacts {manifest.directory.resolve()} ({source})", random)


def other_model(request: BackendRequest, manifest: Manifest) -> str | None:
    """Why the artifacts hold another model than --weights / --random-weights / --preset ask for (auto only).
    Without a weights flag the artifacts are used whatever they hold."""
    if request.weights is None and not request.random_weights:
        if request.preset is not None and request.preset != manifest.preset:
            return f"{manifest.path} was built for preset {manifest.preset}, not --preset {request.preset}"
        return None
    built_from = (
        f"{manifest.checkpoint.get('description', 'checkpoint ' + manifest.checkpoint['path'])} "
        f"(sha256 {manifest.checkpoint['sha256'][:12]})"
        if manifest.checkpoint
        else "random weights"
    )
    try:
        weights = resolve_weights(request.weights, request.preset, request.random_weights)
    except TruForError as error:
        return str(error)
    if weights.random:  # a fresh random init is never the artifacts' weights
        return f"{manifest.path} holds {built_from}, not the random weights of --preset {weights.preset}"
    if manifest.checkpoint is None or weights.sha256 != manifest.checkpoint["sha256"]:
        return f"{manifest.path} was built from {built_from}, not from {weights.description}"
    if manifest.preset != weights.preset:
        return f"{manifest.path} was built for preset {manifest.preset}, not {weights.preset}"
    return None


class OrtRunner(BaseRunner):
    """One graph file; the session is created on activate and dropped on deactivate."""

    runs_on = "onnxruntime"  # also inside the TensorRT backend, as its fallback

    def __init__(self, spec: GraphSpec, path: os.PathLike, providers: list[str], threads: int | None):
        super().__init__(spec)
        self.path = path
        self.providers = providers
        self.threads = threads
        self.session = None
        self.run_options = None

    def activate_impl(self) -> None:
        ort = _onnxruntime()
        from export.session import session_options  # imports onnxruntime, which only this backend needs

        if not os.path.isfile(self.path):
            raise ArtifactError(f"{self.graph} graph {self.path} does not exist; rebuild with python -m export.build")
        options = session_options(self.threads or cpu_count())
        # Keep the CPU arena (without it the full model at 1024x768 peaked at 4.1 GB instead of 1.5 GB
        # here). The whole graph keeps it between runs: shrinking it after every run made each image
        # fault its buffers in again (768x1024, full model, 2 threads: 5.09 s per image instead of
        # 4.64 with an int8 DnCNN; fp32 within noise). ``release_memory`` gives it back before a tiled
        # image instead, so the sessions' arenas do not add up (a 1440x1440 image then a tiled one:
        # 3.04 GB peak, 3.06 GB when shrinking after every run; without either, earlier, 5.4 GB).
        # The score graph runs once per tiled image at its full size: it shrinks after every run.
        self.run_options = ort.RunOptions()
        self.release_options = ort.RunOptions()
        self.release_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        if self.graph == "score":
            self.run_options = self.release_options
        try:
            self.session = ort.InferenceSession(os.fspath(self.path), options, providers=session_providers(self.providers))
        except Exception as error:  # ORT raises its own exception types for unreadable models
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {type(error).__name__}: {error}") from error
        self._check_signature()

    def _check_signature(self) -> None:
        inputs = {arg.name: arg for arg in self.session.get_inputs()}
        outputs = [arg.name for arg in self.session.get_outputs()]
        problems = []
        if set(inputs) != set(self.spec.input_names):
            problems.append(f"inputs {sorted(inputs)}, expected {sorted(self.spec.input_names)}")
        else:
            for spec in self.spec.inputs:
                got = _ORT_TYPES.get(inputs[spec.name].type)
                if got != spec.dtype:
                    problems.append(f"input {spec.name!r} is {inputs[spec.name].type}, expected {spec.dtype}")
                shape = inputs[spec.name].shape
                fixed = [(g, w) for g, w in zip(shape, spec.shape) if isinstance(w, int)]
                if len(shape) != len(spec.shape) or any(isinstance(g, int) and g != w for g, w in fixed):
                    problems.append(f"input {spec.name!r} has shape {shape}, expected {spec.shape}")
        if sorted(outputs) != sorted(self.spec.output_names):
            problems.append(f"outputs {outputs}, expected {list(self.spec.output_names)}")
        if problems:
            self.session = None
            raise ArtifactError(
                f"{self.path} does not match the {self.graph} graph contract: {'; '.join(problems)}. "
                "Rebuild the artifacts with python -m export.build"
            )

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        names = list(self.spec.output_names)
        return dict(zip(names, self.session.run(names, feed, self.run_options)))

    def release_memory_impl(self) -> None:
        """One run on the smallest input with arena shrinkage, which frees every chunk not in use
        (all of them, between runs). Graphs with a fixed input size keep theirs: it never grows."""
        if self.graph == "whole":
            image = np.zeros((1, MIN_SIDE, MIN_SIDE, 3), np.uint8)
            self.session.run(list(self.spec.output_names), {"image": image}, self.release_options)

    def deactivate_impl(self) -> None:
        self.session = None


def graph_file(entry: GraphEntry, providers: list[str]) -> os.PathLike:
    """The file of ``entry`` these providers run best: the uint8-activation form of an int8 graph on the
    CPU (x86 U8S8 kernels, written by the export), the symmetric int8 graph as exported elsewhere."""
    on_cpu = providers[0] == "CPUExecutionProvider"
    return entry.uint8_activations if on_cpu and entry.uint8_activations is not None else entry.path


class OrtBackend(Backend):
    name = "onnxruntime"
    summary = "exported ONNX graphs (--artifacts), CPU or CUDA"
    flags = ("--artifacts", "--threads")
    model_source = "onnxruntime takes the model from --artifacts (build them with python -m export.build)"

    def __init__(
        self,
        artifacts_dir: str | os.PathLike,
        precision: str = "fp32",
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        self.manifest = load_manifest(artifacts_dir, precision)  # ArtifactError for missing or stale artifacts
        self.providers = list(providers) if providers else default_providers()
        entries = {graph: self.manifest.graph(graph) for graph in GRAPH_NAMES}
        runners = {
            graph: OrtRunner(entry.spec, graph_file(entry, self.providers), self.providers, threads)
            for graph, entry in entries.items()
        }
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        super().__init__(
            precision, self.manifest.tile_size, runners, device="cuda" if on_gpu else "cpu",
            identity=artifacts_identity(self.manifest), capabilities=Capabilities(gpu=on_gpu, release_memory=True),
            whole_rule=self.manifest.whole_rule,
        )

    @classmethod
    def unavailable(cls, request: BackendRequest) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        try:
            # Cheap check here; the backend hashes the graphs and refuses stale ones with a clear error.
            manifest = load_manifest(request.artifacts, request.precision, verify=False)
        except ArtifactError as error:
            return str(error)
        return other_model(request, manifest)

    @classmethod
    def create(cls, request: BackendRequest) -> OrtBackend:
        return cls(request.artifacts, request.precision, threads=request.threads)

    def describe(self) -> str:
        return f"onnxruntime ({self.precision}, tile {self.tile_size}, {', '.join(self.providers)})"
