"""The registry of backends, the one place that lists them: ``--backend`` and its ``auto`` choice read it.

Each entry is a ``Backend`` subclass from ``runtime.runners``, which says what it is (name, summary,
precisions, the flags it reads) and answers ``usage_problem``, ``unavailable`` and ``create``.
``auto`` takes the first usable entry whose ``auto`` is set, in the order below (fastest first):
TensorRT engines on a GPU, else ONNX Runtime when artifacts for the precision exist, else the
PyTorch reference. A server (``triton``) is never chosen by ``auto``: it has to be named.
``--precision auto`` is resolved with the backend: each candidate says what it runs fastest here
(``Backend.pick_precision``) and is checked at that precision.
"""

from __future__ import annotations

import shlex

from dataclasses import replace

from export.auto_precision import AUTO, PrecisionChoice
from export.errors import BackendUnavailableError
from reference.weights import OFFICIAL, ResolvedWeights

from .errors import UsageError
from .runners.base import DEFAULT_ARTIFACTS, DEFAULT_SERVER_URL, Backend, BackendRequest, cpu_count
from .runners.ort_runner import OrtBackend
from .runners.torch_runner import TorchBackend
from .runners.triton_runner import TritonBackend
from .runners.trt_backend import TensorRTBackend

BACKENDS: dict[str, type[Backend]] = {
    backend.name: backend
    for backend in (
        TensorRTBackend,
        OrtBackend,
        TorchBackend,
        TritonBackend,
    )
}
__all__ = [  # with what the CLIs take from runners.base through here
    "BACKENDS", "DEFAULT_ARTIFACTS", "DEFAULT_SERVER_URL", "BackendRequest", "auto_candidates", "backend_help",
    "build_command", "check_request", "choices", "choose", "choose_backend", "cpu_count", "create_backend", "readers",
    "with_precision",
]  # fmt: skip


def choices() -> tuple[str, ...]:
    """--backend's choices."""
    return ("auto", *BACKENDS)


def auto_candidates() -> list[type[Backend]]:
    """What ``auto`` tries, in order."""
    return [backend for backend in BACKENDS.values() if backend.auto]


def readers(flag: str) -> str:
    """``--backend`` names that read ``flag``, for help and error messages: "tensorrt, onnxruntime or torch"."""
    names = [name for name, backend in BACKENDS.items() if flag in backend.flags]
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def backend_help() -> str:
    auto = ", then ".join(f"{backend.name} ({backend.summary})" for backend in auto_candidates())
    named = "; or ".join(f"{b.name} ({b.summary})" for b in BACKENDS.values() if not b.auto)
    return f"auto (default) takes the fastest one usable here: {auto}" + (f"; or {named}, never chosen by auto" if named else "")


def check_request(request: BackendRequest, given: list[str]) -> None:
    """Refuse model flags (``given``) the chosen backend does not read, and precisions it never runs,
    with a UsageError naming both sides; with ``auto``, the flags must all be read by one candidate."""
    if request.backend != "auto":
        backend = BACKENDS[request.backend]
        for flag in given:
            if flag not in backend.flags:
                raise UsageError(f"{flag} is read by --backend {readers(flag)} only, but --backend {backend.name} "
                                 f"was given; {backend.model_source}")
        if request.precision == AUTO:
            return  # resolved with the backend (``choose``): a server is asked what it serves
        problem = backend.usage_problem(request)
        if problem:
            raise UsageError(f"--backend {backend.name} {problem}")
        return
    candidates = auto_candidates()
    if any(set(given) <= set(backend.flags) for backend in candidates):
        return
    unread = [flag for flag in given if not any(flag in backend.flags for backend in candidates)]
    if unread:
        raise UsageError(f"{unread[0]} is read by --backend {readers(unread[0])} only, but --backend auto was given "
                         f"(it picks among {', '.join(b.name for b in candidates)}); pass --backend {readers(unread[0])}")
    raise UsageError(
        f"{' and '.join(given)} name two different models ("
        + "; ".join(f"{flag}: --backend {readers(flag)}" for flag in given)
        + "); pick one with --backend"
    )


def build_command(request: BackendRequest) -> str:
    """The export command that makes artifacts for this request."""
    if isinstance(request.weights, ResolvedWeights):
        source = list(request.weights.argv)
    elif request.weights is not None:
        source = ["--weights", str(request.weights)]
    elif request.random_weights:
        source = ["--random-weights", "--preset", request.preset or "trufor"]
    else:  # the project's default model, export.build's default too
        source = ["--preset", request.preset] if request.preset else []
    return shlex.join(["python", "-m", "export.build", "--precision", request.precision, *source,
                       "--out", str(request.artifacts), "--onnx-only"])


def with_precision(backend: type[Backend], request: BackendRequest) -> tuple[BackendRequest, PrecisionChoice | None]:
    """``request`` at the precision ``backend`` would run it: ``--precision auto`` becomes what runs fastest
    there (``Backend.pick_precision``), returned with its reason; any other precision stays."""
    if request.precision != AUTO:
        return request, None
    choice = backend.pick_precision(request)
    return replace(request, precision=choice.precision), choice


def choose_backend(request: BackendRequest) -> type[Backend]:
    """The backend that will run ``request``; raises BackendUnavailableError saying what to do instead."""
    return choose(request)[0]


def choose(request: BackendRequest) -> tuple[type[Backend], BackendRequest, PrecisionChoice | None]:
    """The backend that will run ``request``, the request at the precision it runs, and what ``--precision
    auto`` chose (None when a precision was given); BackendUnavailableError saying what to do instead."""
    if request.backend != "auto":
        backend = BACKENDS[request.backend]
        resolved, choice = with_precision(backend, request)
        reason = backend.usage_problem(resolved)
        if reason:
            raise BackendUnavailableError(f"--backend {backend.name} {reason}")
        reason = backend.unavailable(resolved)
        if reason:
            raise BackendUnavailableError(f"--backend {backend.name} cannot run: {reason}")
        return backend, resolved, choice
    reasons = []
    for backend in auto_candidates():
        resolved, choice = with_precision(backend, request)
        reason = backend.usage_problem(resolved) or backend.unavailable(resolved)
        if reason is None:
            return backend, resolved, choice
        reasons.append(f"{backend.name}{f' at {resolved.precision}' if choice else ''}: {reason}")
    raise BackendUnavailableError(
        "no backend can run this scan:\n  "
        + "\n  ".join(reasons)
        + f"\nEither build ONNX artifacts:  {build_command(request)}\n"
        f"or run the PyTorch reference:  --backend torch --weights {OFFICIAL} (or a checkpoint file)"
    )


def create_backend(request: BackendRequest) -> Backend:
    """The backend ``choose`` picks, created at the precision it resolved (``precision_choice`` says why, after auto)."""
    backend, resolved, choice = choose(request)
    created = backend.create(resolved)
    created.precision_choice = choice
    return created
