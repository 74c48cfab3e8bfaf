"""``manifest.<precision>.json``: what was exported, from what, and the graph contract it was exported under.

The runtime calls :func:`load_manifest` and gets a frozen :class:`Manifest`, or an ArtifactError
naming the file and the command that fixes it: missing manifest (listing the precisions that
are there), unknown format version, other precision, a contract other than this code's
(preprocessing, minimum side), missing graph, or a graph whose sha256 no longer matches (stale
artifacts). Several precisions share one folder, one manifest each. Each graph's entry records its
I/O (``export.contract.GraphSpec``), which the engines and runners read back from here.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference.outputs import atomic_write_text
from reference.weights import sha256_file

from .contract import FORMAT_VERSION, MANIFEST_FIELDS, OPSET, PRECISIONS, GraphSpec, WholeImageRule
from .errors import ArtifactError

MANIFEST_PATTERN = "manifest.{precision}.json"
UINT8_ACTIVATIONS = "uint8_activations"  # a graph entry's key for its x86 CPU form (int8 only)
ORT_OPTIMIZED = "ort_optimized"  # a graph entry's key for ONNX Runtime's optimized form of its CPU file


def manifest_path(artifacts_dir: str | os.PathLike, precision: str) -> Path:
    return Path(artifacts_dir) / MANIFEST_PATTERN.format(precision=precision)


def _export_command(artifacts_dir: Path, precision: str | None) -> str:
    return f"python -m export.build --precision {precision or 'fp32'} --out {artifacts_dir}"


@dataclass(frozen=True)
class OptimizedGraph:
    """ONNX Runtime's optimized form of a graph's CPU file (``export.session.write_optimized``): valid only
    under the ONNX Runtime version, provider and CPU features that made it. Optional: the runtime checks
    it (and its sha256) only when it loads it, and loads the plain graph when it is missing or made elsewhere."""

    path: Path
    sha256: str
    onnxruntime: str
    provider: str
    cpu: str
    data: Path | None = None  # its initializers (None: inside the graph file, exports before they moved out)
    data_sha256: str | None = None

    @classmethod
    def from_json(cls, folder: Path, data: dict) -> OptimizedGraph:
        initializers = data.get("data")
        return cls(folder / data["file"], data["sha256"], data["onnxruntime"], data["provider"], data["cpu"],
                   folder / initializers["file"] if initializers else None,
                   initializers["sha256"] if initializers else None)

    @property
    def files(self) -> tuple[tuple[Path, str], ...]:
        """Each file a session of this graph reads, with its sha256."""
        return ((self.path, self.sha256),) + (((self.data, self.data_sha256),) if self.data else ())


@dataclass(frozen=True)
class GraphEntry:
    kind: str  # "whole", "tile" or "score"
    path: Path
    sha256: str
    spec: GraphSpec
    # int8: the same graph with uint8 activations, which ONNX Runtime's x86 CPU kernels run fastest
    # (``export.int8.unsigned_activations``, applied at export); None for other precisions.
    uint8_activations: Path | None = None
    uint8_sha256: str | None = None
    ort_optimized: OptimizedGraph | None = None  # made from the CPU file (the uint8 form for int8)

    @property
    def cpu_file(self) -> tuple[Path, str]:
        """The file (and its sha256) ONNX Runtime's CPU provider runs best: the uint8 form of an int8 graph."""
        if self.uint8_activations is not None:
            return self.uint8_activations, self.uint8_sha256
        return self.path, self.sha256


@dataclass(frozen=True)
class Manifest:
    path: Path
    format_version: int
    precision: str
    preset: str
    config: dict[str, Any]
    checkpoint: dict[str, str] | None  # {"path", "sha256", "description"}, None for random weights
    opset: int
    tile_size: int
    whole_rule: WholeImageRule  # which images run whole; the TensorRT whole profile is sized from it
    graphs: dict[str, GraphEntry]
    versions: dict[str, str]
    created: str

    @property
    def directory(self) -> Path:
        return self.path.parent

    def graph(self, kind: str) -> GraphEntry:
        try:
            return self.graphs[kind]
        except KeyError:
            raise ArtifactError(f"{self.path} lists no {kind!r} graph (it has {sorted(self.graphs)})") from None


def available_precisions(artifacts_dir: str | os.PathLike) -> list[str]:
    return [p for p in PRECISIONS if manifest_path(artifacts_dir, p).is_file()]


def load_manifest(artifacts_dir: str | os.PathLike, precision: str | None = None, *, verify: bool = True) -> Manifest:
    """The manifest for ``precision`` in ``artifacts_dir`` (the only one there when None), checked.

    ``verify`` hashes every graph file (about a second for the full model) to refuse stale files.
    """
    folder = Path(artifacts_dir)
    if precision is not None and precision not in PRECISIONS:
        raise ArtifactError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    available = available_precisions(folder) if folder.is_dir() else []
    if precision is None:
        if len(available) != 1:
            what = f"several ({', '.join(available)}): pass one" if available else "none"
            raise ArtifactError(
                f"{folder}: found {what} of {MANIFEST_PATTERN.format(precision='<precision>')}; "
                f"export with: {_export_command(folder, None)}"
            )
        precision = available[0]
    path = manifest_path(folder, precision)
    if not path.is_file():
        there = f"available here: {', '.join(available)}" if available else "no precision is exported there"
        raise ArtifactError(
            f"{path} does not exist ({there}); export it with: {_export_command(folder, precision)}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{path} is not readable JSON ({error}); re-export: {_export_command(folder, precision)}") from error
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {data.get('format_version')!r}, this code reads {FORMAT_VERSION}; "
            f"re-export with this version: {_export_command(folder, precision)}"
        )
    if data.get("precision") != precision:
        raise ArtifactError(
            f"{path} describes precision {data.get('precision')!r}, not {precision!r}; "
            f"re-export: {_export_command(folder, precision)}"
        )
    changed = [f"{key} {data.get(key)!r} (this code: {value!r})" for key, value in MANIFEST_FIELDS.items()
               if data.get(key) != value]
    if changed:
        raise ArtifactError(
            f"{path} was exported under another graph contract ({'; '.join(changed)}); "
            f"re-export: {_export_command(folder, precision)}"
        )
    graphs = {}
    for kind, entry in data["graphs"].items():
        uint8 = entry.get(UINT8_ACTIVATIONS)
        optimized = entry.get(ORT_OPTIMIZED)
        graphs[kind] = GraphEntry(
            kind, _checked_file(folder, path, entry, verify, precision), entry["sha256"], GraphSpec.from_json(kind, entry),
            _checked_file(folder, path, uint8, verify, precision) if uint8 else None,
            uint8["sha256"] if uint8 else None,
            OptimizedGraph.from_json(folder, optimized) if optimized else None,
        )
    return Manifest(
        path=path,
        format_version=data["format_version"],
        precision=precision,
        preset=data["preset"],
        config=data["config"],
        checkpoint=data["checkpoint"],
        opset=data["opset"],
        tile_size=data["tile_size"],
        whole_rule=WholeImageRule.from_json(data["whole_image"]),
        graphs=graphs,
        versions=data["versions"],
        created=data["created"],
    )


def _checked_file(folder: Path, manifest: Path, fields: dict, verify: bool, precision: str) -> Path:
    """A graph file the manifest lists: present, and (``verify``) with the sha256 it records."""
    graph_path = folder / fields["file"]
    if not graph_path.is_file():
        raise ArtifactError(
            f"{graph_path} listed in {manifest.name} is missing; re-export: {_export_command(folder, precision)}"
        )
    if verify and sha256_file(graph_path) != fields["sha256"]:
        raise ArtifactError(
            f"{graph_path} does not match the sha256 in {manifest.name} (stale or modified artifacts); "
            f"re-export: {_export_command(folder, precision)}"
        )
    return graph_path


def verify_file(manifest: Manifest, path: Path, sha256: str) -> Path:
    """``path``, one of the files ``manifest`` lists, if its sha256 is the recorded one (for loaders that
    read the manifest with ``verify=False`` and hash only the files they load); ArtifactError if not."""
    if not path.is_file():
        raise ArtifactError(f"{path} listed in {manifest.path.name} is missing; re-export: "
                            f"{_export_command(manifest.directory, manifest.precision)}")
    if sha256_file(path) != sha256:
        raise ArtifactError(
            f"{path} does not match the sha256 in {manifest.path.name} (stale or modified artifacts); "
            f"re-export: {_export_command(manifest.directory, manifest.precision)}"
        )
    return path


def file_entry(path: Path) -> dict[str, str]:
    """A file's manifest fields: its name beside the manifest and its sha256."""
    return {"file": path.name, "sha256": sha256_file(path)}


def manifest_data(precision: str, preset: str, config: dict, checkpoint: dict | None, tile_size: int,
                  whole_rule: WholeImageRule, graphs: dict[str, dict], versions: dict[str, str], created: str,
                  **extra) -> dict[str, Any]:
    """The manifest's JSON: identity, the contract (``export.contract.MANIFEST_FIELDS``), the graphs."""
    return {
        "format_version": FORMAT_VERSION,
        "precision": precision,
        "preset": preset,
        "config": config,
        "checkpoint": checkpoint,
        "opset": OPSET,
        "tile_size": tile_size,
        "whole_image": whole_rule.to_json(),
        **MANIFEST_FIELDS,
        **extra,
        "graphs": graphs,
        "versions": versions,
        "created": created,
    }


def write_manifest(path: str | os.PathLike, data: dict) -> Path:
    """Write atomically: a reader sees the old manifest or the new one, never half of one."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
