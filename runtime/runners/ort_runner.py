"""The ONNX Runtime backend: one InferenceSession per exported graph (whole, tile, score)."""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.auto_precision import PrecisionChoice, on_cpu, on_gpu
from export.contract import GRAPH_NAMES, MIN_SIDE, GraphSpec
from export.errors import ArtifactError, BackendUnavailableError
from export.manifest import GraphEntry, Manifest, load_manifest, verify_file
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

    def __init__(self, spec: GraphSpec, path: os.PathLike, providers: list[str], threads: int | None,
                 optimize: bool = True, lazy: bool = False):
        super().__init__(spec)
        self.path = path
        self.providers = providers
        self.threads = threads
        self.optimize = optimize  # False: ``path`` is ONNX Runtime's optimized graph, run as it is
        # True: the session is created on the first run, not on activate (the tile graph: a scan of
        # images that all run whole never loads its 267 MB)
        self.lazy = lazy
        self.session = None
        self.run_options = None

    def activate_impl(self) -> None:
        if not os.path.isfile(self.path):
            raise ArtifactError(f"{self.graph} graph {self.path} does not exist; rebuild with python -m export.build")
        if not self.lazy:
            self._create_session()

    def _create_session(self) -> None:
        ort = _onnxruntime()
        from export.session import session_options  # imports onnxruntime, which only this backend needs

        options = session_options(self.threads or cpu_count(), optimize=self.optimize)
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
        if self.session is None:
            self._create_session()
        feed = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        names = list(self.spec.output_names)
        return dict(zip(names, self.session.run(names, feed, self.run_options)))

    def release_memory_impl(self) -> None:
        """One run on the smallest input with arena shrinkage, which frees every chunk not in use
        (all of them, between runs). Graphs with a fixed input size keep theirs: it never grows."""
        if self.graph == "whole" and self.session is not None:
            image = np.zeros((1, MIN_SIDE, MIN_SIDE, 3), np.uint8)
            self.session.run(list(self.spec.output_names), {"image": image}, self.release_options)

    def deactivate_impl(self) -> None:
        self.session = None


@dataclass(frozen=True)
class GraphFile:
    """The file of a graph these providers load, every file its session reads (with their sha256), and
    whether it is ONNX Runtime's optimized form."""

    path: Path
    files: tuple[tuple[Path, str], ...]
    preoptimized: bool = False


def graph_file(entry: GraphEntry, providers: list[str]) -> tuple[GraphFile, str | None]:
    """The file of ``entry`` these providers run best, and why the export's optimized form is not it (None
    when it is). On the CPU provider: ONNX Runtime's optimized graph when this ONNX Runtime and CPU made it
    (``export.session.write_optimized``), else the plain CPU file (the uint8-activation form of an int8
    graph: x86 U8S8 kernels), optimized at load; elsewhere the graph as exported."""
    if providers[0] != "CPUExecutionProvider":
        return GraphFile(entry.path, ((entry.path, entry.sha256),)), f"optimized at load for {providers[0]}"
    path, sha256 = entry.cpu_file
    plain = GraphFile(path, ((path, sha256),))
    optimized = entry.ort_optimized
    if optimized is None:
        return plain, "optimized at load: these artifacts have no optimized graphs (exported before they existed)"
    from export.session import cpu_signature  # imports onnxruntime, which only this backend needs
    import onnxruntime

    if optimized.onnxruntime != onnxruntime.__version__:
        return plain, (f"optimized at load: the export's optimized graphs are for onnxruntime {optimized.onnxruntime}, "
                       f"this is {onnxruntime.__version__}")
    if optimized.provider != providers[0] or optimized.cpu != cpu_signature():
        return plain, f"optimized at load: the export's optimized graphs are for another CPU ({optimized.cpu})"
    missing = [file for file, _ in optimized.files if not file.is_file()]
    if missing:
        return plain, f"optimized at load: {missing[0]} is missing"
    return GraphFile(optimized.path, optimized.files, preoptimized=True), None


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
        # ArtifactError for missing or stale artifacts. Only the files the sessions read are hashed (about
        # 0.2 CPU s per 267 MB file), on activation (``activate``): an int8 graph's CPU form or ONNX
        # Runtime's optimized graph, not the exported graph beside it too.
        self.manifest = load_manifest(artifacts_dir, precision, verify=False)
        self.providers = list(providers) if providers else default_providers()
        runners, self.load_notes, self.loaded_files = {}, set(), []
        for graph in GRAPH_NAMES:
            entry = self.manifest.graph(graph)
            chosen, note = graph_file(entry, self.providers)
            self.loaded_files += chosen.files
            runners[graph] = OrtRunner(entry.spec, chosen.path, self.providers, threads,
                                       optimize=not chosen.preoptimized, lazy=graph == "tile")
            self.load_notes.add(note or "optimized at export")
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        super().__init__(
            precision, self.manifest.tile_size, runners, device="cuda" if on_gpu else "cpu",
            identity=artifacts_identity(self.manifest), capabilities=Capabilities(gpu=on_gpu, release_memory=True),
            whole_rule=self.manifest.whole_rule,
        )

    def activate(self) -> None:
        """Create the sessions while another thread hashes every file they read (hashlib and file reads
        release the GIL), so a stale or modified file still stops the scan before its first image while
        the hashing (about 0.2 s per 267 MB file) no longer comes before the loading (BENCHMARKS.md, "CPU start-up")."""
        if all(runner.is_active for runner in self.runners.values()):
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-artifacts") as pool:
            verified = pool.submit(lambda: [verify_file(self.manifest, path, sha256) for path, sha256 in self.loaded_files])
            try:
                super().activate()
            except Exception:
                verified.result()  # a stale file explains a failed load best
                raise
            try:
                verified.result()
            except ArtifactError:
                self.deactivate()
                raise

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

    @classmethod
    def pick_precision(cls, request: BackendRequest) -> PrecisionChoice:
        if importlib.util.find_spec("onnxruntime") is not None and default_providers()[0] == "CUDAExecutionProvider":
            return on_gpu("ONNX Runtime's CUDA provider")
        return on_cpu()

    def describe(self) -> str:
        graphs = "; ".join(sorted(self.load_notes))
        return f"onnxruntime ({self.precision}, tile {self.tile_size}, {', '.join(self.providers)}, graphs {graphs})"
