"""Every TensorRT and cuda-python name this project calls exists in the installed packages.

The fakes in trt_fakes.py stand in for these APIs elsewhere, so this is what ties them to the real
ones: runtime names against ``tensorrt_lean`` (installs and imports without a GPU), builder names
against the full ``tensorrt`` when importable, else against the bindings library named by
TRUFOR_TRT_BINDINGS (a tensorrt_bindings ``tensorrt.so`` or its wheel, e.g. from
``pip download tensorrt-cu13-bindings``), and CUDA names against ``cuda.bindings.runtime``.
Nothing is instantiated: creating a TensorRT runtime without a GPU crashes the process.
"""

from __future__ import annotations

import importlib
import os
import re
import zipfile

import pytest

RUNTIME_NAMES = {
    None: ["Runtime", "Logger", "TensorIOMode", "DataType", "ICudaEngine", "IExecutionContext"],
    "Runtime": ["deserialize_cuda_engine", "engine_host_code_allowed"],
    "Logger": ["WARNING"],
    "TensorIOMode": ["INPUT", "OUTPUT"],
    "DataType": ["FLOAT", "HALF", "INT8", "UINT8", "INT32", "INT64", "BOOL"],
    "ICudaEngine": ["num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                    "num_optimization_profiles", "get_tensor_profile_shape", "create_execution_context"],
    "IExecutionContext": ["set_optimization_profile_async", "set_input_shape", "get_tensor_shape",
                          "set_tensor_address", "execute_async_v3"],
    # builder-side enums and the timing cache are in the lean module too
    "BuilderFlag": ["TF32", "VERSION_COMPATIBLE"],
    "MemoryPoolType": ["WORKSPACE"],
    "ITimingCache": ["combine", "serialize"],
}
BUILDER_NAMES = {
    None: ["Builder", "OnnxParser", "NetworkDefinitionCreationFlag", "IBuilderConfig", "IOptimizationProfile",
           "INetworkDefinition", "ParserError"],
    "Builder": ["create_network", "create_builder_config", "create_optimization_profile", "build_serialized_network"],
    "OnnxParser": ["parse_from_file", "num_errors", "get_error"],
    "ParserError": ["desc", "code", "node", "node_name", "node_operator"],
    "NetworkDefinitionCreationFlag": ["STRONGLY_TYPED"],
    "IBuilderConfig": ["set_memory_pool_limit", "clear_flag", "set_flag", "add_optimization_profile",
                       "create_timing_cache", "set_timing_cache"],
    "IOptimizationProfile": ["set_shape"],
    "INetworkDefinition": ["num_inputs", "get_input"],
}
CUDA_NAMES = [
    "cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaDriverGetVersion", "cudaRuntimeGetVersion", "cudaMalloc",
    "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaMemcpyAsync", "cudaMemcpyKind", "cudaStreamCreateWithFlags",
    "cudaStreamNonBlocking", "cudaStreamSynchronize", "cudaStreamDestroy", "cudaEventCreateWithFlags",
    "cudaEventDefault", "cudaEventDisableTiming", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
    "cudaEventDestroy", "cudaStreamBeginCapture", "cudaStreamCaptureMode", "cudaStreamEndCapture",
    "cudaGraphInstantiate", "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaGraphDestroy",
]


def _import(name):
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"{name} is not importable here ({type(error).__name__}: {error})")


def _missing(module, names: dict) -> list[str]:
    missing = []
    for owner, attributes in names.items():
        target = module if owner is None else getattr(module, owner, None)
        missing += [f"{owner or module.__name__}.{a}" for a in attributes if target is None or not hasattr(target, a)]
    return missing


def test_runtime_names_exist_in_tensorrt_lean():
    trt = _import("tensorrt_lean")
    assert _missing(trt, RUNTIME_NAMES) == []


def test_runtime_and_builder_names_exist_in_full_tensorrt():
    trt = _import("tensorrt")
    assert _missing(trt, RUNTIME_NAMES) + _missing(trt, BUILDER_NAMES) == []


def _bindings_blob() -> bytes:
    path = os.environ.get("TRUFOR_TRT_BINDINGS")
    if not path or not os.path.isfile(path):
        pytest.skip("set TRUFOR_TRT_BINDINGS to a tensorrt_bindings tensorrt.so or its wheel to check builder names "
                    "without a GPU (pip download --no-deps tensorrt-cu13-bindings)")
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            library = next(n for n in wheel.namelist() if re.search(r"tensorrt_bindings/tensorrt[^/]*\.so$", n))
            return wheel.read(library)
    with open(path, "rb") as f:
        return f.read()


def test_builder_names_exist_in_the_bindings_library():
    blob = _bindings_blob()
    names = {n for owner, attributes in BUILDER_NAMES.items() for n in (attributes + ([owner] if owner else []))}
    missing = [n for n in sorted(names) if not re.search(rb"(?<![A-Za-z0-9_])" + n.encode() + rb"(?![A-Za-z0-9_])", blob)]
    assert missing == []
    assert b"Strongly typed mode is always enabled" in blob or b"STRONGLY_TYPED" in blob


def test_cuda_names_exist_in_cuda_python():
    from engines.cuda import cudart

    if not cudart.is_importable:
        pytest.skip(f"cuda-python is not importable here ({cudart.import_error})")
    assert [n for n in CUDA_NAMES if not hasattr(cudart, n)] == []
    assert hasattr(cudart.cudaStreamCaptureMode, "cudaStreamCaptureModeThreadLocal")
    assert hasattr(cudart.cudaMemcpyKind, "cudaMemcpyHostToDevice")
