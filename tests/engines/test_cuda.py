"""engines.cuda without a GPU: error unwrapping, GPU detection and stream handles, with fake cudart results."""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest

from export.errors import BackendUnavailableError
from engines import cuda


class Err(enum.IntEnum):  # cuda-python's cudaError_t is an IntEnum with these member names
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


def test_cuda_call_unwraps_values():
    assert cuda.cuda_call((Err.cudaSuccess,)) is None
    assert cuda.cuda_call((Err.cudaSuccess, 42)) == 42
    assert cuda.cuda_call((Err.cudaSuccess, 1, 2)) == (1, 2)


def test_cuda_call_raises_with_the_error_name_and_the_call():
    with pytest.raises(cuda.CudaError, match=r"cudaErrorMemoryAllocation \(2\) in cudaMalloc\(1024 bytes\)"):
        cuda.cuda_call((Err.cudaErrorMemoryAllocation, None), "cudaMalloc(1024 bytes)")


def test_cuda_call_refuses_a_non_result():
    with pytest.raises(TypeError, match="result tuple"):
        cuda.cuda_call(0)


def fake_cudart(monkeypatch, result):
    module = SimpleNamespace(is_importable=True, import_error=None, cudaGetDeviceCount=lambda: result)
    monkeypatch.setattr(cuda, "cudart", module)


@pytest.mark.parametrize("result, expected", [
    ((Err.cudaErrorInsufficientDriver, None), "cudaErrorInsufficientDriver: the NVIDIA driver is missing"),
    ((Err.cudaErrorNoDevice, None), "cudaErrorNoDevice: no CUDA-capable GPU is visible"),
    ((Err.cudaSuccess, 0), "reports no CUDA device"),
])
def test_missing_gpu_is_a_reason_not_a_crash(monkeypatch, result, expected):
    fake_cudart(monkeypatch, result)
    assert expected in cuda.gpu_unavailable_reason()
    with pytest.raises(BackendUnavailableError, match=expected.split(":")[0]):
        cuda.require_gpu()


def test_gpu_present(monkeypatch):
    fake_cudart(monkeypatch, (Err.cudaSuccess, 2))
    assert cuda.gpu_unavailable_reason() is None


def test_missing_cuda_python_is_a_reason(monkeypatch):
    monkeypatch.setattr(cuda, "cudart", SimpleNamespace(is_importable=False, import_error="No module named 'cuda'"))
    assert "pip install cuda-python" in cuda.gpu_unavailable_reason()


def test_device_info_from_properties(monkeypatch):
    props = SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\x00\x00", major=9, minor=0, totalGlobalMem=85 << 30)
    monkeypatch.setattr(cuda, "cudart", SimpleNamespace(
        is_importable=True, cudaGetDeviceCount=lambda: (Err.cudaSuccess, 1),
        cudaGetDeviceProperties=lambda index: (Err.cudaSuccess, props),
        cudaDriverGetVersion=lambda: (Err.cudaSuccess, 12040), cudaRuntimeGetVersion=lambda: (Err.cudaSuccess, 13000)))
    info = cuda.device_info()
    assert (info.name, info.compute_capability, info.driver, info.runtime) == ("NVIDIA H100 80GB HBM3", "9.0", "12.4", "13.0")


def test_stream_handles_from_callers():
    assert cuda.stream_handle(1234) == 1234
    assert cuda.stream_handle(SimpleNamespace(handle=77)) == 77  # pycuda.driver.Stream
    assert cuda.stream_handle(SimpleNamespace(cuda_stream=88)) == 88  # torch.cuda.Stream
    with pytest.raises(TypeError, match="stream handle"):
        cuda.stream_handle("default")


def test_a_callers_stream_is_used_but_never_destroyed(monkeypatch):
    destroyed = []
    monkeypatch.setattr(cuda, "cudart", SimpleNamespace(cudaStreamDestroy=lambda h: destroyed.append(h) or (Err.cudaSuccess,)))
    stream = cuda.CudaStream(SimpleNamespace(handle=55))
    assert stream.handle == 55 and not stream.owned
    stream.free()
    assert destroyed == []


def test_free_is_idempotent_and_stream_ordered(monkeypatch):
    """Device buffers come from and go back to the stream's pool: no cudaFree, which waits for the whole device."""
    calls = []
    monkeypatch.setattr(cuda, "cudart", SimpleNamespace(
        cudaMallocAsync=lambda n, s: calls.append(("malloc", n, s)) or (Err.cudaSuccess, 4096),
        cudaFreeAsync=lambda p, s: calls.append(("free", p, s)) or (Err.cudaSuccess,)))
    with cuda.DeviceBuffer(10, 7) as buffer:
        assert buffer.ptr == 4096
    buffer.free()
    assert calls == [("malloc", 10, 7), ("free", 4096, 7)] and buffer.ptr == 0
