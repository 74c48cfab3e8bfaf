"""Every TensorRT and CUDA name the code calls exists in the real packages.

The logic tests run against fakes (trt_fakes.py). Here the same code paths run through ``Recording``
views of those fakes, which log each name the code reads or sets on each API object, and the log is
checked against the installed packages: runtime calls against ``tensorrt_lean`` (it imports without
a GPU), builder calls against the full ``tensorrt`` (skipped where it is not installed), CUDA calls
against ``cuda.bindings.runtime``. A call the real API lacks fails here, by name, instead of on a GPU.
Nothing real is instantiated: creating a TensorRT runtime without a GPU crashes the process.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
from trt_fakes import FakeCudart, FakeWholeEngine, Recording, fake_runtime_module, fake_tensorrt, install_fake_cuda

from engines import _trt, cuda, loaders
from engines.build import EngineBuildConfig, build_engines
from engines.cuda import DeviceInfo
from export.contract import WholeImageRule, graph_specs
from runtime.runners.trt_runner import TrtRunner

DEVICE = DeviceInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 80 << 30, "12.4", "12.4")


def _import(name):
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - a broken wheel raises anything
        pytest.skip(f"{name} is not importable here ({type(error).__name__}: {error})")


def missing(module, used: set[tuple[str, str]], root: str) -> list[str]:
    """``api.name`` of every used name the real ``module`` lacks (``root`` is the module's own api name)."""
    absent = []
    for api, name in sorted(used):
        owner = module if api == root else getattr(module, api, None)
        if owner is None or not hasattr(owner, name):
            absent.append(f"{api}.{name}")
    return absent


def runtime_calls(monkeypatch) -> set[tuple[str, str]]:
    """Load an engine as engines.loaders does, and run it as TrtRunner does (batches, CUDA graphs, timing)."""
    used: set[tuple[str, str]] = set()
    monkeypatch.setattr(loaders, "runtime_module", lambda compatible: Recording(fake_runtime_module(), "tensorrt", used))
    monkeypatch.setattr(cuda, "require_gpu", lambda: None)
    loaded = loaders.EngineFromBytes(b"plan", version_compatible=True)()
    assert isinstance(loaded.engine, Recording)
    install_fake_cuda(monkeypatch)
    for cuda_graphs, profile in ((False, None), (True, ((1, 64, 64, 3),) * 3)):
        engine = FakeWholeEngine()
        engine.profile = profile or engine.profile
        runner = TrtRunner(graph_specs(64)["whole"], lambda: SimpleNamespace(engine=Recording(engine, "ICudaEngine", used), trt=Recording(fake_runtime_module(), "tensorrt", used)),
                           cuda_graphs=cuda_graphs, timing=True)
        with runner:
            for _ in range(3):
                runner.infer({"image": np.zeros((1, 64, 64, 3), np.uint8)})
    return used


def test_runtime_calls_exist_in_tensorrt_lean(monkeypatch):
    trt = _import("tensorrt_lean")
    used = runtime_calls(monkeypatch)
    assert {("ICudaEngine", "create_execution_context"), ("IExecutionContext", "execute_async_v3")} <= used
    assert missing(trt, used, "tensorrt") == []


def builder_calls(monkeypatch, tmp_path, version: str) -> set[tuple[str, str]]:
    """Build engines for every graph as engines.build does, with a fake builder of TensorRT ``version``."""
    used: set[tuple[str, str]] = set()
    module = Recording(fake_tensorrt(version=version), "tensorrt", used)
    monkeypatch.setattr(loaders, "builder_module", lambda: module)
    monkeypatch.setattr(_trt, "builder_module", lambda: module)
    entries = {}
    for graph, spec in graph_specs(64).items():
        path = tmp_path / spec.file_name("fp16")
        path.write_bytes(b"onnx")
        entries[graph] = SimpleNamespace(path=path, sha256=graph * 8, spec=spec)
    manifest = SimpleNamespace(directory=tmp_path, precision="fp16", graph=entries.__getitem__, whole_rule=WholeImageRule())
    graphs = ("whole", "tile")  # the fake network's one input is "image"
    build_engines(manifest, EngineBuildConfig(workspace_gb=1, version_compatible=True, graphs=graphs), device=DEVICE)
    build_engines(manifest, EngineBuildConfig(tf32=True, rebuild=True, graphs=graphs), device=DEVICE)  # merges the timing cache
    return used


def test_builder_calls_exist_in_full_tensorrt(monkeypatch, tmp_path):
    trt = _import("tensorrt")
    used = builder_calls(monkeypatch, tmp_path, str(trt.__version__))  # the code path of this TensorRT version
    assert missing(trt, used, "tensorrt") == []


def test_builder_calls_are_recorded(monkeypatch, tmp_path):
    """What the full-TensorRT check above compares, so a change of the build path shows here too."""
    used = builder_calls(monkeypatch, tmp_path, "10.9.0.34")
    assert {("Builder", "build_serialized_network"), ("IBuilderConfig", "add_optimization_profile"),
            ("IOptimizationProfile", "set_shape"), ("ITimingCache", "combine"), ("OnnxParser", "parse_from_file"),
            ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")} <= used


def test_cuda_calls_exist_in_cuda_python(monkeypatch):
    cudart = cuda.cudart
    if not cudart.is_importable:
        pytest.skip(f"cuda-python is not importable here ({cudart.import_error})")
    used: set[tuple[str, str]] = set()
    monkeypatch.setattr(cuda, "cudart", Recording(FakeCudart(), "cudart", used, ignore=("is_importable", "import_error")))
    assert cuda.device_info().name == "Fake GPU"
    with cuda.CudaStream() as stream, cuda.DeviceBuffer(16, stream.handle) as device, cuda.PinnedHostBuffer(16) as host:
        host.view(np.uint8, (16,))[:] = 7
        start, done = cuda.CudaEvent(timing=True), cuda.CudaEvent()
        cuda.copy_to_device_async(device, host, 16, stream.handle)
        start.record(stream.handle)
        graph = cuda.CudaGraph(stream.handle, lambda handle: None)
        graph.launch(stream.handle)
        cuda.copy_to_host_async(host, device, 16, stream.handle)
        done.record(stream.handle)
        done.synchronize()
        done.elapsed_ms_since(start)
        stream.synchronize()
        for resource in (graph, start, done):
            resource.free()
    assert ("cudart", "cudaGraphInstantiate") in used and ("cudaMemcpyKind", "cudaMemcpyHostToDevice") in used
    assert missing(cudart.module, used, "cudart") == []
