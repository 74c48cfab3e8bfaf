"""The TensorRT runner: one engine, several execution contexts on several CUDA streams.

Each *slot* is an execution context with its own optimization profile, CUDA stream, pinned host
staging, device buffers and activation memory. ``submit`` copies the inputs into the slot's pinned
buffers, enqueues H2D copy, inference and D2H copy on the slot's stream and returns at once;
``Pending.wait`` synchronizes only then, when the host needs the numbers. Consecutive submissions
rotate over the slots, so one image's copies overlap the previous one's compute (double buffering
with 2 slots). ``infer`` splits a batch larger than the profile allows into chunks and pipelines
them the same way.

Shapes and tensor addresses are set only when they change, and every boolean TensorRT returns is
checked. Memory: device buffers grow stream-ordered (``engines.cuda.DeviceBuffer``) and pinned ones
grow by half again, retired ones being freed only when the runner releases its memory (freeing
pinned memory waits for the device); each context's activation memory is ours too
(``USER_MANAGED``), sized for the shapes set, so ``release_memory`` gives all of it back.

CUDA graphs (``cuda_graphs``, for static shapes: the tile engine) follow TensorRT's rules: a graph
is captured only right after a plain enqueue at the same shapes, it is replayed only while the
shapes stay the ones it captured, and any shape change or buffer move drops it. The Predictor pads
the last tile batch on a GPU, and ``submit_batch`` pads its last chunk here, so the tile engine sees
one shape and keeps one graph; buffers for the profile's largest shape are allocated up front.

``submit_tensors`` runs on torch tensors already on the GPU (``Capabilities.device_tensors``): the
engine reads and writes them in place on torch's current stream, so tiles are blended and pooled
on the device without a copy to the host (CUDA graphs are not used there: the addresses are torch's).

Shapes outside the engine's profile go to ``fallback`` (the same ONNX graph on ONNX Runtime) with
a note on stderr once, and ``ran_on`` then names it; or raise a TruForError naming the limit.
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

SCRATCH = "(activations)"  # a slot's device-buffer key for the context's activation memory


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
    retired: list = field(default_factory=list)  # outgrown pinned buffers, freed when memory is released
    graph: cuda.CudaGraph | None = None
    graph_key: tuple | None = None  # the shapes the graph captured
    last_plain: tuple | None = None  # the shapes of the last plain enqueue, if none changed since
    pending: Pending | None = None

    def drop_graph(self) -> None:
        if self.graph is not None:
            self.graph.free()
        self.graph, self.graph_key = None, None

    def release(self) -> None:
        """Free every buffer (after the stream's work is done); shapes and addresses are set again on next use."""
        self.stream.synchronize()
        self.pending = None
        self.drop_graph()
        for resource in (*self.device.values(), *self.host.values(), *self.retired):
            resource.free()
        for owned in (self.device, self.host, self.retired, self.shapes, self.addresses):
            owned.clear()
        self.last_plain = None

    def free(self) -> None:
        self.release()
        for event in (self.done, *self.marks):
            event.free()
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


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


class TrtRunner(BaseRunner):
    runs_on = "tensorrt"

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
        self._fell_back = False  # the latest submission ran on the fallback
        self.stage_log: list[dict[str, float]] = []  # per submission, with timing=True

    @property
    def ran_on(self) -> str:
        return self.fallback.runs_on if self._fell_back else self.runs_on

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
            for slot in self.slots:  # profiles and buffers are ready before any other stream uses them
                slot.stream.synchronize()
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
        # USER_MANAGED: the context's activation memory is a buffer of ours, sized for the shapes set
        context = engine.create_execution_context(self.loaded.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
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
        shapes = {name: high for name, (_, high) in self.limits.items()}
        for slot in self.slots:
            self._bind(slot, shapes, slot.stream.handle)

    # --- binding ---------------------------------------------------------------------------
    def _fits(self, shapes: dict[str, tuple[int, ...]]) -> str | None:
        for name, shape in shapes.items():
            low, high = self.limits[name]
            if any(not lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)):
                return f"input {name!r} shape {shape} is outside the engine's profile {low}..{high}"
        return None

    def _grow_device(self, slot: Slot, name: str, nbytes: int, stream: int) -> bool:
        """Make ``slot.device[name]`` hold ``nbytes`` (stream-ordered); True when its address changed."""
        current = slot.device.get(name)
        if current is not None and current.nbytes >= nbytes:
            return False
        if current is not None:
            current.free()
        slot.device[name] = cuda.DeviceBuffer(nbytes, stream)
        return True

    @staticmethod
    def _grow_host(slot: Slot, name: str, nbytes: int) -> None:
        current = slot.host.get(name)
        if current is not None and current.nbytes >= nbytes:
            return
        if current is not None:  # freeing pinned memory waits for the device: later, on release
            slot.retired.append(current)
        slot.host[name] = cuda.PinnedHostBuffer(max(nbytes, current.nbytes * 3 // 2 if current else 0))

    def _set_shapes(self, slot: Slot, shapes: dict[str, tuple[int, ...]], stream: int) -> dict[str, tuple]:
        """Set the input shapes that changed (dropping the CUDA graph, which is tied to the old ones) and
        size the context's activation memory; returns output name -> (dtype, shape)."""
        context, changed = slot.context, False
        for name, shape in shapes.items():
            if slot.shapes.get(name) != shape:
                if not context.set_input_shape(name, shape):
                    raise TruForError(f"{self.graph} engine: set_input_shape({name!r}, {shape}) failed")
                slot.shapes[name] = shape
                changed = True
        if changed or SCRATCH not in slot.device:
            slot.drop_graph()
            slot.last_plain = None
            size = int(context.update_device_memory_size_for_shapes())
            self._grow_device(slot, SCRATCH, size, stream)
            context.set_device_memory(slot.device[SCRATCH].ptr, size)
        outputs = {}
        for name in self.spec.output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TruForError(f"{self.graph} engine: output {name!r} shape {shape} is unresolved after setting inputs")
            outputs[name] = (self.dtypes[name], shape)
        return outputs

    def _set_address(self, slot: Slot, name: str, ptr: int) -> None:
        if slot.addresses.get(name) != ptr:
            if not slot.context.set_tensor_address(name, ptr):
                raise TruForError(f"{self.graph} engine: set_tensor_address({name!r}) failed")
            slot.addresses[name] = ptr

    def _bind(self, slot: Slot, shapes: dict[str, tuple[int, ...]], stream: int) -> dict[str, tuple]:
        """Set changed shapes, grow buffers, set changed addresses; returns output name -> (dtype, shape)."""
        outputs = self._set_shapes(slot, shapes, stream)
        sizes = {**{n: _nbytes(self.dtypes[n], s) for n, s in shapes.items()},
                 **{n: _nbytes(dtype, s) for n, (dtype, s) in outputs.items()}}
        moved = False
        for name, nbytes in sizes.items():
            moved |= self._grow_device(slot, name, nbytes, stream)
            self._grow_host(slot, name, nbytes)
        if moved:  # the graph captured the old addresses
            slot.drop_graph()
            slot.last_plain = None
        for name in sizes:
            self._set_address(slot, name, slot.device[name].ptr)
        return outputs

    # --- running ---------------------------------------------------------------------------
    def _enqueue(self, slot: Slot, stream: int) -> None:
        if not slot.context.execute_async_v3(stream):
            raise TruForError(f"{self.graph} engine: execute_async_v3 failed (see the TensorRT error above)")

    def _execute(self, slot: Slot, key: tuple) -> None:
        """Replay the graph of these shapes, capture one right after a plain run at them, or run plainly."""
        stream = slot.stream.handle
        if not self.cuda_graphs:
            return self._enqueue(slot, stream)
        if slot.graph is not None and slot.graph_key == key:
            return slot.graph.launch(stream)
        if slot.last_plain == key:
            try:
                slot.graph = cuda.CudaGraph(stream, lambda s: self._enqueue(slot, s))
            except (cuda.CudaError, TruForError) as error:
                print(f"[tensorrt] {self.graph}: CUDA graph capture failed ({error}); running without graphs",
                      file=sys.stderr)
                self.cuda_graphs = False
                return self._enqueue(slot, stream)
            slot.graph_key = key
            return slot.graph.launch(stream)
        self._enqueue(slot, stream)
        slot.last_plain = key

    def submit(self, feed: dict[str, np.ndarray]) -> Pending:
        """Start one inference (inputs within the profile) and return without waiting for it."""
        shapes = {name: array.shape for name, array in feed.items()}
        reason = self._fits(shapes)
        self._fell_back = reason is not None
        if reason is not None:
            return Pending(None, {}, False, self._fallback_for(reason).infer(feed))
        slot = self.slots[self._next]
        self._next = (self._next + 1) % len(self.slots)
        if slot.pending is not None:  # its pinned outputs are about to be reused
            slot.pending.wait()
        stream = slot.stream.handle
        outputs = self._bind(slot, shapes, stream)
        for name, array in feed.items():
            np.copyto(slot.host[name].view(array.dtype, array.shape), array)
        if self.timing:
            slot.marks[0].record(stream)
        for name, array in feed.items():
            cuda.copy_to_device_async(slot.device[name], slot.host[name], array.nbytes, stream)
        if self.timing:
            slot.marks[1].record(stream)
        self._execute(slot, tuple(sorted(shapes.items())))
        if self.timing:
            slot.marks[2].record(stream)
        for name, (dtype, shape) in outputs.items():
            cuda.copy_to_host_async(slot.host[name], slot.device[name], _nbytes(dtype, shape), stream)
        slot.done.record(stream)
        slot.pending = Pending(slot, outputs, self.timing)
        return slot.pending

    def submit_tensors(self, feed: dict) -> Callable[[], dict]:
        """Run on torch CUDA tensors in place, queued on torch's current stream (no host copy, no wait)."""
        import torch

        device = next(iter(feed.values())).device
        shapes = {name: tuple(tensor.shape) for name, tensor in feed.items()}
        reason = self._fits(shapes)
        self._fell_back = reason is not None
        if reason is not None:
            return self._fallback_for(reason).submit_tensors(feed)
        slot = self.slots[0]
        if slot.pending is not None:
            slot.pending.wait()
        stream = torch.cuda.current_stream(device).cuda_stream
        slot.stream.synchronize()  # earlier work of the slot (activation, a host-path call) is done
        feed = {name: tensor.contiguous() for name, tensor in feed.items()}
        outputs = {name: torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device=device)
                   for name, (dtype, shape) in self._set_shapes(slot, shapes, stream).items()}
        for name, tensor in (*feed.items(), *outputs.items()):
            self._set_address(slot, name, tensor.data_ptr())
        slot.last_plain = None  # the host path binds its own buffers again
        self._enqueue(slot, stream)
        return lambda: outputs

    def _fallback_for(self, reason: str) -> BaseRunner:
        """The active fallback for an input the engine cannot take (said once on stderr), or an error."""
        if self.fallback is None:
            raise TruForError(f"{self.graph} engine: {reason}; rebuild the engines with larger limits "
                              f"(python -m engines.build --help) or run this image with another backend")
        if not self._fallback_noted:
            print(f"[tensorrt] {self.graph}: {reason}; such inputs run on {self.fallback.runs_on}", file=sys.stderr)
            self._fallback_noted = True
        self.fallback.activate()
        return self.fallback

    def _chunk(self, feed: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Split along the batch axis into pieces the profile accepts (all inputs share axis 0); with
        CUDA graphs the last piece is padded with copies of its last item, so every piece has one shape."""
        batch = min(high[0] for _, high in self.limits.values())
        total = next(iter(feed.values())).shape[0]
        if total <= batch or len(feed) != 1:
            return [feed]
        chunks = [{n: a[i : i + batch] for n, a in feed.items()} for i in range(0, total, batch)]
        short = batch - total % batch
        if self.cuda_graphs and short < batch:
            chunks[-1] = {n: np.concatenate([a, np.repeat(a[-1:], short, axis=0)]) for n, a in chunks[-1].items()}
        return chunks

    def submit_batch(self, feed: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        """Start a batch of any size (in profile-sized chunks, all in flight before the first wait)
        and return the call that waits for its outputs."""
        feed = {name: np.ascontiguousarray(array) for name, array in feed.items()}
        total = next(iter(feed.values())).shape[0]
        pending = [self.submit(chunk) for chunk in self._chunk(feed)]

        def wait() -> dict[str, np.ndarray]:
            results = [p.wait() for p in pending]
            if self.timing:
                self.stage_log.extend(p.stage_ms for p in pending if p.stage_ms)
            if len(results) == 1:
                return results[0]
            return {name: np.concatenate([r[name] for r in results])[:total] for name in self.spec.output_names}

        return wait

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.submit_batch(feed)()

    def release_memory_impl(self) -> None:
        """Every slot's buffers and activation memory, after its stream's work; a static-shape engine
        gets its largest-shape buffers back at once, so its graph addresses stay fixed."""
        for slot in self.slots:
            slot.release()
        if self.cuda_graphs:
            self._allocate_for_largest()

    def deactivate_impl(self) -> None:
        for slot in self.slots:
            slot.free()
        self.slots.clear()
        if self.fallback is not None:
            self.fallback.deactivate()
        self.loaded = None  # contexts went with the slots; engine, then runtime, are released here
