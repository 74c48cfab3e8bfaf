"""INT8 graphs with explicit Q/DQ nodes: symmetric int8 activations and per-channel weights.

Symmetric (zero point 0) for both, which is what TensorRT's explicit quantization requires.
Calibration runs once, on the tile graph (a fixed T x T input, so memory stays bounded whatever
the images), with ONNX Runtime's MinMax calibrator. In onnxruntime 1.32 that calibrator adds a
ReduceMin/ReduceMax pair per tensor to the graph and keeps only those scalars per tile, so memory
is one tile's inference whatever the number of tiles. (Its ``CalibMaxIntermediateOutputs``
option must NOT be set there: it discards the collected ranges instead of merging them, and with
1 it fails with "No data is collected".) The ranges go to a JSON
calibration cache that quantizes the whole graph too: both graphs come from the same wrapper
modules, so their tensors have the same names (checked: every range the whole graph needs must
be in the cache).

Quantized: Conv (the full-resolution Noiseprint++ convolutions carry most of the FLOPs), and
MatMul/Gemm with a constant weight (every Linear). Kept in float: see ``float_nodes``.
``quant_pre_process`` is not run: its optimization step writes onnxruntime-only fused ops that
TensorRT cannot parse, and its symbolic shape inference fails on the dynamic reshapes here;
``quantize_static`` runs ONNX shape inference itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from reference.errors import ExportError

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes of QUANTIZED_OPS that stay in float, and why.

    - The first Noiseprint++ conv reads the image: symmetric int8 leaves 7 bits for [0, 1), below
      the 8-bit pixels, and the camera noise Noiseprint++ extracts lives in the low bits.
    - The last Noiseprint++ conv writes the residual the whole second stream reads, unnormalized.
    - Activation x activation MatMuls (attention Q.K^T and P.V, the FFM context): the softmax
      output is one-sided and heavy-tailed, and symmetric int8 spends a bit on the sign.
    - The decoders' ``linear_pred`` convs (they write the logits) and everything after the final
      resizes (score head), and the FRM channel MLP after global pooling: negligible FLOPs.
    """
    inits = {init.name for init in model.graph.initializer}
    keep = []
    dncnn = [n.name for n in model.graph.node if n.op_type == "Conv" and "/dncnn/" in n.name]
    if dncnn:
        keep += [dncnn[0], dncnn[-1]]
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        if node.op_type == "MatMul" and node.input[1] not in inits:
            keep.append(node.name)
        elif "linear_pred" in node.name or "/detection/" in node.name or "channel_weights" in node.name:
            keep.append(node.name)
    return sorted(set(keep))


def _quantize(src: Path, dst: Path, cache: Path, reader, exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(src),
        str(dst),
        calibration_data_reader=reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=exclude,
        calibration_cache_path=str(cache),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
        },
    )


def quantize_graphs(
    graphs: dict[str, onnx.ModelProto], reader, workdir: str | os.PathLike | None = None
) -> dict[str, onnx.ModelProto]:
    """Calibrate on ``graphs['tile']`` with ``reader``, then quantize every graph in ``graphs``."""
    if "tile" not in graphs:
        raise ExportError("INT8 calibration needs the tile graph")
    with tempfile.TemporaryDirectory(prefix="trufor-int8-", dir=workdir) as tmp:
        tmp = Path(tmp)
        cache = tmp / "calibration.json"
        order = ["tile"] + [k for k in graphs if k != "tile"]
        result = {}
        for kind in order:
            src, dst = tmp / f"{kind}.fp32.onnx", tmp / f"{kind}.int8.onnx"
            onnx.save(graphs[kind], str(src))
            exclude = float_nodes(graphs[kind])
            if kind != "tile":
                _check_ranges(graphs[kind], cache, exclude)
            try:
                _quantize(src, dst, cache, reader if kind == "tile" else None, exclude)
            except ExportError:
                raise
            except Exception as error:
                raise ExportError(
                    f"INT8 quantization of the {kind} graph failed: {type(error).__name__}: {error}"
                ) from error
            result[kind] = onnx.load(str(dst))
        return result


def _check_ranges(model: onnx.ModelProto, cache: Path, exclude: list[str]) -> None:
    """Every activation the graph will quantize must have a range from the tile calibration."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(cache)
    inits = {init.name for init in model.graph.initializer}
    excluded = set(exclude)
    missing = sorted(
        x for node in model.graph.node
        if node.op_type in QUANTIZED_OPS and node.name not in excluded
        for x in node.input[:1] if x not in inits and x not in ranges
    )
    if missing:
        raise ExportError(
            f"{len(missing)} tensors of the whole graph have no range in the tile calibration "
            f"(e.g. {missing[0]}): the two graphs were not exported from the same modules"
        )


def qdq_summary(model: onnx.ModelProto) -> str:
    quant = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dequant = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return f"{quant} QuantizeLinear and {dequant} DequantizeLinear nodes"


def check_symmetric(model: onnx.ModelProto) -> None:
    """Every zero point is 0, and int8 (int32 for biases): TensorRT's explicit-quantization requirement."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is None:
                continue
            if zp.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.INT32) or numpy_helper.to_array(zp).any():
                raise ExportError(f"{node.name} has a non-zero or non-int8 zero point; TensorRT needs symmetric int8")
