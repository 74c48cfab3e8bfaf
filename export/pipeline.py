"""The export steps behind ``python -m export.build``: model, fp32 graphs, precision, metadata, manifest."""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime
import torch

from reference.build import build_trufor
from reference.optimize import fold_batchnorm_

from . import calibration
from .contract import FORMAT_VERSION, OPSET, PREPROCESSING, graph_specs
from .fp16 import check_fp16, convert_to_fp16, fp16_summary
from .int8 import UNFAITHFUL_SCOPES, check_symmetric, qdq_summary, quantize_graphs, unsigned_activations
from .manifest import (
    ORT_OPTIMIZED,
    UINT8_ACTIVATIONS,
    file_entry,
    manifest_data,
    manifest_path,
    utc_now,
    write_manifest,
)
from .onnx_export import apply_io_shapes, check_structure, export_graph, save_model, set_metadata, simplify
from .session import optimized_data_path, write_optimized
from .wrappers import ScoreModel, TileModel, WholeImageModel

UINT8_VARIANT = "-uint8"  # file name of an int8 graph's uint8-activation form: trufor_<graph>.int8-uint8.onnx
# ONNX Runtime's CPU-optimized form of the graph the CPU runs: trufor_<graph>.fp32-ortcpu.onnx, .int8-uint8-ortcpu.onnx
ORT_CPU_VARIANT = "-ortcpu"
# Explicit matmul-softmax attention: the same graph as SDPA after export at opset 18, but with a
# constant scale instead of a Sqrt of a runtime shape, and the pattern TensorRT fuses into MHA.
EXPORT_OVERRIDES = {"fused_attention": False}


def project_version() -> str:
    try:
        return importlib.metadata.version("trufor-deploy")
    except importlib.metadata.PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"


def versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "project": project_version(),
    }


def fp32_graphs(model, tile: int, step: Callable) -> dict[str, onnx.ModelProto]:
    """Trace the three wrappers over a BN-folded copy of ``model``.

    Examples use batch 2 so no dimension is traced as a constant 1. Folding here (not left to the
    exporter) also covers the decoder BNs, which follow a sum in the composed decoder.
    """
    specs = graph_specs(tile)
    model = fold_batchnorm_(copy.deepcopy(model).eval())
    examples = {
        "whole": (WholeImageModel(model), (torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8),)),
        "tile": (TileModel(model), (torch.randint(0, 256, (2, tile, tile, 3), dtype=torch.uint8),)),
        "score": (ScoreModel(model), (torch.randn(1, 2, 64, 96), torch.randn(1, 1, 64, 96))),
    }
    graphs = {}
    for kind, (module, example) in examples.items():
        with step(f"fp32 {kind} graph: torch.onnx.export + onnxslim + onnx.checker"):
            graphs[kind] = export_graph(module.eval(), example, specs[kind])
    return graphs


def to_fp16(graphs: dict[str, onnx.ModelProto], tile: int, step: Callable) -> dict[str, onnx.ModelProto]:
    result = dict(graphs)
    specs = graph_specs(tile)
    for kind in ("whole", "tile"):
        with step(f"fp16 {kind} graph: float16 with float32 islands"):
            model = simplify(convert_to_fp16(graphs[kind]), f"fp16 {kind}")
            apply_io_shapes(model, specs[kind])
            check_fp16(model)
            check_structure(model, specs[kind], expect_folded_bn=False)
            print(f"  {fp16_summary(model)}")
            result[kind] = model
    return result


def to_int8(graphs: dict[str, onnx.ModelProto], config, step: Callable) -> dict[str, onnx.ModelProto]:
    count = config.calib_count
    if config.calib is None:
        print(f"  calibrating on {count} synthetic images (pass --calib DIR with real images for better ranges)")
        tiles = calibration.synthetic_tiles(config.tile, count)
    else:
        tiles = calibration.folder_tiles(config.calib, config.tile, count)
    unfaithful = [scope for scope in config.int8_layers if scope in UNFAITHFUL_SCOPES]
    if unfaithful:
        print(f"  WARNING: int8 layers {unfaithful} are not faithful with the released weights "
              "(export/int8.py); these graphs are for measurements, not for forensic use")
    with step("int8: calibrate on the tile graph, quantize tile and whole graphs"):
        quantized = quantize_graphs(
            {"tile": graphs["tile"], "whole": graphs["whole"]},
            calibration.TileReader(tiles, count),
            workdir=config.out,
            scopes=config.int8_layers,
        )
    specs = graph_specs(config.tile)
    for kind, model in quantized.items():
        apply_io_shapes(model, specs[kind])
        check_structure(model, specs[kind], expect_folded_bn=False)
        check_symmetric(model)
        print(f"  {kind}: {qdq_summary(model)}")
    return {**graphs, **quantized}


def write_uint8_form(graph: onnx.ModelProto, metadata: dict, path: Path, step: Callable) -> Path:
    """The int8 graph with uint8 activations (``unsigned_activations``), written beside it for ONNX
    Runtime's x86 CPU kernels; the symmetric file stays what TensorRT and the CUDA provider load."""
    unsigned = onnx.ModelProto()
    unsigned.CopyFrom(graph)
    unsigned_activations(unsigned)
    set_metadata(unsigned, {**metadata, "trufor.activations": "uint8"})
    with step(f"write {metadata['trufor.graph']} graph, uint8 activations (ONNX Runtime CPU)", path):
        save_model(unsigned, path)
    return path


def write_ort_optimized(out: Path, spec, precision: str, entry: dict, step: Callable) -> dict:
    """ONNX Runtime's optimized form of the file its CPU provider loads (the uint8 form of an int8 graph),
    so sessions start without optimizing (``export.session.write_optimized``); its manifest fields."""
    uint8 = entry.get(UINT8_ACTIVATIONS)
    source = out / (uint8 or entry)["file"]
    variant = (UINT8_VARIANT if uint8 else "") + ORT_CPU_VARIANT
    path = out / spec.file_name(precision, variant)
    with step(f"ONNX Runtime CPU-optimized {spec.kind} graph (sessions load it without optimizing)", path):
        made_by = write_optimized(source, path)
    return {**file_entry(path), "data": file_entry(optimized_data_path(path)), **made_by}


def export_artifacts(config, step: Callable, model=None) -> Path:
    """Write the three graphs and, last, ``manifest.<precision>.json``; returns the manifest's path.

    ``model`` (tests) replaces the one built from ``config.preset``/``config.weights``.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_file = manifest_path(out, config.precision)
    manifest_file.unlink(missing_ok=True)  # an interrupted export leaves no manifest, not a stale one
    weights = config.weights
    checkpoint = None  # the manifest's record of the weights: None for random ones
    if weights is not None and not weights.random:
        checkpoint = {"path": str(weights.path), "sha256": weights.sha256, "description": weights.description}
    if model is None:
        source = weights.description if weights is not None else "random init"
        with step(f"build model: preset {config.preset}, {source}"):
            model = build_trufor(
                config.preset, weights.path if weights else None, conf_bn_variant=config.conf_bn_variant, **EXPORT_OVERRIDES
            )
    graphs = fp32_graphs(model, config.tile, step)
    model_config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}
    del model  # the torch weights are not needed past tracing; calibration needs the memory
    if config.precision == "fp16":
        graphs = to_fp16(graphs, config.tile, step)
    elif config.precision == "int8":
        graphs = to_int8(graphs, config, step)

    created = utc_now()
    specs = graph_specs(config.tile)
    entries = {}
    for kind, graph in graphs.items():
        spec = specs[kind]
        metadata = {
            "trufor.format_version": str(FORMAT_VERSION),
            "trufor.graph": kind,
            "trufor.precision": config.precision,
            "trufor.compute_precision": "fp32" if spec.always_fp32 else config.precision,
            "trufor.preset": config.preset,
            "trufor.checkpoint_sha256": checkpoint["sha256"] if checkpoint else "",
            "trufor.opset": str(OPSET),
            "trufor.tile_size": str(config.tile),
            "trufor.preprocessing": PREPROCESSING,
            "trufor.config": model_config,
            "trufor.project_version": project_version(),
            "trufor.created": created,
        }
        set_metadata(graph, metadata)
        path = out / spec.file_name(config.precision)
        with step(f"write {kind} graph", path):
            save_model(graph, path)
        entries[kind] = {**file_entry(path), **spec.io_json()}
        if config.precision == "int8" and not spec.always_fp32:
            entries[kind][UINT8_ACTIVATIONS] = file_entry(write_uint8_form(graph, metadata, out / spec.file_name("int8", UINT8_VARIANT), step))
    del graphs, graph  # the protos are on disk; ONNX Runtime reads the files back
    for kind, entry in entries.items():
        entries[kind][ORT_OPTIMIZED] = write_ort_optimized(out, specs[kind], config.precision, entry, step)

    extra = {"int8_layers": list(config.int8_layers)} if config.precision == "int8" else {}
    manifest = manifest_data(config.precision, config.preset, model_config, checkpoint, config.tile,
                             config.whole_rule, entries, versions(), created, **extra)
    with step("write manifest", manifest_file):
        write_manifest(manifest_file, manifest)
    return manifest_file
