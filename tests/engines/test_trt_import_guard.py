"""The lazy import guard and the TensorRT version branch, with fake modules (no TensorRT needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engines import _trt
from engines.importer import lazy_import
from export.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parents[2]


def test_lazy_import_fails_on_first_use_with_the_reason():
    module = lazy_import("trufor_no_such_module", install="pip install trufor-no-such-module")
    assert not module.is_importable  # checking does not raise
    with pytest.raises(BackendUnavailableError) as info:
        _ = module.Builder
    message = str(info.value)
    assert "trufor_no_such_module is required but could not be imported; error was:" in message
    assert "ModuleNotFoundError" in message and "pip install trufor-no-such-module" in message
    assert "ModuleNotFoundError" in module.import_error


def test_lazy_import_takes_the_first_candidate_that_imports():
    module = lazy_import("trufor_no_such_module", "json")
    assert module.dumps([1]) == "[1]"
    assert module.module is sys.modules["json"]


def test_lazy_import_does_not_import_for_dunder_lookups():
    module = lazy_import("trufor_no_such_module")
    assert not hasattr(module, "__wrapped__")  # introspection (pytest, copy, inspect) stays quiet
    assert "not loaded" in repr(module)


def test_importing_the_packages_needs_neither_tensorrt_nor_cuda():
    """In a fresh process where TensorRT and cuda-python cannot be imported at all, every module that
    uses them imports, imports none of them, and says why on first use."""
    script = """
import sys
for name in ("tensorrt", "tensorrt_lean", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
    sys.modules[name] = None  # import raises ImportError
import engines.build, engines.cuda, engines.triton, runtime.backends, runtime.runners.trt_backend
assert not [m for m in ("tensorrt", "tensorrt_lean", "cuda") if sys.modules.get(m) is not None]
from engines import _trt, cuda
print(cuda.gpu_unavailable_reason())
try:
    _trt.builder_module()
except Exception as error:
    print(type(error).__name__, error)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    gpu_reason, builder_error = done.stdout.splitlines()
    assert gpu_reason.startswith("cuda-python is not importable") and "pip install cuda-python" in gpu_reason
    assert builder_error.startswith("BackendUnavailableError tensorrt is required but could not be imported")


def fake(version, **attributes):
    return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=5),
                           **attributes)


def test_tensorrt_10_sets_the_strongly_typed_flag():
    policy = _trt.network_policy(fake("10.13.2.6"))
    assert policy.version == (10, 13, 2)
    assert policy.creation_flags == 1 << 5
    assert "STRONGLY_TYPED" in policy.description


@pytest.mark.parametrize("version", ["11.0.0.1", "11.4.0.106", "12.1"])
def test_tensorrt_11_and_later_are_always_strongly_typed(version):
    module = SimpleNamespace(__version__=version)  # may lack the (deprecated) flag entirely
    policy = _trt.network_policy(module)
    assert policy.creation_flags == 0
    assert "always strongly typed" in policy.description


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0.1"])
def test_tensorrt_older_than_10_is_refused(version):
    with pytest.raises(BackendUnavailableError, match=r"TensorRT >= 10"):
        _trt.network_policy(fake(version))


def test_unreadable_version_is_refused():
    with pytest.raises(BackendUnavailableError, match="cannot read the TensorRT version"):
        _trt.version_of(SimpleNamespace(__version__="dev"))


def test_numpy_dtype_by_member_name():
    assert _trt.numpy_dtype(SimpleNamespace(name="HALF")) == np.float16
    assert _trt.numpy_dtype(SimpleNamespace(name="UINT8")) == np.uint8
    with pytest.raises(BackendUnavailableError, match="FP8"):
        _trt.numpy_dtype(SimpleNamespace(name="FP8"))


class FakeLazy:
    def __init__(self, importable, name):
        self.is_importable, self.import_error, self.name = importable, None if importable else "missing", name


def test_runtime_prefers_full_tensorrt(monkeypatch):
    monkeypatch.setattr(_trt, "tensorrt", FakeLazy(True, "full"))
    monkeypatch.setattr(_trt, "tensorrt_lean", FakeLazy(True, "lean"))
    assert _trt.runtime_module().name == "full"


def test_lean_runtime_only_for_version_compatible_engines(monkeypatch):
    monkeypatch.setattr(_trt, "tensorrt", FakeLazy(False, "full"))
    monkeypatch.setattr(_trt, "tensorrt_lean", FakeLazy(True, "lean"))
    assert _trt.runtime_module(version_compatible=True).name == "lean"
    with pytest.raises(BackendUnavailableError, match="version-compatible"):
        _trt.runtime_module(version_compatible=False)


def test_no_runtime_at_all_names_both_packages(monkeypatch):
    monkeypatch.setattr(_trt, "tensorrt", FakeLazy(False, "full"))
    monkeypatch.setattr(_trt, "tensorrt_lean", FakeLazy(False, "lean"))
    with pytest.raises(BackendUnavailableError, match="tensorrt_lean"):
        _trt.runtime_module(version_compatible=True)
