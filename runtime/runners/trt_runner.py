"""The TensorRT runner: one engine, several execution contexts on several CUDA streams.

Each *slot* is an execution context with its own optimization profile, CUDA stream, pinned host
staging and device buffers. ``submit`` copies the inputs into the slot's pinned buffers, enqueues
H2D copy, inference and D2H copy on the slot's stream and returns at once; ``Pending.wait``
synchronizes only then, when the host needs the numbers. Consecutive submissions rotate over the
slots, so one image's copies overlap the previous one's compute (double buffering with 2 slots).
``infer`` splits a batch larger than the profile allows into chunks and pipelines them the same way.

Shapes and tensor addresses are set only when they change, and every boolean TensorRT returns is
checked. With ``cuda_graphs`` (static shapes: the tile engine), the second run at a given shape is
captured into a CUDA graph and later runs replay it with one launch; buffers for the profile's
largest shape are allocated up front there, so captured addresses stay valid.

Shapes outside the engine's profile go to ``fallback`` (the same ONNX graph on ONNX Runtime) with
a note on stderr once, or raise a TruForError naming the limit and the rebuild flag.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engines import cuda
from engines._trt import numpy_dtype
from export.contract import GraphSpec
from export.errors import ArtifactError
from reference.errors import TruForError

from .base import BaseRunner


@dataclass
class Slot:
    """One execution context and everything it owns."""

    context: object
    stream: cuda.CudaStream
    done: cuda.CudaEvent
    marks: list[cuda.CudaEvent]  # timing events: start, after H2D, after compute (empty without timing)
    shapes: dict = field(default_factory=dict)
    addresses: dict = field(default_factory=dict)
    device: dict = field(default_factory=dict)
    host: dict = field(default_factory=dict)
    graphs: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    pending: Pending | None = None

    def free(self) -> None:
        for resource in (*self.graphs.values(), *self.device.values(), *self.host.values(), self.done, *self.marks):
            resource.free()
        for owned in (self.graphs, self.device, self.host, self.shapes, self.addresses):
            owned.clear()
        self.stream.free()
        self.context = None


class Pending:
    """Outputs still on their way; ``wait`` blocks until they are on the host and returns them."""

    def __init__(self, slot: Slot | None, outputs: dict, timing: bool, result: dict | None = None):
        self.slot, self.outputs, self.timing = slot, outputs, timing
        self.result = result
        self.stage_ms: dict[str, float] = {}

    def wait(self) -> dict[str, np.ndarray]:
        if self.result is None:
            slot = self.slot
            slot.done.synchronize()
            # Copy out of the pinned buffers: the slot reuses them for its next submission.
            self.result = {name: slot.host[name].view(dtype, shape).copy() for name, (dtype, shape) in self.outputs.items()}
            if self.timing:
                start, h2d, compute = slot.marks
                self.stage_ms = {"h2d": h2d.elapsed_ms_since(start), "compute": compute.elapsed_ms_since(h2d),
                                 "d2h": slot.done.elapsed_ms_since(compute)}
            slot.pending = None
        return self.result


def _grow(buffers: dict, name: str, nbytes: int, kind) -> bool:
    """Make ``buffers[name]`` hold ``nbytes``; True when it was (re)allocated (its address changed)."""
    current = buffers.get(name)
    if current is not None and current.nbytes >= nbytes:
        return False
    if current is not None:
        current.free()
    buffers[name] = kind(nbytes)
    return True


class TrtRunner(BaseRunner):
    def __init__(self, spec: GraphSpec, load_engine: Callable, *, streams: int = 2, cuda_graphs: bool = False,
                 timing: bool = False, stream=None, fallback: BaseRunner | None = None, rebuild_hint: str = ""):
        super().__init__(spec)
        self.load_engine = load_engine  # () -> engines.loaders.LoadedEngine
        self.streams = 1 if stream is not None else streams
        self.caller_stream = stream
        self.cuda_graphs = cuda_graphs
        self.timing = timing
        self.fallback = fallback
        self.rebuild_hint = rebuild_hint
        self.loaded = None
        self.slots: list[Slot] = []
        self.limits: dict[str, tuple] = {}  # input name -> (min, max) shapes of the profile
        self.dtypes: dict[str, np.dtype] = {}
        self._next = 0
        self._fallback_noted = False
        self.stage_log: list[dict[str, float]] = []  # per submission, with timing=True

    # --- activation ------------------------------------------------------------------------
    def activate_impl(self) -> None:
        self.loaded = self.load_engine()
        engine = self.loaded.engine
        self._check_io(engine)
        count = min(self.streams, engine.num_optimization_profiles)
        try:
            for index in range(count):
                self.slots.append(self._make_slot(engine, index))
            if self.cuda_graphs:
                self._allocate_for_largest()
        except BaseException:
            self.deactivate_impl()
            raise

    def _check_io(self, engine) -> None:
        modes, problems = {}, []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            modes[name] = engine.get_tensor_mode(name).name  # "INPUT" / "OUTPUT"
            self.dtypes[name] = numpy_dtype(engine.get_tensor_dtype(name))
        inputs = sorted(n for n, m in modes.items() if m == "INPUT")
        outputs = sorted(n for n, m in modes.items() if m == "OUTPUT")
        expected_inputs, expected_outputs = sorted(self.spec.input_names), sorted(self.spec.output_names)
        if inputs != expected_inputs or outputs != expected_outputs:
            problems.append(f"inputs {inputs} and outputs {outputs}, expected {expected_inputs} and {expected_outputs}")
        else:
            problems += [f"{kind} {s.name!r} is {self.dtypes[s.name]}, expected {s.dtype}"
                         for kind, specs in (("input", self.spec.inputs), ("output", self.spec.outputs))
                         for s in specs if self.dtypes[s.name] != s.dtype]
        if problems:
            raise ArtifactError(f"the {self.graph} engine does not match the graph contract: {'; '.join(problems)}. "
                                f"{self.rebuild_hint}")
        for name in inputs:
            low, _, high = engine.get_tensor_profile_shape(name, 0)
            self.limits[name] = (tuple(low), tuple(high))

    def _make_slot(self, engine, profile: int) -> Slot:
        context = engine.create_execution_context()
        if context is None:
            raise cuda.CudaError(f"TensorRT could not create an execution context for the {self.graph} engine "
                                 "(out of GPU memory?)")
        stream = cuda.CudaStream(self.caller_stream)
        marks = [cuda.CudaEvent(timing=True) for _ in range(3)] if self.timing else []
        slot = Slot(context, stream, cuda.CudaEvent(timing=self.timing), marks)
        if not context.set_optimization_profile_async(profile, stream.handle):
            raise TruForError(f"{self.graph} engine: set_optimization_profile_async({profile}) failed")
        return slot

    def _allocate_for_largest(self) -> None:
        """Static-shape engines: buffers for the profile's largest shapes, so graph addresses never move."""
        feed = {name: np.zeros(high, self.dtypes[name]) for name, (_, high) in self.limits.items()}
        for slot in self.slots:
            self._bind(slot, feed)

    # --- running ---------------------------------------------------------------------------
    def _fits(self, feed: dict[str, np.ndarray]) -> str | None:
        for name, array in feed.items():
            low, high = self.limits[name]
            if any(not lo <= d <= hi for d, lo, hi in zip(array.shape, low, high, strict=True)):
                return f"input {name!r} shape {array.shape} is outside the engine's profile {low}..{high}"
        return None

    def _bind(self, slot: Slot, feed: dict[str, np.ndarray]) -> dict[str, tuple]:
        """Set changed shapes, grow buffers, set changed addresses; returns output name -> (dtype, shape)."""
        context, moved = slot.context, False
        for name, array in feed.items():
            if slot.shapes.get(name) != array.shape:
                if not context.set_input_shape(name, array.shape):
                    raise TruForError(f"{self.graph} engine: set_input_shape({name!r}, {array.shape}) failed")
                slot.shapes[name] = array.shape
            moved |= _grow(slot.device, name, array.nbytes, cuda.DeviceBuffer)
            _grow(slot.host, name, array.nbytes, cuda.PinnedHostBuffer)
        outputs = {}
        for name in self.spec.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TruForError(f"{self.graph} engine: output {name!r} shape {shape} is unresolved after setting inputs")
            nbytes = int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize
            moved |= _grow(slot.device, name, nbytes, cuda.DeviceBuffer)
            _grow(slot.host, name, nbytes, cuda.PinnedHostBuffer)
            outputs[name] = (self.dtypes[name], shape)
        if moved:
            for graph in slot.graphs.values():
                graph.free()
            slot.graphs.clear()
        for name, buffer in slot.device.items():
            if slot.addresses.get(name) != buffer.ptr:
                if not context.set_tensor_address(name, buffer.ptr):
                    raise TruForError(f"{self.graph} engine: set_tensor_address({name!r}) failed")
                slot.addresses[name] = buffer.ptr
        return outputs

    def _enqueue(self, slot: Slot, stream: int) -> None:
        if not slot.context.execute_async_v3(stream):
            raise TruForError(f"{self.graph} engine: execute_async_v3 failed (see the TensorRT error above)")

    def _execute(self, slot: Slot, key: tuple) -> None:
        stream = slot.stream.handle
        if not self.cuda_graphs:
            return self._enqueue(slot, stream)
        graph = slot.graphs.get(key)
        if graph is None and key in slot.seen:  # TensorRT wants one plain run per shape before capture
            try:
                graph = slot.graphs[key] = cuda.CudaGraph(stream, lambda s: self._enqueue(slot, s))
            except (cuda.CudaError, TruForError) as error:
                print(f"[tensorrt] {self.graph}: CUDA graph capture failed ({error}); running without graphs",
                      file=sys.stderr)
                self.cuda_graphs = False
                return self._enqueue(slot, stream)
        if graph is None:
            slot.seen.add(key)
            return self._enqueue(slot, stream)
        graph.launch(stream)

    def submit(self, feed: dict[str, np.ndarray]) -> Pending:
        """Start one inference (inputs within the profile) and return without waiting for it."""
        reason = self._fits(feed)
        if reason is not None:
            return Pending(None, {}, False, self._run_fallback(feed, reason))
        slot = self.slots[self._next]
        self._next = (self._next + 1) % len(self.slots)
        if slot.pending is not None:  # its pinned outputs are about to be reused
            slot.pending.wait()
        outputs = self._bind(slot, feed)
        stream = slot.stream.handle
        for name, array in feed.items():
            np.copyto(slot.host[name].view(array.dtype, array.shape), array)
        if self.timing:
            slot.marks[0].record(stream)
        for name, array in feed.items():
            cuda.copy_to_device_async(slot.device[name], slot.host[name], array.nbytes, stream)
        if self.timing:
            slot.marks[1].record(stream)
        self._execute(slot, tuple(sorted((n, a.shape) for n, a in feed.items())))
        if self.timing:
            slot.marks[2].record(stream)
        for name, (dtype, shape) in outputs.items():
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            cuda.copy_to_host_async(slot.host[name], slot.device[name], nbytes, stream)
        slot.done.record(stream)
        slot.pending = Pending(slot, outputs, self.timing)
        return slot.pending

    def _run_fallback(self, feed: dict[str, np.ndarray], reason: str) -> dict[str, np.ndarray]:
        if self.fallback is None:
            raise TruForError(f"{self.graph} engine: {reason}; rebuild the engines with larger limits "
                              f"(python -m engines.build --help) or run this image with another backend")
        if not self._fallback_noted:
            print(f"[tensorrt] {self.graph}: {reason}; such inputs run on ONNX Runtime", file=sys.stderr)
            self._fallback_noted = True
        self.fallback.activate()
        return self.fallback.infer(feed)

    def _chunk(self, feed: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Split along the batch axis into pieces the profile accepts (all inputs share axis 0)."""
        batch = min(high[0] for _, high in self.limits.values())
        total = next(iter(feed.values())).shape[0]
        if total <= batch or len(feed) != 1:
            return [feed]
        return [{n: a[i : i + batch] for n, a in feed.items()} for i in range(0, total, batch)]

    def submit_batch(self, feed: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        """Start a batch of any size (in profile-sized chunks, all in flight before the first wait)
        and return the call that waits for its outputs."""
        feed = {name: np.ascontiguousarray(array) for name, array in feed.items()}
        pending = [self.submit(chunk) for chunk in self._chunk(feed)]

        def wait() -> dict[str, np.ndarray]:
            results = [p.wait() for p in pending]
            if self.timing:
                self.stage_log.extend(p.stage_ms for p in pending if p.stage_ms)
            if len(results) == 1:
                return results[0]
            return {name: np.concatenate([r[name] for r in results]) for name in self.spec.output_names}

        return wait

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.submit_batch(feed)()

    def deactivate_impl(self) -> None:
        for slot in self.slots:
            try:
                slot.stream.synchronize()
            finally:
                slot.free()
        self.slots.clear()
        if self.fallback is not None:
            self.fallback.deactivate()
        self.loaded = None  # contexts went with the slots; engine, then runtime, are released here
