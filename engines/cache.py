"""The engine cache: each ``.engine`` plan has a JSON sidecar saying what it was built for.

A TensorRT plan runs only on the GPU model and TensorRT version that built it, and is only right
for the ONNX graph it came from. The sidecar (``<plan>.json``; the plan stays a plain plan that
trtexec and Polygraphy can read) records the ``EngineKey`` (GPU name and compute capability,
TensorRT version, ONNX sha256, precision, optimization profiles, builder options) and the plan's
own sha256 and size. ``check_engine`` compares all of it with what is wanted here and refuses a
missing, corrupt or mismatched engine with an ``EngineCacheError`` that lists every difference
and the command that rebuilds it: never a silent reuse, never a silent rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from reference.outputs import atomic_write_text

from .errors import EngineCacheError

SIDECAR_FORMAT = 1
PLAN_SUFFIX = ".engine"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's validity depends on. ``profiles``: input name -> [min, opt, max] per profile."""

    graph: str  # "whole", "tile", "score"
    precision: str
    onnx_sha256: str
    tensorrt_version: str  # "10.13.2.6"
    gpu_name: str
    compute_capability: str  # "9.0"
    profiles: tuple  # JSON-like: ({input: [[min], [opt], [max]]}, ...) one dict per profile
    options: tuple  # sorted (name, value) pairs of builder options that change the plan

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [dict(p) for p in self.profiles]
        data["options"] = dict(self.options)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineKey:
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise KeyError(", ".join(missing))
        values = {f.name: data[f.name] for f in fields(cls)}
        values["profiles"] = tuple(_freeze(p) for p in data["profiles"])
        values["options"] = tuple(sorted((k, _freeze(v)) for k, v in data["options"].items()))
        return cls(**values)


def _freeze(value):
    """JSON lists/dicts -> tuples, so keys read back from JSON compare equal to keys made in code."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def make_key(graph: str, precision: str, onnx_sha256: str, tensorrt_version: str, device, profiles, options) -> EngineKey:
    """An EngineKey; ``device`` is anything with ``name`` and ``compute_capability`` (engines.cuda.DeviceInfo)."""
    return EngineKey(
        graph=graph,
        precision=precision,
        onnx_sha256=onnx_sha256,
        tensorrt_version=tensorrt_version,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        profiles=tuple(_freeze(p) for p in profiles),
        options=tuple(sorted((k, _freeze(v)) for k, v in dict(options).items())),
    )


def sidecar_path(plan: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(plan)}.json")


def plan_digest(plan: str | os.PathLike, chunk: int = 1 << 22) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(plan, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def write_sidecar(plan: str | os.PathLike, key: EngineKey, extra: dict[str, Any] | None = None) -> Path:
    """Record ``key`` and the plan's digest beside the plan, atomically (write the plan first)."""
    sha256, size = plan_digest(plan)
    data = {"format": SIDECAR_FORMAT, "key": key.to_json(), "plan_sha256": sha256, "plan_bytes": size, **(extra or {})}
    path = sidecar_path(plan)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_sidecar(plan: str | os.PathLike, rebuild_hint: str) -> dict[str, Any]:
    """The sidecar of ``plan``, with ``key`` parsed; EngineCacheError when missing or unreadable."""
    path = sidecar_path(plan)
    if not Path(plan).is_file():
        raise EngineCacheError(f"engine {plan} does not exist; build it with: {rebuild_hint}")
    if not path.is_file():
        raise EngineCacheError(
            f"engine {plan} has no sidecar {path.name} (built elsewhere, or the build was interrupted), so "
            f"what it was built for is unknown; rebuild with: {rebuild_hint}"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {SIDECAR_FORMAT}")
        data["key"] = EngineKey.from_json(data["key"])
        data["plan_sha256"], data["plan_bytes"] = str(data["plan_sha256"]), int(data["plan_bytes"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise EngineCacheError(
            f"engine sidecar {path} is corrupt ({type(error).__name__}: {error}); rebuild with: {rebuild_hint}"
        ) from error
    return data


_LABELS = {
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
    "tensorrt_version": "TensorRT version",
    "onnx_sha256": "ONNX graph sha256",
    "precision": "precision",
    "graph": "graph",
    "profiles": "optimization profiles",
    "options": "builder options",
}


# What a plan must match to run here at all; a build also compares profiles and options.
ENVIRONMENT_FIELDS = ("graph", "precision", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability")
ALL_FIELDS = tuple(_LABELS)


def key_differences(built: EngineKey, wanted: EngineKey, tensorrt_match: str = "exact",
                    compare: tuple[str, ...] = ALL_FIELDS) -> list[str]:
    """Human-readable differences over ``compare``. ``tensorrt_match="major"``: a version-compatible
    plan runs on any later runtime of the same major version."""
    differences = []
    for name, label in _LABELS.items():
        if name not in compare:
            continue
        have, want = getattr(built, name), getattr(wanted, name)
        if name == "tensorrt_version" and tensorrt_match == "major":
            if _major_ok(have, want):
                continue
        elif have == want:
            continue
        if name in ("profiles", "options"):
            have, want = json.dumps(built.to_json()[name]), json.dumps(wanted.to_json()[name])
        differences.append(f"{label}: built for {have}, wanted {want}")
    return differences


def _major_ok(built: str, runtime: str) -> bool:
    parse = lambda text: tuple(int(p) for p in text.split(".")[:3] if p.isdigit())  # noqa: E731
    b, r = parse(built), parse(runtime)
    return bool(b) and bool(r) and b[0] == r[0] and r >= b


def check_engine(plan: str | os.PathLike, wanted: EngineKey, rebuild_hint: str, *, verify_plan: bool = True,
                 tensorrt_match: str = "exact", compare: tuple[str, ...] = ALL_FIELDS) -> dict[str, Any]:
    """The sidecar of a plan that may be used for ``wanted``; EngineCacheError saying why not otherwise."""
    data = read_sidecar(plan, rebuild_hint)
    differences = key_differences(data["key"], wanted, tensorrt_match, compare)
    if differences:
        raise EngineCacheError(
            f"engine {plan} does not match this machine and graph ({'; '.join(differences)}); it is not used. "
            f"Rebuild it with: {rebuild_hint}"
        )
    size = Path(plan).stat().st_size
    if size != data["plan_bytes"]:
        raise EngineCacheError(
            f"engine {plan} is {size} bytes but its sidecar says {data['plan_bytes']} (truncated or replaced); "
            f"rebuild with: {rebuild_hint}"
        )
    if verify_plan and plan_digest(plan)[0] != data["plan_sha256"]:
        raise EngineCacheError(
            f"engine {plan} does not match the sha256 in its sidecar (corrupt or replaced); rebuild with: {rebuild_hint}"
        )
    return data
