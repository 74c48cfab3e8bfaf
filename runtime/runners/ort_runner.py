"""The ONNX Runtime backend: one InferenceSession per exported graph (whole, tile, score)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reference.errors import ArtifactError, BackendUnavailableError
from reference.image import MIN_SIDE

from ..backends import cpu_count
from .base import GRAPH_NAMES, Backend, BaseRunner, GraphIO, graph_io

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


class OrtRunner(BaseRunner):
    """One graph file; the session is created on activate and dropped on deactivate."""

    def __init__(
        self, graph: str, io: GraphIO, path: Path, providers: list[str], threads: int | None, unsigned_int8: bool = False
    ):
        super().__init__(graph, io)
        self.path = path
        self.providers = providers
        self.threads = threads
        self.unsigned_int8 = unsigned_int8  # rewrite symmetric int8 activations to uint8 on load (CPU)
        self.session = None
        self.run_options = None

    def activate_impl(self) -> None:
        ort = _onnxruntime()
        if not self.path.is_file():
            raise ArtifactError(f"{self.graph} graph {self.path} does not exist; rebuild with python -m export.build")
        from export.session import session_options

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
        model = self._unsigned_int8_model() if self.unsigned_int8 else os.fspath(self.path)
        try:
            self.session = ort.InferenceSession(model, options, providers=session_providers(self.providers))
        except Exception as error:  # ORT raises its own exception types for unreadable models
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {type(error).__name__}: {error}") from error
        self._check_signature()

    def _unsigned_int8_model(self) -> bytes:
        import onnx

        from export.int8 import unsigned_activations

        try:
            model = onnx.load(self.path)
        except Exception as error:
            raise ArtifactError(f"cannot read {self.path}: {type(error).__name__}: {error}") from error
        return unsigned_activations(model).SerializeToString()

    def _check_signature(self) -> None:
        inputs = {arg.name: arg for arg in self.session.get_inputs()}
        outputs = [arg.name for arg in self.session.get_outputs()]
        problems = []
        if set(inputs) != set(self.io.inputs):
            problems.append(f"inputs {sorted(inputs)}, expected {sorted(self.io.inputs)}")
        else:
            for name, spec in self.io.inputs.items():
                got = _ORT_TYPES.get(inputs[name].type)
                if got != spec.dtype:
                    problems.append(f"input {name!r} is {inputs[name].type}, expected {spec.dtype}")
                fixed = [(g, w) for g, w in zip(inputs[name].shape, spec.shape) if isinstance(w, int)]
                if len(inputs[name].shape) != len(spec.shape) or any(
                    isinstance(g, int) and g != w for g, w in fixed
                ):
                    problems.append(f"input {name!r} has shape {inputs[name].shape}, expected {spec.shape}")
        if sorted(outputs) != sorted(self.io.outputs):
            problems.append(f"outputs {outputs}, expected {list(self.io.outputs)}")
        if problems:
            self.session = None
            raise ArtifactError(
                f"{self.path} does not match the {self.graph} graph contract: {'; '.join(problems)}. "
                "Rebuild the artifacts with python -m export.build"
            )

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(value) for name, value in feed.items()}
        values = self.session.run(list(self.io.outputs), feed, self.run_options)
        return dict(zip(self.io.outputs, values))

    def release_memory_impl(self) -> None:
        """One run on the smallest input with arena shrinkage, which frees every chunk not in use
        (all of them, between runs). Graphs with a fixed input size keep theirs: it never grows."""
        if self.graph == "whole":
            image = np.zeros((1, MIN_SIDE, MIN_SIDE, 3), np.uint8)
            self.session.run(list(self.io.outputs), {"image": image}, self.release_options)

    def deactivate_impl(self) -> None:
        self.session = None


class OrtBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        artifacts_dir: str | os.PathLike,
        precision: str = "fp32",
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        from export.manifest import load_manifest  # raises ArtifactError for missing or stale artifacts

        self.manifest = load_manifest(artifacts_dir, precision)
        paths = {graph: self.manifest.graph(graph).path for graph in GRAPH_NAMES}
        self._setup(paths, precision, self.manifest.tile_size, providers, threads)

    @classmethod
    def from_files(
        cls,
        paths: dict[str, str | os.PathLike],
        precision: str,
        tile_size: int,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> OrtBackend:
        """A backend over graph files named directly, without a manifest (tests, experiments)."""
        backend = cls.__new__(cls)
        backend.manifest = None
        backend._setup({g: Path(p) for g, p in paths.items()}, precision, tile_size, providers, threads)
        return backend

    def _setup(self, paths, precision, tile_size, providers, threads) -> None:
        providers = list(providers) if providers else default_providers()
        # ONNX Runtime's x86 int8 kernels are fastest with uint8 activations; other providers
        # (CUDA, TensorRT) take the symmetric int8 graph as exported.
        unsigned_int8 = precision == "int8" and providers[0] == "CPUExecutionProvider"
        io = graph_io(tile_size)
        super().__init__(
            precision,
            tile_size,
            {
                graph: OrtRunner(graph, io[graph], paths[graph], providers, threads, unsigned_int8)
                for graph in GRAPH_NAMES
            },
        )
        self.providers = providers

    def describe(self) -> str:
        return f"onnxruntime ({self.precision}, tile {self.tile_size}, {', '.join(self.providers)})"
