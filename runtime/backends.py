"""The table of backends: name -> availability check and factory, and the ``auto`` choice.

``auto`` takes the first usable entry of ``AUTO_ORDER`` (fastest first): TensorRT engines on a GPU,
else ONNX Runtime when artifacts for the precision exist, else the PyTorch reference. ``triton``
(a Triton Inference Server at ``--url``) is never chosen by ``auto``: it has to be named. """

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reference.errors import BackendUnavailableError, TruForError

from .runners.base import Backend

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_TRITON_URL = "localhost:8001"  # Triton's gRPC port


@dataclass(frozen=True)
class BackendRequest:
    """What the user asked for, built once at the CLI edge."""

    backend: str = "auto"
    precision: str = "fp32"
    artifacts: Path = DEFAULT_ARTIFACTS
    checkpoint: Path | None = None
    preset: str | None = None
    device: str = "cpu"
    threads: int | None = None  # intra-op threads; None: all cores
    tile_size: int | None = None  # torch only; ONNX Runtime takes it from the manifest
    url: str = DEFAULT_TRITON_URL  # triton only: the server's gRPC address


@dataclass(frozen=True)
class BackendEntry:
    name: str
    precisions: tuple[str, ...]
    summary: str
    unavailable: Callable[[BackendRequest], str | None]  # why it cannot run here; None if it can
    create: Callable[[BackendRequest], Backend]


def build_command(request: BackendRequest) -> str:
    """The export command that makes artifacts for this request."""
    source = f"--checkpoint {request.checkpoint}" if request.checkpoint else "--checkpoint trufor.pth.tar"
    if request.preset and not request.checkpoint:
        source = f"--preset {request.preset}"
    return f"python -m export.build --precision {request.precision} {source} --out {request.artifacts} --onnx-only"


# --- torch -----------------------------------------------------------------------------------

def _torch_unavailable(request: BackendRequest) -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed"
    if request.checkpoint is None and request.preset is None:
        return "the torch backend needs --checkpoint FILE (official weights) or --preset NAME (random weights)"
    if request.checkpoint is not None and not request.checkpoint.is_file():
        return f"checkpoint {request.checkpoint} does not exist"
    if request.precision != "fp32" and not request.device.startswith("cuda"):
        return f"the torch backend runs {request.precision} on a CUDA device only (--device cuda)"
    return None


def _torch_create(request: BackendRequest) -> Backend:
    import torch

    from reference import build_trufor

    from .runners.torch_runner import DEFAULT_TILE_SIZE, TorchBackend

    if request.threads:
        torch.set_num_threads(request.threads)
    model = build_trufor(request.preset or "trufor", request.checkpoint)
    tile_size = request.tile_size or DEFAULT_TILE_SIZE
    if request.device.startswith("cuda"):
        from .runners.torch_cuda import TorchCudaBackend

        return TorchCudaBackend(model, request.device, tile_size, request.precision)
    return TorchBackend(model, request.device, tile_size)


# --- onnxruntime -----------------------------------------------------------------------------

def _ort_unavailable(request: BackendRequest) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if importlib.util.find_spec("export.manifest") is None:
        return "export.manifest is missing from this checkout, so artifacts cannot be read"
    from export.manifest import load_manifest

    try:
        # Cheap check here; OrtBackend hashes the graphs and refuses stale ones with a clear error.
        manifest = load_manifest(request.artifacts, request.precision, verify=False)
    except TruForError as error:
        return str(error)
    return _other_model(request, manifest)


def _other_model(request: BackendRequest, manifest) -> str | None:
    """Why the artifacts hold another model than the --checkpoint / --preset asked for (auto only)."""
    if request.checkpoint is None and request.preset is None:
        return None
    built_from = (
        f"checkpoint {manifest.checkpoint['path']} (sha256 {manifest.checkpoint['sha256'][:12]})"
        if manifest.checkpoint
        else "random weights"
    )
    if request.checkpoint is None:
        return f"{manifest.path} holds {built_from}, not the random weights of --preset {request.preset}"
    from export.manifest import sha256_file

    if not request.checkpoint.is_file():
        return f"checkpoint {request.checkpoint} does not exist"
    if manifest.checkpoint is None or sha256_file(request.checkpoint) != manifest.checkpoint["sha256"]:
        return f"{manifest.path} was built from {built_from}, not from --checkpoint {request.checkpoint}"
    if manifest.preset != (request.preset or "trufor"):
        return f"{manifest.path} was built for preset {manifest.preset}, not {request.preset or 'trufor'}"
    return None


def _ort_create(request: BackendRequest) -> Backend:
    from .runners.ort_runner import OrtBackend

    return OrtBackend(request.artifacts, request.precision, threads=request.threads)


# --- tensorrt --------------------------------------------------------------------------------

def _trt_unavailable(request: BackendRequest) -> str | None:
    from .runners.trt_backend import tensorrt_unavailable

    reason = tensorrt_unavailable(request.artifacts, request.precision)
    if reason is not None:
        return reason
    from export.manifest import load_manifest

    return _other_model(request, load_manifest(request.artifacts, request.precision, verify=False))


def _trt_create(request: BackendRequest) -> Backend:
    from .runners.trt_backend import TensorRTBackend

    return TensorRTBackend(request.artifacts, request.precision)


# --- triton ----------------------------------------------------------------------------------

def _triton_unavailable(request: BackendRequest) -> str | None:
    if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("grpc") is None:
        return "tritonclient with gRPC is not installed (pip install -e '.[triton]')"
    return None  # the server and its models are checked when the backend is created, naming the URL


def _triton_create(request: BackendRequest) -> Backend:
    from .runners.triton_runner import TritonBackend

    return TritonBackend(request.url, request.precision)


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry("tensorrt", PRECISIONS, "TensorRT engines on an NVIDIA GPU", _trt_unavailable, _trt_create),
        BackendEntry(
            "onnxruntime", PRECISIONS, "exported ONNX graphs (--artifacts), CPU or CUDA", _ort_unavailable, _ort_create
        ),
        BackendEntry(
            "torch", ("fp32", "fp16"), "the PyTorch reference model (--checkpoint or --preset; fp16 on CUDA)",
            _torch_unavailable, _torch_create,
        ),
        BackendEntry(
            "triton", PRECISIONS, "a Triton Inference Server at --url (python -m export.build --triton)",
            _triton_unavailable, _triton_create,
        ),
    )
}
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
BACKEND_CHOICES = ("auto", *BACKENDS)


def choose_backend(request: BackendRequest) -> BackendEntry:
    """The entry that will run ``request``; raises BackendUnavailableError saying what to do instead."""
    if request.backend != "auto":
        entry = BACKENDS[request.backend]
        if request.precision not in entry.precisions:
            raise BackendUnavailableError(
                f"--backend {entry.name} runs {', '.join(entry.precisions)} only, but --precision "
                f"{request.precision} was given"
            )
        reason = entry.unavailable(request)
        if reason:
            raise BackendUnavailableError(f"--backend {entry.name} cannot run: {reason}")
        return entry
    reasons = []
    for name in AUTO_ORDER:
        entry = BACKENDS[name]
        if request.precision not in entry.precisions:
            reasons.append(f"{name}: runs {', '.join(entry.precisions)} only, not {request.precision}")
            continue
        reason = entry.unavailable(request)
        if reason is None:
            return entry
        reasons.append(f"{name}: {reason}")
    raise BackendUnavailableError(
        "no backend can run this scan:\n  "
        + "\n  ".join(reasons)
        + f"\nEither build ONNX artifacts:  {build_command(request)}\n"
        "or run the PyTorch reference:  --backend torch --checkpoint trufor.pth.tar"
    )


def create_backend(request: BackendRequest) -> Backend:
    return choose_backend(request).create(request)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
