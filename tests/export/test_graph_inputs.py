"""The uint8 image input of every exported graph feeds one Cast: the only form TensorRT takes a UINT8 input in."""

from __future__ import annotations

import importlib.util

import onnx
import pytest
from onnx import TensorProto, helper

from export.contract import graph_specs
from export.manifest import load_manifest
from export.onnx_export import check_uint8_inputs_cast_first
from export.errors import ExportError

needs_converter = pytest.mark.skipif(importlib.util.find_spec("onnxconverter_common") is None,
                                     reason="fp16 export needs onnxconverter-common (pip install onnxconverter-common)")


@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=needs_converter), "int8"])
@pytest.mark.parametrize("graph", [kind for kind, spec in graph_specs().items()
                                   if any(t.dtype == "uint8" for t in spec.inputs)])
def test_image_input_is_read_by_one_cast_only(artifacts_dir, precision, graph):
    model = onnx.load(str(load_manifest(artifacts_dir(precision), precision).graph(graph).path))
    readers = [node.op_type for node in model.graph.node if "image" in node.input]
    assert readers == ["Cast"], f"{precision} {graph}: image is read by {readers}"


def test_a_transpose_before_the_cast_is_refused():
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], name="t", perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["nchw"], ["x"], name="c", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 4, 3])],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(ExportError, match="uint8 input 'image' is read by Transpose t; TensorRT needs it to feed one Cast"):
        check_uint8_inputs_cast_first(helper.make_model(graph), "whole")
