"""PyTorch -> ONNX for one graph: trace, simplify, check, stamp metadata, save.

Exporter choice: the TorchScript exporter (``dynamo=False``). On this model the dynamo exporter
(torch 2.13) takes ~45 s for the tiny preset against ~2 s, and ``torch.export`` adds guards from
0/1 specialization (the stage-4 grid must not be 1 pixel), so a 29 x 29 input would be outside
its valid range. The TorchScript trace keeps every shape symbolic, gives scoped tensor names
(``/model/dncnn/dncnn.2/Conv_output_0``) that are identical in the tile and whole graphs, and has
no If/Loop once ``expand`` replaces ``tile`` in the reference. onnxslim then folds the shape
arithmetic; the exporter's constant folding has already folded the Conv+BatchNorm pairs.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import onnxslim
import torch
from torch import nn

from reference.outputs import atomic_write

from .contract import OPSET, GraphSpec
from .errors import ExportError

# ONNX's protobuf limit: larger models need the path-based checker and external data.
_PROTOBUF_LIMIT = 2**31 - 1
_CONTROL_FLOW = {"If", "Loop", "Scan"}


def trace_to_onnx(module: nn.Module, example: Sequence[torch.Tensor], spec: GraphSpec) -> onnx.ModelProto:
    """Export ``module`` at ``example`` with the spec's names and dynamic axes (no simplification yet)."""
    with tempfile.TemporaryDirectory(prefix="trufor-export-") as tmp:
        path = Path(tmp) / f"{spec.kind}.onnx"
        # TracerWarnings are left visible on purpose: they flag values a trace freezes.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    tuple(example),
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=[t.name for t in spec.inputs],
                    output_names=[t.name for t in spec.outputs],
                    dynamic_axes=spec.dynamic_axes(),
                    do_constant_folding=True,
                )
        return onnx.load(str(path))


def simplify(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """onnxslim constant folding and dead-code removal; any failure is an ExportError."""
    try:
        slimmed = onnxslim.slim(model)
    except Exception as error:  # onnxslim raises assorted types
        raise ExportError(
            f"onnxslim failed on the {what} graph: {type(error).__name__}: {error}. "
            "Try another onnxslim version (pip install -U onnxslim) and report the failure."
        ) from error
    if slimmed is None:
        raise ExportError(f"onnxslim returned no model for the {what} graph")
    return slimmed


def op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def check_structure(model: onnx.ModelProto, spec: GraphSpec, *, expect_folded_bn: bool = True) -> None:
    """The checks every graph must pass before it is written: valid ONNX, no control flow, folded BNs, I/O names."""
    try:
        if model.ByteSize() < _PROTOBUF_LIMIT:
            onnx.checker.check_model(model, full_check=True)
        else:  # the path-based checker is the only one that takes > 2 GB
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                onnx.save(model, path, save_as_external_data=True)
                onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the {spec.kind} graph fails onnx.checker: {error}") from error
    counts = op_counts(model)
    flow = sorted(_CONTROL_FLOW & set(counts))
    if flow:
        raise ExportError(
            f"the {spec.kind} graph contains control flow ({', '.join(flow)}); TensorRT and the "
            "runtime expect a flat graph. A data-dependent Python branch in the model was traced: "
            "rewrite it with tensor ops (e.g. expand instead of tile)"
        )
    if expect_folded_bn:
        producers = {out: node.op_type for node in model.graph.node for out in node.output}
        unfolded = [
            node.name for node in model.graph.node
            if node.op_type == "BatchNormalization" and producers.get(node.input[0]) == "Conv"
        ]
        if unfolded:
            raise ExportError(
                f"{len(unfolded)} BatchNormalization nodes directly after a Conv were not folded in the "
                f"{spec.kind} graph (e.g. {unfolded[0]}); export the model in eval mode"
            )
    check_uint8_inputs_cast_first(model, spec.kind)
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    expected = ([t.name for t in spec.inputs], [t.name for t in spec.outputs])
    if names != expected:
        raise ExportError(f"the {spec.kind} graph has I/O {names}, the contract says {expected}")
    for value, tensor in zip(list(model.graph.input) + list(model.graph.output), spec.inputs + spec.outputs):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
        if dtype != tensor.dtype:
            raise ExportError(f"{spec.kind} graph: {value.name} is {dtype}, the contract says {tensor.dtype}")


def check_uint8_inputs_cast_first(model: onnx.ModelProto, what: str) -> None:
    """A uint8 input must feed exactly one Cast: TensorRT accepts UINT8 network inputs only that way
    (onnx-tensorrt operators.md), so an exported image -> Transpose -> Cast graph would not build."""
    for value in model.graph.input:
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        readers = [node for node in model.graph.node if value.name in node.input]
        if [node.op_type for node in readers] != ["Cast"]:
            found = ", ".join(f"{node.op_type} {node.name}" for node in readers) or "nothing"
            raise ExportError(
                f"the {what} graph's uint8 input {value.name!r} is read by {found}; TensorRT needs it to feed "
                "one Cast and nothing else: cast the input to float before any other op in the wrapper"
            )


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, object]) -> None:
    """Replace the graph's ``metadata_props`` (values that are not strings are stored as JSON)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write atomically (``atomic_write``), so a crash never leaves a half-written graph."""
    path = Path(path)
    if model.ByteSize() >= _PROTOBUF_LIMIT:
        raise ExportError(
            f"{path.name} would exceed ONNX's 2 GB protobuf limit; external-data graphs are not "
            "supported by this exporter yet"
        )
    atomic_write(path, lambda file: onnx.save(model, file))
    return path


def apply_io_shapes(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Write the contract's I/O dims (named dynamic axes, fixed sizes) over what the exporter inferred."""
    values = list(model.graph.input) + list(model.graph.output)
    for value, tensor in zip(values, spec.inputs + spec.outputs):
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for size in tensor.shape:
            dim = shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size


def export_graph(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    spec: GraphSpec,
) -> onnx.ModelProto:
    """Trace, simplify and check one fp32 graph; metadata and saving are the caller's."""
    model = simplify(trace_to_onnx(module, example, spec), spec.kind)
    apply_io_shapes(model, spec)
    check_structure(model, spec)
    return model
