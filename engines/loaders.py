"""Polygraphy-style loaders: small callables with all config in the constructor and work in ``call_impl``.

A loader's input may be the value itself or another loader, so they nest and run lazily:

    plan = EngineBytesFromNetwork(NetworkFromOnnxPath("trufor_tile.fp16.onnx"), profiles=[...])
    engine = EngineFromBytes(SaveEngine(plan, "trufor_tile.fp16.engine"))()

The builder-side ones have a snake_case twin that builds and calls it at once (``save_engine(plan, path)``);
the runtime opens engines only through ``engines.artifacts.load_engine``, which checks them first.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.errors import ArtifactError
from reference.outputs import atomic_write

from ._trt import builder_module, logger, network_policy, runtime_module
from .errors import EngineBuildError

# A profile maps each input name to its (min, opt, max) shapes.
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


class BaseLoader:
    """Entry only via ``__call__``; subclasses implement ``call_impl``."""

    def __call__(self, *args, **kwargs):
        return self.call_impl(*args, **kwargs)

    def call_impl(self, *args, **kwargs):
        raise NotImplementedError


def resolve(value):
    """A loader's input: call it when it is a loader, else use it as given."""
    return value() if isinstance(value, BaseLoader) else value


def log(message: str) -> None:
    print(f"[engines] {message}", flush=True)


@dataclass
class ParsedNetwork:
    """A parsed network and what must stay alive with it (the parser owns the weights' memory)."""

    trt: Any
    builder: Any
    network: Any
    parser: Any
    source: Path
    policy: Any


def describe_parser_error(error) -> str:
    """One ONNX parser error: node index, name and operator when the parser knows them, and why."""
    parts = []
    for attribute, label in (("node", "node"), ("node_name", "name"), ("node_operator", "op")):
        try:
            value = getattr(error, attribute)()
        except Exception:  # noqa: BLE001 - older parsers lack some accessors
            continue
        if value not in (None, "", -1):
            parts.append(f"{label} {value}")
    where = ", ".join(parts) or "graph"
    try:
        code = error.code()
        code_text = f" [{getattr(code, 'name', code)}]"
    except Exception:  # noqa: BLE001
        code_text = ""
    return f"{where}: {error.desc()}{code_text}"


class NetworkFromOnnxPath(BaseLoader):
    """ONNX file -> strongly typed TensorRT network (see ``engines._trt.network_policy``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def call_impl(self) -> ParsedNetwork:
        if not self.path.is_file():
            raise ArtifactError(f"ONNX graph {self.path} does not exist; export it with python -m export.build")
        trt = builder_module()
        policy = network_policy(trt)
        builder = trt.Builder(logger(trt))
        network = builder.create_network(policy.creation_flags)
        parser = trt.OnnxParser(network, logger(trt))
        if not parser.parse_from_file(os.fspath(self.path)):
            errors = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            listing = "\n  ".join(errors) or "(the parser reported no details)"
            raise EngineBuildError(
                f"TensorRT {'.'.join(map(str, policy.version))} could not parse {self.path}: "
                f"{len(errors)} error(s):\n  {listing}"
            )
        return ParsedNetwork(trt, builder, network, parser, self.path, policy)


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``<path>.lock`` (POSIX flock), so builds in parallel merge their caches."""
    import fcntl  # POSIX only, like the TensorRT wheels this is used with

    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path | None) -> bytes:
    return path.read_bytes() if path is not None and path.is_file() else b""


@dataclass
class BuildOptions:
    """Builder settings that change the plan; their dict goes into the engine's cache key."""

    profiles: list[Profile]
    workspace_bytes: int | None = None  # None: TensorRT's default (the GPU's memory)
    tf32: bool = False  # off: FP32 layers stay FP32, so an fp32 engine matches the reference
    version_compatible: bool = False  # plan runs on later TensorRT of the same major and on tensorrt_lean
    extra: dict[str, Any] = field(default_factory=dict)

    def key_options(self) -> dict[str, Any]:
        return {"workspace_bytes": self.workspace_bytes, "tf32": self.tf32,
                "version_compatible": self.version_compatible, **self.extra}


class EngineBytesFromNetwork(BaseLoader):
    """Parsed network -> serialized plan, with profiles, workspace limit and a shared timing cache.

    Logs the whole builder config and the build time; ``last_build`` keeps both for the sidecar.
    An empty plan is an EngineBuildError, never an empty file.
    """

    def __init__(self, network, options: BuildOptions, timing_cache: str | os.PathLike | None = None):
        self.network = network
        self.options = options
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.last_build: dict[str, Any] = {}

    def _config(self, parsed: ParsedNetwork):
        trt, builder, network = parsed.trt, parsed.builder, parsed.network
        config = builder.create_builder_config()
        if self.options.workspace_bytes is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options.workspace_bytes))
        if not self.options.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        if self.options.version_compatible:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        inputs = sorted(network.get_input(i).name for i in range(network.num_inputs))
        for index, shapes in enumerate(self.options.profiles):
            if sorted(shapes) != inputs:
                raise EngineBuildError(
                    f"{parsed.source}: optimization profile {index} covers inputs {sorted(shapes)}, "
                    f"but the network's inputs are {inputs}"
                )
            profile = builder.create_optimization_profile()
            for name, (low, opt, high) in shapes.items():
                profile.set_shape(name, low, opt, high)
            if config.add_optimization_profile(profile) < 0:
                raise EngineBuildError(f"{parsed.source}: TensorRT rejected optimization profile {index}: {shapes}")
        cache = config.create_timing_cache(_read(self.timing_cache))
        # ignore_mismatch=False: a cache from another GPU or TensorRT version is refused, not trusted.
        if cache is None or not config.set_timing_cache(cache, False):
            log(f"timing cache {self.timing_cache} is unreadable or from another GPU/TensorRT; starting a new one")
            cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(cache, False):
                raise EngineBuildError("TensorRT refused a new, empty timing cache")
        return config, cache

    def call_impl(self) -> bytes:
        parsed = resolve(self.network)
        config, cache = self._config(parsed)
        summary = {
            "onnx": str(parsed.source),
            "tensorrt": ".".join(map(str, parsed.policy.version)),
            "network": parsed.policy.description,
            "profiles": [{k: [list(s) for s in v] for k, v in p.items()} for p in self.options.profiles],
            **self.options.key_options(),
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
        }
        log("builder config: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
        start = time.perf_counter()
        plan = parsed.builder.build_serialized_network(parsed.network, config)
        seconds = time.perf_counter() - start
        if plan is None or getattr(plan, "nbytes", 0) == 0:
            raise EngineBuildError(
                f"TensorRT built no engine from {parsed.source} after {seconds:.0f}s (the TensorRT errors above say "
                "why); common causes: a workspace limit too small (--workspace-gb) or too little GPU memory "
                "for the profile's largest shape (the export's --whole-max-side, --max-tile-batch)"
            )
        if self.timing_cache is not None:
            self._save_timing_cache(parsed.trt, config, cache)
        data = bytes(memoryview(plan))
        log(f"built {parsed.source.name} in {seconds:.1f}s ({len(data) / 1e6:.1f} MB)")
        self.last_build = {"builder_config": summary, "build_seconds": round(seconds, 2)}
        return data

    def _save_timing_cache(self, trt, config, cache) -> None:
        """Merge our cache with the file's current one and write it back, under a lock."""
        self.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.timing_cache):
            on_disk = _read(self.timing_cache)
            if on_disk:
                other = config.create_timing_cache(on_disk)
                if other is None or not cache.combine(other, False):
                    log(f"timing cache {self.timing_cache} was from another GPU/TensorRT; replacing it")
            timing = bytes(memoryview(cache.serialize()))
            atomic_write(self.timing_cache, lambda file: file.write(timing))


class SaveEngine(BaseLoader):
    """Plan bytes -> the same bytes, written to ``path`` atomically (a reader never sees half a plan)."""

    def __init__(self, plan, path: str | os.PathLike):
        self.plan = plan
        self.path = Path(path)

    def call_impl(self) -> bytes:
        data = resolve(self.plan)
        atomic_write(self.path, lambda file: file.write(data))
        return data


class BytesFromPath(BaseLoader):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def call_impl(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class LoadedEngine:
    """A deserialized engine with the runtime that made it (kept alive as long as the engine)."""

    engine: Any
    runtime: Any
    trt: Any


class EngineFromBytes(BaseLoader):
    """Plan bytes -> ICudaEngine, with the full runtime or, for version-compatible plans, the lean one."""

    def __init__(self, plan, version_compatible: bool = False, name: str = "engine"):
        self.plan = plan
        self.version_compatible = version_compatible
        self.name = name

    def call_impl(self) -> LoadedEngine:
        from .cuda import require_gpu  # creating a TensorRT runtime without a GPU crashes

        require_gpu()
        trt = runtime_module(self.version_compatible)
        runtime = trt.Runtime(logger(trt))
        if self.version_compatible:
            runtime.engine_host_code_allowed = True  # the plan carries its lean runtime; we built it
        engine = runtime.deserialize_cuda_engine(resolve(self.plan))
        if engine is None:
            raise ArtifactError(
                f"TensorRT could not deserialize {self.name} (see the TensorRT error above); rebuild it with "
                "python -m engines.build --rebuild"
            )
        return LoadedEngine(engine, runtime, trt)


class EngineFromPath(EngineFromBytes):
    def __init__(self, path: str | os.PathLike, version_compatible: bool = False):
        super().__init__(BytesFromPath(path), version_compatible, name=os.fspath(path))


def network_from_onnx_path(path) -> ParsedNetwork:
    return NetworkFromOnnxPath(path)()


def engine_bytes_from_network(network, options: BuildOptions, timing_cache=None) -> bytes:
    return EngineBytesFromNetwork(network, options, timing_cache)()


def save_engine(plan, path) -> bytes:
    return SaveEngine(plan, path)()
