"""CUDA resources through cuda-python: device buffers, pinned host buffers, streams, events, graphs.

cuda-python installs from wheels and imports without a driver, so a missing GPU shows up as an
error code from ``cudaGetDeviceCount`` (``require_gpu`` turns it into BackendUnavailableError
with the reason) instead of an import crash. Every call goes through ``cuda_call``, which unwraps
cuda-python's ``(error, value...)`` tuples and raises ``CudaError`` naming the error.

Each class owns exactly one resource and frees it in an idempotent ``free()`` (also on ``with``
exit). Nothing here creates a CUDA context: the runtime API uses the context current on the
thread (a caller's pushed pycuda context, say) or else the device's primary context, the one
PyTorch and TensorRT use too. Streams made by a caller (pycuda ``.handle``, torch
``.cuda_stream``, a plain int) are accepted by ``stream_handle`` and never destroyed here.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from export.errors import BackendUnavailableError

from .errors import CudaError
from .importer import lazy_import

cudart = lazy_import("cuda.bindings.runtime", "cuda.cudart", install="pip install cuda-python")


def _error_name(error) -> str:
    return getattr(error, "name", None) or str(error)


def cuda_call(result, what: str = ""):
    """The value(s) of a cuda-python call: ``(err,)`` -> None, ``(err, v)`` -> v, longer -> tuple."""
    if not isinstance(result, tuple) or not result:
        raise TypeError(f"expected a cuda-python result tuple (error, values...), got {result!r}")
    error, values = result[0], result[1:]
    if int(error) != 0:
        where = f" in {what}" if what else ""
        raise CudaError(f"CUDA error {_error_name(error)} ({int(error)}){where}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# --- the device ------------------------------------------------------------------------------

_NO_GPU_HINTS = {
    "cudaErrorNoDevice": "no CUDA-capable GPU is visible (check CUDA_VISIBLE_DEVICES)",
    "cudaErrorInsufficientDriver": "the NVIDIA driver is missing or older than this CUDA runtime",
}


def gpu_unavailable_reason() -> str | None:
    """Why no CUDA GPU can be used here, or None when at least one can."""
    if not cudart.is_importable:
        return f"cuda-python is not importable ({cudart.import_error}); pip install cuda-python"
    result = cudart.cudaGetDeviceCount()
    error, count = result[0], (result[1] if len(result) > 1 else 0)
    if int(error) != 0:
        name = _error_name(error)
        return f"cudaGetDeviceCount failed with {name}: {_NO_GPU_HINTS.get(name, 'no usable CUDA device')}"
    if not count:
        return "cudaGetDeviceCount reports no CUDA device"
    return None


def require_gpu() -> None:
    reason = gpu_unavailable_reason()
    if reason:
        raise BackendUnavailableError(reason)


def _version_text(number: int) -> str:
    """12040 -> "12.4" (CUDA's encoding: 1000 * major + 10 * minor)."""
    return f"{number // 1000}.{number % 1000 // 10}"


@dataclass(frozen=True)
class DeviceInfo:
    """What an engine is specific to (name and compute capability), plus versions for reports."""

    index: int
    name: str
    compute_capability: str  # "9.0"
    total_memory: int  # bytes
    driver: str  # CUDA version the driver supports, "12.4"
    runtime: str  # CUDA runtime version of cuda-python's library


def device_info(index: int = 0) -> DeviceInfo:
    require_gpu()
    props = cuda_call(cudart.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(
        index=index,
        name=name.rstrip("\x00").strip(),
        compute_capability=f"{props.major}.{props.minor}",
        total_memory=int(props.totalGlobalMem),
        driver=_version_text(cuda_call(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")),
        runtime=_version_text(cuda_call(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
    )


# --- memory ----------------------------------------------------------------------------------

class _Owned:
    """One resource, freed once by ``free`` (idempotent) or at the end of a ``with`` block."""

    def free(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()


class DeviceBuffer(_Owned):
    """``nbytes`` of device memory at ``ptr``, allocated and freed in order on ``stream``.

    Stream-ordered (cudaMallocAsync / cudaFreeAsync): freeing a buffer to grow it never waits for the
    whole device, as cudaFree does; the memory returns to the pool once the stream's earlier work
    that uses it is done.
    """

    def __init__(self, nbytes: int, stream: int):
        self.nbytes = int(nbytes)
        self.stream = stream
        allocated = cudart.cudaMallocAsync(max(self.nbytes, 1), stream)
        self.ptr = int(cuda_call(allocated, f"cudaMallocAsync({self.nbytes} bytes)"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            cuda_call(cudart.cudaFreeAsync(ptr, self.stream), "cudaFreeAsync")


class PinnedHostBuffer(_Owned):
    """Page-locked host memory: the only kind cudaMemcpyAsync copies without blocking the host."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(cuda_call(cudart.cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes} bytes)"))

    def view(self, dtype, shape) -> np.ndarray:
        """A numpy array over the first bytes of the buffer (no copy; valid until ``free``)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        assert self.ptr and nbytes <= self.nbytes, (nbytes, self.nbytes)
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=nbytes // dtype.itemsize).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            cuda_call(cudart.cudaFreeHost(ptr), "cudaFreeHost")


def copy_to_device_async(dst: DeviceBuffer, src: PinnedHostBuffer, nbytes: int, stream: int) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    cuda_call(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream), f"H2D copy of {nbytes} bytes")


def copy_to_host_async(dst: PinnedHostBuffer, src: DeviceBuffer, nbytes: int, stream: int) -> None:
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    cuda_call(cudart.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream), f"D2H copy of {nbytes} bytes")


# --- streams, events, graphs -----------------------------------------------------------------

def stream_handle(stream) -> int:
    """The raw ``cudaStream_t`` of a CudaStream, pycuda Stream (``.handle``), torch stream
    (``.cuda_stream``), cuda-python stream object or plain int."""
    for attribute in ("handle", "cuda_stream"):
        value = getattr(stream, attribute, None)
        if value is not None:
            return int(value)
    try:
        return int(stream)
    except (TypeError, ValueError):
        raise TypeError(f"cannot get a CUDA stream handle from {type(stream).__name__}") from None


class CudaStream(_Owned):
    """A non-blocking stream, or a caller's stream (``handle``) that is used but never destroyed."""

    def __init__(self, handle=None):
        self.owned = handle is None
        if self.owned:
            created = cuda_call(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate")
            self.handle = int(created)
        else:
            self.handle = stream_handle(handle)

    def synchronize(self) -> None:
        cuda_call(cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def free(self) -> None:
        if self.handle and self.owned:
            handle, self.handle = self.handle, 0
            cuda_call(cudart.cudaStreamDestroy(handle), "cudaStreamDestroy")


class CudaEvent(_Owned):
    """An event marking a point in a stream; timing events also give elapsed milliseconds."""

    def __init__(self, timing: bool = False):
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self.event = cuda_call(cudart.cudaEventCreateWithFlags(flags), "cudaEventCreate")

    def record(self, stream: int) -> None:
        cuda_call(cudart.cudaEventRecord(self.event, stream), "cudaEventRecord")

    def synchronize(self) -> None:
        cuda_call(cudart.cudaEventSynchronize(self.event), "cudaEventSynchronize")

    def elapsed_ms_since(self, start: CudaEvent) -> float:
        return float(cuda_call(cudart.cudaEventElapsedTime(start.event, self.event), "cudaEventElapsedTime"))

    def free(self) -> None:
        if self.event is not None:
            event, self.event = self.event, None
            cuda_call(cudart.cudaEventDestroy(event), "cudaEventDestroy")


class CudaGraph(_Owned):
    """The work ``enqueue(stream)`` puts on a stream, captured once and replayed with one launch.

    Shapes and buffer addresses are baked in: the owner drops the graph when either changes.
    """

    def __init__(self, stream: int, enqueue):
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            enqueue(stream)
        finally:  # end the capture even when enqueue failed, or the stream stays unusable
            graph = cuda_call(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        self.graph = graph
        try:
            self.exec = cuda_call(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError:
            cuda_call(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            self.graph = None
            raise

    def launch(self, stream: int) -> None:
        cuda_call(cudart.cudaGraphLaunch(self.exec, stream), "cudaGraphLaunch")

    def free(self) -> None:
        if self.graph is not None:
            graph, graph_exec, self.graph, self.exec = self.graph, self.exec, None, None
            cuda_call(cudart.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
            cuda_call(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
