"""FP16 graphs with FP32 islands, written as explicit Casts (how TensorRT strongly typed networks take precision).

Kept in float32:
- the whole Noiseprint++ DnCNN: with the released weights it amplifies rounding 2000 to 3000 times (float32
  against float64: up to 1.9e-4 relative RMS error on the residual), so float16 storage (float32
  accumulation) makes a residual up to 68% off and only 0.83 correlated with the float64 one
  (``python -m benchmarks.noiseprint_precision``);
- by op type: LayerNormalization, Softmax/LogSoftmax (attention and the FFM context), every
  reduction (the FRM global avg/max pooling, the score's logsumexp/softmax over H*W pixels), Exp/Log;
- by node: the final full-resolution Resizes and everything after them (output softmax/sigmoid,
  detection pooling and MLP), and the integer shape arithmetic (image sizes above 2048 are not
  exact in float16, so a size computed in it would be off by one).
Everything else (the encoders' convolutions and matmuls, GELU, the decoders) runs in float16.
"""

from __future__ import annotations

import warnings

import onnx
from onnx import TensorProto

from .errors import ExportError

FP32_OPS = (
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceLogSumExp",
    "Exp",
    "Log",
)
_SHAPE_SOURCES = {"Shape", "Size"}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def shape_nodes(graph: onnx.GraphProto) -> set[str]:
    """Nodes that compute only from shapes and constants (no pixel data flows into them)."""
    data = {i.name for i in graph.input}
    result = set()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in _SHAPE_SOURCES or not any(x in data for x in node.input if x):
            result.add(node.name)
        else:
            data.update(node.output)
    return result


def noiseprint_nodes(graph: onnx.GraphProto) -> set[str]:
    """The Noiseprint++ DnCNN's nodes (scope ``dncnn``, as the exporter names them)."""
    return {node.name for node in graph.node if "/dncnn/" in node.name}


def output_nodes(graph: onnx.GraphProto) -> set[str]:
    """The last Resize on every path to an output, and all nodes after it."""
    producers = _producers(graph)
    resizes: set[str] = set()
    stack = [o.name for o in graph.output]
    seen: set[str] = set()
    while stack:  # walk back from the outputs to the first Resize on each path
        name = stack.pop()
        node = producers.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Resize":
            resizes.add(node.name)
        else:
            stack.extend(x for x in node.input if x)
    tail = set(resizes)
    tensors: set[str] = set()
    for node in graph.node:
        if node.name in tail or any(x in tensors for x in node.input):
            tail.add(node.name)
            tensors.update(node.output)
    return tail


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float16 graph; uint8/float32 I/O unchanged. Raises ExportError if the converter is missing or fails."""
    try:
        from onnxconverter_common import float16
    except ImportError as error:
        raise ExportError(
            "fp16 export needs onnxconverter-common: pip install onnxconverter-common"
        ) from error
    for i, node in enumerate(model.graph.node):  # the block list works by node name
        if not node.name:
            node.name = f"node_{i}_{node.op_type}"
    blocked = shape_nodes(model.graph) | output_nodes(model.graph) | noiseprint_nodes(model.graph)
    blocked |= {n.name for n in model.graph.node if n.op_type in FP32_OPS}
    _unshare_initializers(model, blocked)
    try:
        # The converter warns once per weight below float16's smallest normal (it clamps them to
        # +-1e-7); with real weights that is thousands of lines, so they are counted instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", message="the float32 number .* will be truncated", category=UserWarning)
            converted = float16.convert_float_to_float16(
                model,
                keep_io_types=True,
                max_finite_val=65504.0,
                op_block_list=list(FP32_OPS),
                node_block_list=sorted(blocked),
            )
    except Exception as error:
        raise ExportError(f"float16 conversion failed: {type(error).__name__}: {error}") from error
    clamped = sum("will be truncated" in str(w.message) for w in caught)
    for w in caught:
        if "will be truncated" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if clamped:
        print(f"  float16: {clamped} weight values below 1e-7 in magnitude were clamped to +-1e-7")
    _fix_casts(converted)
    _restore_output_types(converted, {o.name: o.type.tensor_type.elem_type for o in model.graph.output})
    check_fp16(converted)
    return converted


def _unshare_initializers(model: onnx.ModelProto, blocked: set[str]) -> None:
    """Give float32 nodes their own copy of an initializer they share with float16 nodes.

    The simplifier merges identical constants (with a fresh init, every zero bias of one width is
    one tensor, e.g. a LayerNorm bias and a folded conv bias); the converter then keeps the shared
    tensor in float32 for the blocked node and the float16 node gets a float32 input.
    """
    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, set()).add(node.name in blocked)
    shared = {name for name, kinds in users.items() if len(kinds) == 2}
    for name in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__fp32"
        model.graph.initializer.append(copy)
    for node in model.graph.node:
        if node.name in blocked:
            for i, name in enumerate(node.input):
                if name in shared:
                    node.input[i] = f"{name}__fp32"


def _fix_casts(model: onnx.ModelProto) -> None:
    """The converter retypes an integer -> float Cast's output to float16 (the uint8 image) but not its ``to``."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in model.graph.input})
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    for node in model.graph.node:
        if node.op_type != "Cast" or types.get(node.input[0], TensorProto.FLOAT) in floats:
            continue
        if types.get(node.output[0]) == TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16


def _restore_output_types(model: onnx.ModelProto, original: dict[str, int]) -> None:
    """Outputs made by blocked (float32) nodes get a float16 Cast from the converter; make it a float32 no-op."""
    producers = _producers(model.graph)
    for output in model.graph.output:
        elem_type = original.get(output.name)
        if elem_type is None or output.type.tensor_type.elem_type == elem_type:
            continue
        node = producers.get(output.name)
        if node is None or node.op_type != "Cast":
            raise ExportError(f"fp16 conversion changed the type of output {output.name} and no Cast makes it")
        for attr in node.attribute:
            if attr.name == "to":
                attr.i = elem_type
        output.type.tensor_type.elem_type = elem_type


def _fp16_weight_count(model: onnx.ModelProto) -> tuple[int, int]:
    """(float16, float32) counts of the weight initializers read by Conv/MatMul/Gemm."""
    inits = {init.name: init.data_type for init in model.graph.initializer}
    producers = _producers(model.graph)
    half = full = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            weight = node.input[1]
            # the converter may put a Cast between a float32 initializer and a blocked node
            if weight not in inits and weight in producers and producers[weight].op_type == "Cast":
                weight = producers[weight].input[0]
            if weight in inits:
                half += inits[weight] == TensorProto.FLOAT16
                full += inits[weight] == TensorProto.FLOAT
    return half, full


def check_fp16(model: onnx.ModelProto) -> None:
    """Conv/MatMul/Gemm weights are float16, and every FP32_OPS and Noiseprint++ node still computes in float32."""
    half, full = _fp16_weight_count(model)
    if half == 0:
        raise ExportError("the fp16 graph has no float16 Conv/MatMul/Gemm weights: the conversion did nothing")
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.input})
    noiseprint = noiseprint_nodes(model.graph)
    if not any(node.op_type == "Conv" for node in model.graph.node if node.name in noiseprint):
        raise ExportError("no Noiseprint++ (/dncnn/) Conv in the graph: cannot keep it in float32")
    wrong = [
        node.name for node in model.graph.node
        if (node.op_type in FP32_OPS or (node.name in noiseprint and node.op_type != "Cast"))
        and types.get(node.input[0]) == TensorProto.FLOAT16
    ]
    if wrong:
        raise ExportError(f"{len(wrong)} nodes meant to stay float32 compute in float16, e.g. {wrong[0]}")


def fp16_summary(model: onnx.ModelProto) -> str:
    half, full = _fp16_weight_count(model)
    casts = sum(node.op_type == "Cast" for node in model.graph.node)
    return f"{half} float16 and {full} float32 Conv/MatMul/Gemm weights, {casts} Cast nodes"
