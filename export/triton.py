"""A Triton Inference Server model repository for the exported graphs (``export.build --triton DIR``).

One model per graph and precision: ``trufor_<graph>_<precision>`` runs the ONNX graph on Triton's
ONNX Runtime backend, and ``trufor_<graph>_<precision>_trt`` runs the TensorRT plan when
``engines.build`` made one. Names carry the precision, so fp32 and int8 share one repository.
This module writes the ONNX models; the plan models are the engines layer's (``engines.triton``),
which sits above export: ``add_engine_plans`` runs it as ``python -m engines.triton`` in a child
process, so export never imports it.
Tiling, stitching and the decision stay in the client (``runtime.scan --backend triton``): the
server runs exactly the three graphs every other backend runs.

Each ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf (``tritonclient.grpc``
ships it) and printed with ``text_format``, so no field Triton does not know can be written. Its
``parameters`` carry the manifest's identity (``trufor.*``); the client reads them back for the tile
size and precision, and records them as the model that made a scan's rows.

Models of the same name are replaced only when this module wrote them; a run builds its models
in a folder beside ``DIR`` and renames each into place, so Triton never sees half a model.

    python -m export.triton --artifacts DIR --precision P --out REPO   # from artifacts already built
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format  # protobuf comes with onnx; only the Triton schema is optional

from reference.errors import TruForError
from reference.outputs import atomic_write_text

from .contract import GRAPH_NAMES, PRECISIONS
from .errors import ArtifactError, BackendUnavailableError
from .manifest import Manifest, load_manifest

MODEL_VERSION = "1"
TRT_SUFFIX = "_trt"
PARAMETER_PREFIX = "trufor."
DEVICES = ("auto", "cpu", "gpu")
# Same-size whole images per server call: the runtime's default --batch-size, and it bounds the
# memory of one call to four images whatever the number of clients.
WHOLE_MAX_BATCH = 4
QUEUE_DELAY_US = 2000  # a tile request waits at most 2 ms for others to fill a batch
README_NAME = "README.trufor.md"
INSTALL = "pip install -e '.[triton]'"
_DATA_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}


def model_name(graph: str, precision: str, plan: bool = False) -> str:
    return f"trufor_{graph}_{precision}" + (TRT_SUFFIX if plan else "")


def model_config_pb2():
    """Triton's ModelConfig protobuf module; BackendUnavailableError with the install command when missing."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as error:
        raise BackendUnavailableError(
            f"Triton support needs tritonclient with gRPC ({error}); install it with: {INSTALL}"
        ) from error
    return model_config_pb2


@dataclass(frozen=True)
class TritonOptions:
    device: str = "auto"  # instances of the ONNX models: auto (a GPU when the server has one), cpu, gpu
    instances: int = 1  # per device; plans get this many per optimization profile
    tile_batch: int = 8  # max_batch_size of the ONNX tile model (plans keep their profile's)
    threads: int | None = None  # ONNX Runtime intra-op threads per instance; None: all cores

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"Triton device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("instances", "tile_batch", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"Triton {name.replace('_', ' ')} must be >= 1, got {value}")


@dataclass(frozen=True)
class TritonModel:
    name: str
    config: Any  # model_config_pb2.ModelConfig
    source: Path  # the ONNX graph or TensorRT plan served
    file_name: str  # its name in the version folder
    note: str = ""  # comment lines written above the config


def identity_parameters(manifest: Manifest, graph: str) -> dict[str, str]:
    """The ``trufor.*`` parameters that say which export a model serves (the client checks them)."""
    return {
        "format_version": str(manifest.format_version),
        "graph": graph,
        "precision": manifest.precision,
        "preset": manifest.preset,
        "tile_size": str(manifest.tile_size),
        "num_classes": str(manifest.config.get("num_classes", 2)),
        "checkpoint_sha256": manifest.checkpoint["sha256"] if manifest.checkpoint else "",
        "onnx_sha256": manifest.graph(graph).sha256,
    }


def base_config(manifest: Manifest, graph: str, platform: str, max_batch: int, identity: dict[str, str]):
    """The fields every model shares: I/O from the manifest (batch dim implied when batching), identity."""
    pb = model_config_pb2()
    spec = manifest.graph(graph).spec
    config = pb.ModelConfig(name=model_name(graph, manifest.precision, platform == "tensorrt_plan"),
                            platform=platform, max_batch_size=max_batch)
    for tensors, specs in ((config.input, spec.inputs), (config.output, spec.outputs)):
        for tensor_spec in specs:
            dims = [size if isinstance(size, int) else -1 for size in tensor_spec.shape][1 if max_batch else 0 :]
            tensor = tensors.add(name=tensor_spec.name, data_type=pb.DataType.Value(_DATA_TYPES[tensor_spec.dtype]),
                                 dims=dims or [1])
            if not dims:  # one value per batch item (the score): Triton wants dims [1] reshaped to []
                tensor.reshape.SetInParent()
    for key, value in identity.items():
        config.parameters[PARAMETER_PREFIX + key].string_value = value
    return config


def onnx_model(manifest: Manifest, graph: str, options: TritonOptions) -> TritonModel:
    pb = model_config_pb2()
    # The score graph's batch is fixed at 1. The others must batch: with max_batch_size 0 Triton's
    # ONNX Runtime backend would auto-fill 4 over a graph whose first dimension is dynamic.
    max_batch = {"whole": WHOLE_MAX_BATCH, "tile": options.tile_batch}.get(graph, 0)
    config = base_config(manifest, graph, "onnxruntime_onnx", max_batch, identity_parameters(manifest, graph))
    if graph == "tile":
        config.dynamic_batching.preferred_batch_size.extend(sorted({max(options.tile_batch // 2, 1), options.tile_batch}))
        config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    elif graph == "whole":
        config.dynamic_batching.SetInParent()  # joins same-size requests already queued, never waits
    kind = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}[options.device]
    config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(kind), count=options.instances)
    if options.threads:
        config.parameters["intra_op_thread_count"].string_value = str(options.threads)
    if graph != "tile" and options.device == "cpu":
        # As runtime's OrtRunner: variable shapes grow the arena. Only on CPU, where the device id
        # is known here (a GPU instance's arena is gpu:<its device>, chosen by the server).
        config.parameters["memory.enable_memory_arena_shrinkage"].string_value = "cpu:0"
    return TritonModel(config.name, config, manifest.graph(graph).path, "model.onnx")


def repository_models(manifest: Manifest, options: TritonOptions = TritonOptions()) -> list[TritonModel]:
    return [onnx_model(manifest, graph, options) for graph in GRAPH_NAMES]


def config_text(model: TritonModel) -> str:
    header = f"# Written by python -m export.build from {model.source.name}; replaced when rewritten.\n"
    return header + model.note + text_format.MessageToString(model.config)


def read_config(path: str | os.PathLike):
    """A config.pbtxt parsed strictly against Triton's schema (unknown fields raise ParseError)."""
    return text_format.Parse(Path(path).read_text(), model_config_pb2().ModelConfig())


def _check_replaceable(folder: Path) -> None:
    if not folder.exists():
        return
    try:
        ours = PARAMETER_PREFIX + "graph" in read_config(folder / "config.pbtxt").parameters
    except (OSError, UnicodeDecodeError, text_format.ParseError):
        ours = False
    if not ours:
        raise ArtifactError(
            f"{folder} exists and was not written by python -m export.build (its config.pbtxt has no "
            f"{PARAMETER_PREFIX}* parameters); move it away or write the repository to another folder"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link costs no space and is safe: exports replace files (new inode), never rewrite them."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_repository(manifest: Manifest, out: str | os.PathLike, options: TritonOptions = TritonOptions()) -> list[str]:
    """Write (or replace) this precision's ONNX models in the repository ``out``; returns their names."""
    return write_models(repository_models(manifest, options), out, manifest.precision)


def write_models(models: list[TritonModel], out: str | os.PathLike, precision: str) -> list[str]:
    """Write (or replace) ``models`` in the repository ``out``, then its README; returns their names."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"Triton repository {out} is a file, not a folder; pass a folder")
    for model in models:
        _check_replaceable(out / model.name)
    out.mkdir(parents=True, exist_ok=True)
    # Beside the repository, not inside it: Triton takes every folder inside for a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for model in models:
            folder = staging / model.name
            (folder / MODEL_VERSION).mkdir(parents=True)
            _link_or_copy(model.source, folder / MODEL_VERSION / model.file_name)
            atomic_write_text(folder / "config.pbtxt", config_text(model))
        for model in models:
            if (out / model.name).exists():
                os.replace(out / model.name, staging / f"{model.name}.replaced")
            os.replace(staging / model.name, out / model.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(out / README_NAME, _readme(out, precision))
    return [model.name for model in models]


def add_engine_plans(artifacts: Path, precision: str, out: Path, options: TritonOptions) -> None:
    """Add the TensorRT plan models (none when no engine was built) with ``python -m engines.triton``
    in a child process: the engines layer reads export's files, so export hands it the folders."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in asdict(options).items() if value is not None]
    command = [sys.executable, "-m", "engines.triton", "--artifacts", str(artifacts), "--precision", precision,
               "--out", str(out), *flags]
    status = subprocess.run(command, check=False).returncode
    if status:
        raise ArtifactError(f"{shlex.join(command)} exited with status {status} (its error is above); the ONNX models "
                            f"in {out} are written, the TensorRT plan models are not")


def next_commands(out: Path, precision: str) -> list[str]:
    return [
        f"tritonserver --model-repository {out.resolve()}",
        f"python -m runtime.scan INPUT --out results --backend triton --url localhost:8001 --precision {precision}",
    ]


def _readme(out: Path, precision: str) -> str:
    lines = [f"- `{path.parent.name}` ({read_config(path).platform})" for path in sorted(out.glob("trufor_*/config.pbtxt"))]
    serve, scan = next_commands(out, precision)
    return (
        "# TruFor models for Triton Inference Server\n\n"
        "Written by `python -m export.build --triton` (trufor-deploy): one model per exported graph\n"
        "(`whole`, `tile`, `score`) and precision; tiling and stitching run in the client.\n\n"
        + "\n".join(lines)
        + f"\n\nServe and scan (gRPC, port 8001):\n\n    {serve}\n    {scan}\n\n"
        "The `*_trt` models hold TensorRT plans. A plan runs only on the GPU model and TensorRT\n"
        "version that built it (see the `trufor.gpu_name` and `trufor.tensorrt_version` parameters\n"
        "in its config.pbtxt): serve them with a Triton release whose TensorRT is that version, or\n"
        "rebuild the engines on the serving machine (`python -m engines.build`) and rewrite this\n"
        "repository with `python -m export.triton`. The ONNX models run anywhere.\n"
    )


def add_options(parser: argparse.ArgumentParser, flag_prefix: str = "--triton-") -> None:
    """The repository flags, shared by ``export.build`` (``--triton-*``) and this module's CLI."""
    defaults = TritonOptions()
    group = parser.add_argument_group("Triton model repository")
    group.add_argument(f"{flag_prefix}device", default=defaults.device, choices=DEVICES,
                       help="instances of the ONNX models: auto (a GPU when the server has one, default), cpu, gpu")
    group.add_argument(f"{flag_prefix}instances", type=int, metavar="N", default=defaults.instances,
                       help=f"instances per device (default {defaults.instances})")
    group.add_argument(f"{flag_prefix}tile-batch", type=int, metavar="N", default=defaults.tile_batch,
                       help=f"tiles per server call for the ONNX tile model (default {defaults.tile_batch})")
    group.add_argument(f"{flag_prefix}threads", type=int, metavar="N", default=defaults.threads,
                       help="ONNX Runtime intra-op threads per instance (default: all cores)")


def options_from(values: dict, flag_prefix: str = "triton_") -> TritonOptions:
    return TritonOptions(**{name: values[flag_prefix + name] for name in TritonOptions.__dataclass_fields__})


def parse_repository_args(prog: str, description: str, argv: list[str] | None) -> tuple[argparse.Namespace, TritonOptions]:
    """The command line of this module and of ``python -m engines.triton``: artifacts, precision, repository, options."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--artifacts", type=Path, required=True, help="folder written by python -m export.build")
    parser.add_argument("--precision", required=True, choices=list(PRECISIONS))
    parser.add_argument("--out", type=Path, required=True, help="the Triton model repository (created or updated)")
    add_options(parser, "--")
    args = parser.parse_args(argv)
    try:
        return args, options_from(vars(args), "")
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> int:
    args, options = parse_repository_args("python -m export.triton", __doc__.split("\n\n")[0], argv)
    try:
        names = write_repository(load_manifest(args.artifacts, args.precision), args.out, options)
        add_engine_plans(args.artifacts, args.precision, args.out, options)
    except TruForError as error:
        print(f"[E] {error}", file=sys.stderr)
        return 1
    print(f"Triton models in {args.out}: {', '.join(names)}\nNext:")
    print("\n".join(f"  {command}" for command in next_commands(args.out, args.precision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
