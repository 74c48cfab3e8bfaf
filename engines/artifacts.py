"""Where engines live beside the ONNX graphs, their index, and loading one that is checked first.

``trufor_<graph>.<precision>.onnx`` gets ``trufor_<graph>.<precision>.engine`` plus its sidecar;
``engines.<precision>.json``, written last by a build, lists them with the build settings. The
runtime opens engines only through ``load_engine``, which refuses any plan whose sidecar does not
match this GPU, this TensorRT and the manifest's ONNX hash (see ``engines.cache``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reference.errors import TruForError
from reference.outputs import atomic_write_text

from .cache import (
    ENVIRONMENT_FIELDS,
    PLAN_SUFFIX,
    EngineKey,
    check_engine,
    make_key,
    read_sidecar,
    sidecar_path,
)
from .cuda import device_info
from .errors import EngineCacheError

INDEX_PATTERN = "engines.{precision}.json"
INDEX_FORMAT = 1


def engine_path(onnx_path: str | os.PathLike) -> Path:
    return Path(onnx_path).with_suffix(PLAN_SUFFIX)


def index_path(artifacts_dir: str | os.PathLike, precision: str) -> Path:
    return Path(artifacts_dir) / INDEX_PATTERN.format(precision=precision)


def rebuild_command(artifacts_dir: str | os.PathLike, precision: str, rebuild: bool = True) -> str:
    return f"python -m engines.build --artifacts {artifacts_dir} --precision {precision}" + (" --rebuild" if rebuild else "")


def write_index(artifacts_dir, precision: str, entries: dict[str, Any], settings: dict[str, Any], created: str) -> Path:
    path = index_path(artifacts_dir, precision)
    data = {"format": INDEX_FORMAT, "precision": precision, "engines": entries, "settings": settings, "created": created}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_index(artifacts_dir, precision: str) -> dict[str, Any]:
    path = index_path(artifacts_dir, precision)
    hint = rebuild_command(artifacts_dir, precision, rebuild=False)
    if not path.is_file():
        raise EngineCacheError(f"no TensorRT engines for {precision} in {artifacts_dir} ({path.name} is missing); build: {hint}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != INDEX_FORMAT or not isinstance(data.get("engines"), dict):
            raise ValueError(f"format {data.get('format')!r}, expected {INDEX_FORMAT}")
    except (OSError, ValueError) as error:
        raise EngineCacheError(f"{path} is corrupt ({error}); rebuild: {rebuild_command(artifacts_dir, precision)}") from error
    return data


def environment_key(manifest, graph: str, device, tensorrt_version: str) -> EngineKey:
    """What a plan for ``graph`` must have been built for to run here (profiles/options not compared)."""
    return make_key(graph, manifest.precision, manifest.graph(graph).sha256, tensorrt_version, device, (), {})


def check_for_runtime(manifest, graph: str, device, runtime_version, *, verify_plan: bool = True) -> dict[str, Any]:
    """The sidecar of ``graph``'s plan if it may run here; ``runtime_version(version_compatible)``
    gives the installed runtime's version (full TensorRT or lean)."""
    plan = engine_path(manifest.graph(graph).path)
    hint = rebuild_command(manifest.directory, manifest.precision)
    data = read_sidecar(plan, hint)
    compatible = bool(dict(data["key"].options).get("version_compatible"))
    wanted = environment_key(manifest, graph, device, runtime_version(compatible))
    return check_engine(
        plan, wanted, hint, verify_plan=verify_plan, tensorrt_match="major" if compatible else "exact",
        compare=ENVIRONMENT_FIELDS,
    )


def _runtime_version(version_compatible: bool) -> str:
    from ._trt import runtime_module

    return str(runtime_module(version_compatible).__version__)


def load_engine(manifest, graph: str, device=None):
    """``LoadedEngine`` for ``graph`` after checking its sidecar and plan hash against this machine."""
    from .loaders import EngineFromPath

    device = device if device is not None else device_info()
    data = check_for_runtime(manifest, graph, device, _runtime_version)
    compatible = bool(dict(data["key"].options).get("version_compatible"))
    loaded = EngineFromPath(engine_path(manifest.graph(graph).path), version_compatible=compatible)()
    return loaded, data


def engines_unavailable_reason(artifacts_dir, precision: str, device, runtime_version=_runtime_version) -> str | None:
    """Cheap check for backend selection: index, sidecars and environment, without hashing plans."""
    from export.manifest import load_manifest

    try:
        manifest = load_manifest(artifacts_dir, precision, verify=False)
        index = read_index(artifacts_dir, precision)
        for graph in index["engines"]:
            check_for_runtime(manifest, graph, device, runtime_version, verify_plan=False)
    except TruForError as error:
        return str(error)
    return None


__all__ = ["engine_path", "index_path", "sidecar_path", "read_index", "write_index", "load_engine",
           "check_for_runtime", "engines_unavailable_reason", "rebuild_command"]
