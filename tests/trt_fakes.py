"""Stand-ins for TensorRT and the CUDA runtime, so the engine and runner logic is tested without a GPU.

They mimic only the documented calls the code makes; ``Recording`` views of them log every name the
code reads, which test_trt_api_surface.py checks against the real packages. Device memory is host
bytes; a "kernel" computes simple, checkable outputs from the input (map = mean of RGB / 255,
conf = 1 - map, score = mean of map).
"""

from __future__ import annotations

import ctypes
import itertools
from types import SimpleNamespace

import numpy as np

# Fake class name -> the API class it stands for (fakes named after their API class map to themselves).
API_CLASSES = {
    "Network": "INetworkDefinition", "FakeConfig": "IBuilderConfig", "FakeProfile": "IOptimizationProfile",
    "FakeTimingCache": "ITimingCache", "FakeWholeEngine": "ICudaEngine", "FakeContext": "IExecutionContext",
    "FakeRuntime": "Runtime",
}  # fmt: skip
API_NAMED = {"Builder", "OnnxParser", "Logger", "ParserError", "MemoryPoolType", "BuilderFlag",
             "NetworkDefinitionCreationFlag", "ExecutionContextAllocationStrategy", "cudaMemcpyKind",
             "cudaStreamCaptureMode"}


def _api_of(value) -> str | None:
    name = value.__name__ if isinstance(value, type) else type(value).__name__
    return API_CLASSES.get(name) or (name if name in API_NAMED else None)


class Recording:
    """A fake seen as the API object it stands for: each attribute the code reads or sets is logged as
    (api, name) in ``log``, and what its calls return is seen the same way when it stands for another
    API object. Arguments go to the fake unwrapped, so its own bookkeeping is not logged."""

    def __init__(self, target, api: str, log: set, ignore: tuple[str, ...] = ()):
        vars(self).update(_target=target, _api=api, _log=log, _ignore=ignore)

    def __getattr__(self, name):
        if name not in self._ignore:
            self._log.add((self._api, name))
        return self._view(getattr(self._target, name))

    def __setattr__(self, name, value):
        self._log.add((self._api, name))
        setattr(self._target, name, value)

    def __call__(self, *args, **kwargs):
        return self._view(self._target(*_unwrap(args), **kwargs))

    def _view(self, value):
        api = _api_of(value)
        if api is not None:
            return Recording(value, api, self._log)
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: self._view(value(*_unwrap(args), **kwargs))
        return value


def _unwrap(args) -> list:
    return [vars(arg)["_target"] if isinstance(arg, Recording) else arg for arg in args]

# --- TensorRT builder side ---------------------------------------------------------------------


class FakeHostMemory(bytes):
    """Bytes with ``nbytes``: supports memoryview() like IHostMemory."""

    @property
    def nbytes(self):
        return len(self)


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.entries = set(data.decode().split(",")) - {""} if data else set()

    def combine(self, other, ignore_mismatch):
        self.entries |= other.entries
        return True

    def serialize(self):
        return FakeHostMemory(",".join(sorted(self.entries)).encode())


class FakeConfig:
    def __init__(self, builder):
        self.builder, self.pool_limits, self.cleared, self.flags, self.profiles = builder, {}, set(), set(), []
        self.timing_cache = None

    def set_memory_pool_limit(self, pool, size):
        self.pool_limits[pool] = size

    def clear_flag(self, flag):
        self.cleared.add(flag)

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        return FakeTimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True


class FakeProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


def fake_tensorrt(version="10.9.0.34", plan=b"PLAN-BYTES", parse_errors=(), inputs=("image",), tactic="t1"):
    """A module-like namespace with TensorRT's builder API; ``module.calls`` records what was built."""
    calls = SimpleNamespace(network_flags=[], configs=[], parsed=[])

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            self.severity = severity

    class Network:
        num_inputs = len(inputs)

        def get_input(self, index):
            return SimpleNamespace(name=inputs[index])

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse_from_file(self, path):
            calls.parsed.append(path)
            return not parse_errors

        def get_error(self, index):
            return ParserError(*parse_errors[index])

    class ParserError:
        def __init__(self, node, name, op, desc):
            self.node = lambda: node
            self.node_name, self.node_operator, self.desc = (lambda: name), (lambda: op), (lambda: desc)
            self.code = lambda: SimpleNamespace(name="UNSUPPORTED_NODE")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.network_flags.append(flags)
            return Network()

        def create_builder_config(self):
            config = FakeConfig(self)
            calls.configs.append(config)
            return config

        def create_optimization_profile(self):
            return FakeProfile()

        def build_serialized_network(self, network, config):
            config.timing_cache.entries.add(tactic)
            return None if plan is None else FakeHostMemory(plan)

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5

    class MemoryPoolType:
        WORKSPACE = "WORKSPACE"

    class BuilderFlag:
        TF32, VERSION_COMPATIBLE = "TF32", "VERSION_COMPATIBLE"

    return SimpleNamespace(
        __version__=version, calls=calls, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, MemoryPoolType=MemoryPoolType,
        BuilderFlag=BuilderFlag,
    )


class FakeRuntime:
    """TensorRT's Runtime: deserializes a plan into a fake engine."""

    def __init__(self, logger):
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, plan):
        return FakeWholeEngine() if plan else None


def fake_runtime_module():
    """A module-like namespace with TensorRT's runtime API (``tensorrt_lean`` has only this part)."""

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            self.severity = severity

    class ExecutionContextAllocationStrategy:
        STATIC, ON_PROFILE_CHANGE, USER_MANAGED = 0, 1, 2

    return SimpleNamespace(__version__="10.13.2.6", Logger=Logger, Runtime=FakeRuntime,
                           ExecutionContextAllocationStrategy=ExecutionContextAllocationStrategy)


def fake_loaded(engine):
    """What ``engines.loaders.EngineFromPath`` gives: the engine and the runtime module that made it."""
    return SimpleNamespace(engine=engine, trt=fake_runtime_module())


class FakeCudart:
    """cuda.bindings.runtime as the code calls it: ``(error, value...)`` tuples, real host memory for
    pinned buffers (the code views them with numpy), and success for every other call."""

    class cudaMemcpyKind:  # noqa: N801 - cuda-python's names
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking, cudaEventDefault, cudaEventDisableTiming = 1, 0, 2  # noqa: N815
    is_importable, import_error = True, None  # the LazyModule protocol engines.cuda reads

    def __init__(self):
        self.host = {}

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return 0, SimpleNamespace(name=b"Fake GPU\x00", major=9, minor=0, totalGlobalMem=1 << 30)

    def cudaMallocHost(self, nbytes):  # noqa: N802
        buffer = ctypes.create_string_buffer(nbytes)
        self.host[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def __getattr__(self, name):
        return lambda *args: (0, 1)  # frees, copies, streams, events, graphs: success and a handle of 1


# --- CUDA runtime (engines.cuda) -----------------------------------------------------------------

_MEMORY: dict[int, bytearray] = {}
_IDS = itertools.count(1 << 20, 4096)


class FakeDeviceBuffer:
    live: list = []

    def __init__(self, nbytes, stream=None):
        self.nbytes, self.mem, self.ptr = int(nbytes), bytearray(max(int(nbytes), 1)), next(_IDS)
        self.stream = stream
        _MEMORY[self.ptr] = self.mem
        type(self).live.append(self)

    def free(self):
        _MEMORY.pop(self.ptr, None)
        self.ptr = 0


class FakePinnedHostBuffer(FakeDeviceBuffer):
    live: list = []

    def view(self, dtype, shape):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.mem, dtype=dtype, count=count).reshape(shape)


class FakeStream:
    def __init__(self, handle=None):
        self.handle, self.freed = 7 if handle is None else int(handle), False

    def synchronize(self):
        pass

    def free(self):
        self.freed = True


class FakeEvent:
    """Each record reads a clock whose steps grow (1, 2, 3... ms), so every interval has its own length."""

    clock = SimpleNamespace(now=0.0, step=1.0)

    def __init__(self, timing=False):
        self.freed, self.time = False, None

    def record(self, stream):
        clock = FakeEvent.clock
        clock.now, clock.step = clock.now + clock.step, clock.step + 1
        self.time = clock.now

    def synchronize(self):
        pass

    def elapsed_ms_since(self, start):
        return self.time - start.time

    def free(self):
        self.freed = True


class FakeGraph:
    """A CUDA graph of one TensorRT enqueue, held to TensorRT's rules: the capture must follow a plain
    enqueue at the same shapes, and a replay must find the context at the shapes it captured."""

    captures = 0
    capturing: FakeGraph | None = None  # the graph whose capture is running

    def __init__(self, stream, enqueue):
        type(self).captures += 1
        self.enqueue, self.launches, self.context, self.shapes = enqueue, 0, None, None
        FakeGraph.capturing = self
        try:
            enqueue(stream)  # the context records itself and its shapes here, and runs nothing
        finally:
            FakeGraph.capturing = None

    def launch(self, stream):
        if self.context.shapes != self.shapes:
            raise AssertionError(f"a CUDA graph captured at {self.shapes} replayed at {self.context.shapes}")
        self.launches += 1
        self.context.run()

    def free(self):
        pass


def _copy(dst, src, nbytes, stream):
    dst.mem[:nbytes] = src.mem[:nbytes]


def install_fake_cuda(monkeypatch):
    from engines import cuda

    FakeDeviceBuffer.live, FakePinnedHostBuffer.live, FakeGraph.captures = [], [], 0
    FakeEvent.clock = SimpleNamespace(now=0.0, step=1.0)
    for name, value in {"DeviceBuffer": FakeDeviceBuffer, "PinnedHostBuffer": FakePinnedHostBuffer,
                        "CudaStream": FakeStream, "CudaEvent": FakeEvent, "CudaGraph": FakeGraph,
                        "copy_to_device_async": _copy, "copy_to_host_async": _copy}.items():
        monkeypatch.setattr(cuda, name, value)


# --- TensorRT runtime side: a "whole" engine ---------------------------------------------------

class FakeContext:
    def __init__(self, engine, strategy=None):
        self.engine, self.shapes, self.addresses, self.strategy = engine, {}, {}, strategy
        self.shape_calls, self.address_calls, self.runs, self.profile = [], [], 0, None
        self.memory_calls = []  # (ptr, size) given by set_device_memory
        self.plain_since_shape_change = False  # what TensorRT wants before a CUDA graph capture

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        self.shape_calls.append((name, tuple(shape)))
        if self.shapes.get(name) != tuple(shape):
            self.plain_since_shape_change = False
        self.shapes[name] = tuple(shape)
        return self.engine.accept_shapes

    def update_device_memory_size_for_shapes(self):
        return 1000 * int(np.prod(self.shapes["image"]))  # activations grow with the input

    def set_device_memory(self, ptr, size):
        assert _MEMORY[ptr] is not None and len(_MEMORY[ptr]) >= size, "activation memory smaller than asked"
        self.memory_calls.append((ptr, size))

    def get_tensor_shape(self, name):
        batch, height, width, _ = self.shapes["image"]
        return (batch,) if name == "score" else (batch, height, width)

    def set_tensor_address(self, name, ptr):
        self.address_calls.append((name, ptr))
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        if not self.engine.execute_ok:
            return False
        graph = FakeGraph.capturing
        if graph is not None:
            if not self.plain_since_shape_change:
                raise AssertionError(f"CUDA graph capture at {self.shapes} without a plain enqueue since the shapes changed")
            graph.context, graph.shapes = self, dict(self.shapes)
            return True
        self.plain_since_shape_change = True
        self.run()
        return True

    def run(self):
        """The "kernels": outputs computed from the input where the addresses point (a fake device
        buffer, or the memory of a CPU torch tensor standing for a CUDA one)."""
        self.runs += 1
        shape = self.shapes["image"]
        image = np.frombuffer(_memory(self.addresses["image"], int(np.prod(shape))), np.uint8).reshape(shape)
        for name, array in expected_outputs(image).items():
            _memory(self.addresses[name], array.nbytes)[:] = array.tobytes()


def _memory(ptr: int, nbytes: int):
    buffer = _MEMORY.get(ptr)
    if buffer is not None:
        return memoryview(buffer)[:nbytes]
    return memoryview((ctypes.c_char * nbytes).from_address(ptr)).cast("B")


def expected_outputs(image: np.ndarray) -> dict[str, np.ndarray]:
    probability = image.astype(np.float32).mean(axis=3) / 255.0
    return {"map": probability, "conf": 1.0 - probability, "score": probability.mean(axis=(1, 2))}


class FakeWholeEngine:
    """Dynamic batch 1..2 and sides 29..128, two profiles; ``accept_shapes``/``execute_ok`` inject failures."""

    names = ("image", "map", "conf", "score")

    def __init__(self, profile=((1, 29, 29, 3), (1, 64, 64, 3), (2, 128, 128, 3)), output_dtype="FLOAT"):
        self.profile, self.output_dtype = profile, output_dtype
        self.num_io_tensors, self.num_optimization_profiles = len(self.names), 2
        self.accept_shapes, self.execute_ok, self.contexts = True, True, []

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return SimpleNamespace(name="INPUT" if name == "image" else "OUTPUT")

    def get_tensor_dtype(self, name):
        return SimpleNamespace(name="UINT8" if name == "image" else self.output_dtype)

    def get_tensor_profile_shape(self, name, profile):
        return self.profile

    def create_execution_context(self, strategy=None):
        self.contexts.append(FakeContext(self, strategy))
        return self.contexts[-1]


# --- engine artifacts: what engines.build leaves beside the graphs -----------------------------------

GPU = SimpleNamespace(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def fake_engines(folder, precision: str, graphs=("whole", "tile", "score"), onnx_sha256=None) -> None:
    """Plans (arbitrary bytes) with the sidecars and index engines.build writes; no TensorRT needed."""
    from engines.artifacts import engine_path, write_index
    from engines.build import EngineBuildConfig, profiles_for
    from engines.cache import make_key, write_sidecar
    from export.manifest import load_manifest

    manifest = load_manifest(folder, precision)
    settings = EngineBuildConfig()
    for graph in graphs:
        entry = manifest.graph(graph)
        profiles = profiles_for(entry.spec.inputs, settings.dims(graph, manifest.whole_rule), settings.profile_count(graph))
        profiles = [{n: [list(s) for s in shapes] for n, shapes in p.items()} for p in profiles]
        plan = engine_path(entry.path)
        plan.write_bytes(b"not a real plan " + graph.encode())
        write_sidecar(plan, make_key(graph, precision, onnx_sha256 or entry.sha256, "10.13.2.6", GPU, profiles, {}))
    write_index(folder, precision, {g: {"file": engine_path(manifest.graph(g).path).name} for g in graphs},
                settings.settings(), "now")
