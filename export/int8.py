"""INT8 graphs with explicit Q/DQ nodes: symmetric int8 activations and per-channel weights.

Symmetric (zero point 0) for both, which is what TensorRT's explicit quantization requires.
Calibration runs once, on the tile graph (a fixed T x T input, so memory stays bounded whatever
the images), with ONNX Runtime's MinMax calibrator, which adds a ReduceMin/ReduceMax pair per
calibrated tensor and keeps only those scalars per tile. Its own session runs the graph in the
default order, where every Reduce pair comes after the whole model, so every intermediate tensor
is alive at once (10.5 GB peak for the full model at 512 x 512); ``calibrate`` runs the same
augmented graph with ``ExecutionOrder.PRIORITY_BASED``, which consumes each tensor as soon as it
is made (1.7 GB peak for the calibration, whatever the number of tiles). (``CalibMaxIntermediateOutputs``
does not help in onnxruntime 1.32: it discards the collected ranges instead of merging them.)
The ranges go to a JSON calibration cache that quantizes the whole graph too: both graphs come
from the same wrapper modules, so their tensors have the same names (checked: every range the
whole graph needs must be in the cache).

Quantized: the layers in ``SCOPES`` chosen by ``DEFAULT_SCOPES`` (by default the full-resolution
Noiseprint++ convolutions, which carry most of the FLOPs); everything else stays float.
``quant_pre_process`` is not run: its optimization step writes onnxruntime-only fused ops that
TensorRT cannot parse, and its symbolic shape inference fails on the dynamic reshapes here;
``quantize_static`` runs ONNX shape inference itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .errors import ExportError

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")

# Which layers run in int8, by scope. Not the Noiseprint++ DnCNN by default, although it carries
# ~60% of the FLOPs: with the released weights it amplifies rounding 2000 to 3000 times, and its int8 residual
# (interior convs, per-tensor activations, per-channel weights) has a relative RMS error of 1.45 and only 0.60
# correlated with the float64 one on the example images (worst image; calibrating on them instead
# of the synthetic tiles changes little); one interior conv alone is 7% to 115% off
# (``python -m benchmarks.noiseprint_precision``). On random weights it looks harmless (it adds
# 4e-4 to the map p99 below), which is how it came to be the default before.
# The default is the two encoder Linear groups that read a LayerNorm (query projections and Mix-FFN
# inputs), the least harmful ones on the perturbed full model against the fp32 graph (map p99
# 8.8e-3, score 3.2e-3; all encoder Linear layers 5.1e-2 and 1.3e-2; ``python -m
# benchmarks.int8_layers``, which measures each group for given weights).
LINEAR_GROUPS = {
    "encoder_q": ("q",),
    "encoder_kv": ("kv",),
    "encoder_proj": ("proj",),
    "encoder_fc1": ("fc1",),
    "encoder_fc2": ("fc2",),
    "fusion_linear": ("channel_proj1", "channel_proj2", "kv1", "kv2", "end_proj1", "end_proj2"),
}
SCOPES = {
    "dncnn": "Noiseprint++ convs except the first and the last; NOT FAITHFUL with the released "
             "Noiseprint++ weights (relative RMS error 1.45, correlation 0.60), for measurements only",
    "encoder_q": "attention query projections (read a LayerNorm)",
    "encoder_kv": "attention key/value projections (read the spatially reduced, normalized map)",
    "encoder_proj": "attention output projections (read the attention output)",
    "encoder_fc1": "Mix-FFN input layers (read a LayerNorm)",
    "encoder_fc2": "Mix-FFN output layers (read the GELU output)",
    "fusion_linear": "the FFM fusion Linear layers (channel projections, context kv, end projections)",
    "encoder_linear": "every Linear layer of the encoder: all the encoder_* Linear groups and fusion_linear",
    "encoder_conv": "encoder convs (patch embeds, SR convs, depthwise convs, FRM/FFM 1x1 convs)",
}
DEFAULT_SCOPES = ("encoder_q", "encoder_fc1")
UNFAITHFUL_SCOPES = ("dncnn",)


def _linear_scope(node: onnx.NodeProto) -> str | None:
    """The LINEAR_GROUPS scope of an encoder Linear layer's MatMul/Gemm (named .../<layer>/MatMul)."""
    layer = node.name.split("/")[-2]
    return next((scope for scope, layers in LINEAR_GROUPS.items() if layer in layers), None)


def nodes_to_quantize(model: onnx.ModelProto, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> list[str]:
    """Names of the QUANTIZED_OPS nodes in ``scopes``; everything else stays float.

    Never quantized: activation x activation MatMuls (attention and FFM context: the softmax output
    is one-sided and heavy-tailed), the FRM channel MLP after global pooling, the decoders and the
    score head (they write the logits; folded decoders are ~0.5% of the FLOPs).
    """
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown int8 scopes {sorted(unknown)}; choose from {sorted(SCOPES)}")
    inits = {init.name for init in model.graph.initializer}
    dncnn = [n.name for n in model.graph.node if n.op_type == "Conv" and "/dncnn/" in n.name]
    chosen = set(dncnn[1:-1]) if "dncnn" in scopes else set()
    for node in model.graph.node:
        if not node.name.startswith("/backbone/") or "channel_weights" in node.name:
            continue
        if node.op_type in ("MatMul", "Gemm") and node.input[1] in inits:
            scope = _linear_scope(node)
            if scope is None:
                raise ExportError(f"{node.name}: an encoder Linear layer in no int8 scope; add it to LINEAR_GROUPS")
            if "encoder_linear" in scopes or scope in scopes:
                chosen.add(node.name)
        elif node.op_type == "Conv" and "encoder_conv" in scopes:
            chosen.add(node.name)
    return [n.name for n in model.graph.node if n.name in chosen]


def calibrate(tile_path: Path, reader, cache: Path, workdir: Path) -> None:
    """Symmetric MinMax ranges of the Conv/MatMul/Gemm tensors of the tile graph, saved to ``cache``."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, save_tensors_data
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(
        str(tile_path),
        list(QUANTIZED_OPS),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"symmetric": True},
    )
    options = ort.SessionOptions()
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    # BASIC: with ALL, the NCHWc layout rewrite keeps reordered copies alive (5.7 GB instead of 1.7)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    # replaces the calibrator's own session (default order, optimizations off): same outputs
    calibrator.infer_session = ort.InferenceSession(
        calibrator.augmented_model_path, options, providers=["CPUExecutionProvider"]
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


def quantize_model(src: Path, cache: Path, include: list[str]) -> onnx.ModelProto:
    """The graph at ``src`` with Q/DQ around the ``include`` nodes, from the ranges in ``cache``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    dst = src.with_name(src.stem + ".int8.onnx")
    quantize_static(
        str(src),
        str(dst),
        calibration_data_reader=None,  # the ranges come from the cache ``calibrate`` wrote
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_quantize=include,
        calibration_cache_path=str(cache),
        extra_options={
            # float biases: a bias quantized to int32 is a DequantizeLinear TensorRT cannot parse
            "QuantizeBias": False,
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
        },
    )
    return onnx.load(str(dst))


def quantize_graphs(
    graphs: dict[str, onnx.ModelProto],
    reader,
    workdir: str | os.PathLike | None = None,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
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
            src = tmp / f"{kind}.onnx"
            onnx.save(graphs[kind], str(src))
            include = nodes_to_quantize(graphs[kind], scopes)
            if not include:
                raise ExportError(f"no node of the {kind} graph is in the int8 scopes {scopes}")
            if kind != "tile":
                _check_ranges(graphs[kind], cache, include)
            try:
                if kind == "tile":
                    calibrate(src, reader, cache, tmp)
                result[kind] = quantize_model(src, cache, include)
            except ExportError:
                raise
            except Exception as error:
                raise ExportError(
                    f"INT8 quantization of the {kind} graph failed: {type(error).__name__}: {error}"
                ) from error
        return result


def _check_ranges(model: onnx.ModelProto, cache: Path, include: list[str]) -> None:
    """Every activation the graph will quantize must have a range from the tile calibration."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(cache)
    inits = {init.name for init in model.graph.initializer}
    included = set(include)
    missing = sorted(
        x for node in model.graph.node
        if node.name in included
        for x in node.input[:1] if x not in inits and x not in ranges
    )
    if missing:
        raise ExportError(
            f"{len(missing)} tensors of the whole graph have no range in the tile calibration "
            f"(e.g. {missing[0]}): the two graphs were not exported from the same modules"
        )


def unsigned_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph, in place, with uint8 activations instead of symmetric int8, for ONNX Runtime on x86.

    Its int8 kernels multiply uint8 activations by int8 weights (U8S8, VNNI's native form), and
    they fuse a whole Conv -> ReLU -> Q chain into one QLinearConv only when the Q's zero point is
    the bottom of its range. So each activation keeps its scale and gets zero point 0 when it is
    non-negative (a ReLU's output, or a tensor that only feeds ReLUs: negatives become 0 either
    way) and 128 otherwise. Below the calibrated maximum both forms give the same values; above
    it a non-negative tensor saturates at 255 steps instead of 127. Measured when the int8 graph
    lowered the DnCNN convs (full model, 768x1024, 2 threads, ``python -m export.bench A --precision
    int8 [--unsigned-int8]``): 4.61 CPU s per thread instead of 4.75, ~0.4 GB more peak memory while
    the graph is parsed and re-serialized. The default layers' MatMuls run as QLinearMatMul in
    either form; outputs stay within 5e-4 of the int8 graph's (tests). TensorRT needs the symmetric
    int8 form the export writes, so only the CPU runtime rewrites it.
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def non_negative(quantize: onnx.NodeProto) -> bool:
        producer = producers.get(quantize.input[0])
        if producer is not None and producer.op_type == "Relu":
            return True
        dequantized = [d for d in consumers.get(quantize.output[0], []) if d.op_type == "DequantizeLinear"]
        readers = [n for d in dequantized for n in consumers.get(d.output[0], [])]
        return bool(readers) and all(n.op_type == "Relu" for n in readers)

    zero_points: dict[str, bool] = {}  # initializer -> every Q using it is non-negative
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zero_points[node.input[2]] = zero_points.get(node.input[2], True) and non_negative(node)
    for name, unsigned_from_zero in sorted(zero_points.items()):
        init = inits.get(name)
        if init is None or init.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(init).any():
            raise ExportError(f"{name}: expected a zero int8 activation zero point, as python -m export.build writes")
        shape = numpy_helper.to_array(init).shape
        init.CopyFrom(numpy_helper.from_array(np.full(shape, 0 if unsigned_from_zero else 128, np.uint8), name))
    return model


def qdq_summary(model: onnx.ModelProto) -> str:
    quant = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dequant = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return f"{quant} QuantizeLinear and {dequant} DequantizeLinear nodes"


def check_symmetric(model: onnx.ModelProto) -> None:
    """TensorRT's explicit quantization: every zero point is an int8 0, and nothing dequantizes int32
    (quantized biases are not parsed; ``quantize_model`` leaves them float)."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        source = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None and source.data_type == onnx.TensorProto.INT32:
            raise ExportError(f"{node.name} dequantizes the int32 tensor {source.name} (a quantized bias); "
                              "TensorRT takes int8 Q/DQ only: quantize with QuantizeBias off")
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zp is not None and (zp.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(zp).any()):
            raise ExportError(f"{node.name} has a non-zero or non-int8 zero point; TensorRT needs symmetric int8")
