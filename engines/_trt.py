"""The one place that imports TensorRT, and the one function that branches on its version.

TensorRT 10 and 11 both build our graphs as *strongly typed* networks: the ONNX graph carries the
precision (float16 casts with float32 islands, explicit int8 Q/DQ), so no FP16/INT8 builder flag,
calibrator or per-layer precision is ever set. TensorRT 10 needs the STRONGLY_TYPED creation flag
for that; TensorRT 11 removed the weakly typed mode (its flag is deprecated and ignored).
``network_policy`` holds that difference, and nothing else in the project looks at the version.

Runtimes: the full ``tensorrt`` package deserializes any engine its version built; the lean
runtime (``tensorrt_lean``, no builder) only runs engines built version-compatible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from export.errors import BackendUnavailableError

from .importer import LazyModule, lazy_import

MIN_MAJOR = 10
# The extras pin TensorRT and cuda-python to one CUDA major each (README.md, "On a GPU"): the driver decides.
INSTALL = "pip install -e '.[gpu]' (CUDA 13, driver >= 580) or -e '.[gpu-cu12]' (CUDA 12, driver >= 525)"
tensorrt = lazy_import("tensorrt", install=f"{INSTALL} on a machine with an NVIDIA GPU and driver")
tensorrt_lean = lazy_import(
    "tensorrt_lean", install="pip install tensorrt-lean-cu13 (driver >= 580) or tensorrt-lean-cu12 (driver >= 525)"
)

# TensorRT DataType member name -> numpy dtype, for the tensor types our graphs' I/O can have.
_NUMPY_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


def version_of(module) -> tuple[int, int, int]:
    """(major, minor, patch) of a tensorrt-like module's ``__version__`` (e.g. "10.13.2.6")."""
    text = str(getattr(module, "__version__", ""))
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise BackendUnavailableError(f"cannot read the TensorRT version from {text!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


@dataclass(frozen=True)
class NetworkPolicy:
    """How to create a network so that precision comes from the graph, for one TensorRT version."""

    version: tuple[int, int, int]
    creation_flags: int  # bit mask for Builder.create_network
    description: str


def network_policy(trt) -> NetworkPolicy:
    """The version branch: strongly typed on 10 (explicit flag) and 11 (always; flag ignored)."""
    version = version_of(trt)
    major = version[0]
    if major < MIN_MAJOR:
        raise BackendUnavailableError(
            f"TensorRT {'.'.join(map(str, version))} is too old: the engines need TensorRT >= {MIN_MAJOR} "
            f"(strongly typed networks, name-based I/O); {INSTALL}"
        )
    if major == 10:
        flag = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return NetworkPolicy(
            version,
            1 << flag,
            "TensorRT 10: STRONGLY_TYPED network; precision from the graph's casts and Q/DQ, no FP16/INT8 flags",
        )
    return NetworkPolicy(
        version,
        0,
        f"TensorRT {major}: networks are always strongly typed; precision from the graph's casts and Q/DQ",
    )


def builder_module() -> LazyModule:
    """The full ``tensorrt`` package (builder and ONNX parser); raises when it is missing or too old."""
    network_policy(tensorrt.module)  # imports it (raising why it cannot), then checks the version
    return tensorrt


def runtime_module(version_compatible: bool = False):
    """The package that deserializes engines: full ``tensorrt`` first, else the lean runtime.

    The lean runtime runs only version-compatible engines, so a plain engine without the full
    package is refused here with what to install or how to rebuild.
    """
    if tensorrt.is_importable:
        return tensorrt
    if not tensorrt_lean.is_importable:
        raise BackendUnavailableError(
            "no TensorRT runtime could be imported; errors were: "
            f"tensorrt: {tensorrt.import_error}; tensorrt_lean: {tensorrt_lean.import_error}. "
            f"{INSTALL} (or tensorrt-lean-cu13/-cu12 for version-compatible engines)"
        )
    if not version_compatible:
        raise BackendUnavailableError(
            "only the lean TensorRT runtime (tensorrt_lean) is installed, and it runs only engines built "
            f"version-compatible; {INSTALL}, or rebuild with python -m engines.build "
            "--version-compatible on a machine with the full package"
        )
    return tensorrt_lean


_LOGGERS: dict[int, tuple] = {}  # id(module) -> (module, logger); the module is kept so its id stays its own


def logger(module):
    """One WARNING-level logger per TensorRT module (TensorRT wants a single logger per process)."""
    module = module.module if isinstance(module, LazyModule) else module
    if id(module) not in _LOGGERS:
        _LOGGERS[id(module)] = (module, module.Logger(module.Logger.WARNING))
    return _LOGGERS[id(module)][1]


def numpy_dtype(dtype) -> np.dtype:
    """numpy dtype of a TensorRT ``DataType`` (by member name, so any TensorRT module works)."""
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    try:
        return np.dtype(_NUMPY_DTYPES[name])
    except KeyError:
        raise BackendUnavailableError(f"TensorRT tensor type {name} has no numpy equivalent here") from None
