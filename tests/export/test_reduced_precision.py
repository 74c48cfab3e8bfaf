"""FP16 and INT8 graphs: their structure (casts, Q/DQ) and their numbers against the PyTorch reference.

Tolerances come from measurements on the perturbed tiny model, 15 images of 5 sizes, default
(synthetic) calibration, Noiseprint++ in float32 in both: the 99th percentile of |map - reference|
was 4.6e-3 (fp16) and 1.2e-2 (int8: encoder query and Mix-FFN input layers), of |conf - reference|
3.8e-3 and 1.0e-2, the max |score - reference| 1.2e-3 and 2.8e-3, and the tile logits' 99th
percentile ~1.1e-2. Maps are compared with a quantile (a few pixels near a decision edge may move
more), scores with the maximum; bounds are ~3x the measured.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_helpers import TILE, export_tiny, random_image, reference_outputs
from onnx import TensorProto, numpy_helper

from export.fp16 import FP32_OPS
from export.int8 import DEFAULT_SCOPES, LINEAR_GROUPS, check_symmetric, nodes_to_quantize, unsigned_activations
from export.manifest import load_manifest
from export.session import cpu_session
from export.errors import ExportError
from runtime.runners.ort_runner import OrtBackend

SIZES = [(29, 29), (100, 37), (64, 96)]
HAS_CONVERTER = importlib.util.find_spec("onnxconverter_common") is not None
needs_converter = pytest.mark.skipif(not HAS_CONVERTER, reason="fp16 export needs onnxconverter-common (pip install onnxconverter-common)")
PRECISIONS = [pytest.param("fp16", marks=needs_converter), "int8"]
# (99th percentile of |map|, |conf| difference, max |score| difference)
TOLERANCES = {"fp16": (1e-2, 1e-2, 5e-3), "int8": (3.5e-2, 3e-2, 8e-3)}
TILE_LOGITS_P99 = 4e-2


def _whole_vs_reference(reference_model, folder, precision):
    manifest = load_manifest(folder, precision)
    session = cpu_session(manifest.graph("whole").path, threads=1)
    stats = []
    for size in SIZES:
        image = random_image((1, *size, 3), seed=size[1])
        ref = reference_outputs(reference_model, image)
        got = dict(zip(("map", "conf", "score"), session.run(None, {"image": image})))
        assert all(v.dtype == np.float32 for v in got.values())
        stats.append((
            float(np.quantile(np.abs(got["map"] - ref["map"]), 0.99)),
            float(np.quantile(np.abs(got["conf"] - ref["conf"]), 0.99)),
            float(np.abs(got["score"] - ref["score"]).max()),
        ))
    return np.max(np.array(stats), axis=0)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_whole_graph_parity(reference_model, artifacts_dir, precision):
    measured = _whole_vs_reference(reference_model, artifacts_dir(precision), precision)
    limits = TOLERANCES[precision]
    for name, value, limit in zip(("map p99", "conf p99", "score max"), measured, limits):
        assert value <= limit, f"{precision} {name} |diff| {value:.2e} > {limit:.0e}"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tile_graph_parity(reference_model, artifacts_dir, precision):
    manifest = load_manifest(artifacts_dir(precision), precision)
    image = random_image((2, TILE, TILE, 3), seed=5)
    ref = reference_outputs(reference_model, image)
    loc, conf = cpu_session(manifest.graph("tile").path, threads=1).run(None, {"image": image})
    assert np.quantile(np.abs(loc - ref["loc_logits"]), 0.99) <= TILE_LOGITS_P99
    assert np.quantile(np.abs(conf - ref["conf_logits"]), 0.99) <= TILE_LOGITS_P99


@pytest.mark.parametrize("precision", PRECISIONS)
def test_score_graph_stays_fp32(artifacts_dir, precision):
    folder = artifacts_dir(precision)
    fp32 = onnx.load(str(load_manifest(artifacts_dir("fp32"), "fp32").graph("score").path))
    reduced = onnx.load(str(load_manifest(folder, precision).graph("score").path))
    assert [n.op_type for n in reduced.graph.node] == [n.op_type for n in fp32.graph.node]
    assert all(init.data_type != TensorProto.FLOAT16 for init in reduced.graph.initializer)


@needs_converter
def test_fp16_graph_has_fp16_weights_and_fp32_islands(artifacts_dir):
    model = onnx.load(str(load_manifest(artifacts_dir("fp16"), "fp16").graph("whole").path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    noiseprint = [n for n in convs if "/dncnn/" in n.name]
    encoder = [n for n in convs if "/dncnn/" not in n.name]
    assert encoder and sum(inits[n.input[1]] == TensorProto.FLOAT16 for n in encoder) >= len(encoder) - 2
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    # Noiseprint++ amplifies rounding 2000 to 3000 times (benchmarks.noiseprint_precision): all of it in float32
    assert noiseprint and all(inits[n.input[1]] == TensorProto.FLOAT for n in noiseprint)
    assert all(types.get(n.input[0]) == TensorProto.FLOAT for n in noiseprint)
    islands = [n for n in model.graph.node if n.op_type in FP32_OPS]
    assert any(n.op_type == "LayerNormalization" for n in islands)
    assert all(types.get(n.input[0]) == TensorProto.FLOAT for n in islands)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert {a.i for n in casts for a in n.attribute if a.name == "to"} >= {TensorProto.FLOAT, TensorProto.FLOAT16}
    # the outputs and the score pooling are computed in float32
    assert all(types.get(o.name, TensorProto.FLOAT) == TensorProto.FLOAT for o in model.graph.output)
    reductions = [n for n in model.graph.node if n.op_type == "ReduceLogSumExp"]
    assert reductions and all(types.get(n.input[0]) == TensorProto.FLOAT for n in reductions)


def test_int8_graph_is_symmetric_per_channel_qdq(artifacts_dir):
    model = onnx.load(str(load_manifest(artifacts_dir("int8"), "int8").graph("whole").path))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:
        if len(node.input) > 2 and node.input[2] in inits:
            assert not numpy_helper.to_array(inits[node.input[2]]).any(), f"{node.name}: zero point is not 0"
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized = [
        n for n in model.graph.node
        if n.op_type in ("Conv", "MatMul") and (p := producers.get(n.input[1])) is not None and p.op_type == "DequantizeLinear"
    ]
    # per-channel weights: one scale per output channel (a MatMul weight is [in, out])
    weight_dq = producers[quantized[0].input[1]]
    scale = numpy_helper.to_array(inits[weight_dq.input[1]])
    assert scale.ndim == 1 and scale.size == numpy_helper.to_array(inits[weight_dq.input[0]]).shape[-1]
    fp32 = onnx.load(str(load_manifest(artifacts_dir("fp32"), "fp32").graph("whole").path))
    assert {n.name for n in quantized} == set(nodes_to_quantize(fp32, DEFAULT_SCOPES)), "default int8 scopes"
    # Noiseprint++ stays float32: int8 is not faithful with the released weights
    assert not [n.name for n in quantized if "/dncnn/" in n.name]
    assert {n.name.split("/")[-2] for n in quantized} == {"q", "fc1"}


def test_int8_scopes_split_the_encoder_linear_layers(artifacts_dir):
    """Every encoder Linear layer is in exactly one group; the groups together are encoder_linear."""
    model = onnx.load(str(load_manifest(artifacts_dir("fp32"), "fp32").graph("whole").path))
    groups = {scope: set(nodes_to_quantize(model, (scope,))) for scope in LINEAR_GROUPS}
    assert all(groups.values()), {scope: len(nodes) for scope, nodes in groups.items()}
    assert sum(map(len, groups.values())) == len(set().union(*groups.values()))
    assert set().union(*groups.values()) == set(nodes_to_quantize(model, ("encoder_linear",)))
    assert all("/mlp/fc1/" in node for node in groups["encoder_fc1"])
    both = nodes_to_quantize(model, ("dncnn", "encoder_q"))
    assert set(both) == set(nodes_to_quantize(model, ("dncnn",))) | groups["encoder_q"]
    with pytest.raises(ValueError, match="unknown int8 scopes"):
        nodes_to_quantize(model, ("decoder",))


CONV_LAYERS = ("dncnn", "encoder_conv", "encoder_fc1")


@pytest.fixture(scope="module")
def conv_int8_manifest(tmp_path_factory):
    """An int8 export whose layers include convolutions with biases (DnCNN, encoder convs)."""
    folder = tmp_path_factory.mktemp("int8-convs")
    export_tiny(folder, "int8", int8_layers=CONV_LAYERS)
    return load_manifest(folder, "int8")


def test_int8_layers_choose_what_is_quantized(artifacts_dir, conv_int8_manifest):
    assert json.loads(conv_int8_manifest.path.read_text())["int8_layers"] == list(CONV_LAYERS)
    model = onnx.load(str(conv_int8_manifest.graph("whole").path))
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized = {
        n.name for n in model.graph.node
        if n.op_type in ("Conv", "MatMul") and (p := producers.get(n.input[1])) is not None and p.op_type == "DequantizeLinear"
    }
    fp32 = onnx.load(str(load_manifest(artifacts_dir("fp32"), "fp32").graph("whole").path))
    assert quantized == set(nodes_to_quantize(fp32, CONV_LAYERS))


@pytest.mark.parametrize("graph", ["whole", "tile"])
def test_quantized_convs_keep_float_biases(conv_int8_manifest, graph):
    """TensorRT parses int8 Q/DQ only: a bias quantized to int32 (an INT32 DequantizeLinear) fails the build."""
    model = onnx.load(str(conv_int8_manifest.graph(graph).path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert not [n.name for n in dequantized if n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT32]
    convs = [n for n in model.graph.node
             if n.op_type == "Conv" and getattr(producers.get(n.input[1]), "op_type", None) == "DequantizeLinear"]
    assert len([n for n in convs if "/dncnn/" in n.name]) > 1 and [n for n in convs if "/backbone/" in n.name]
    biased = [n for n in convs if len(n.input) > 2]
    assert biased and all(inits[n.input[2]].data_type == TensorProto.FLOAT for n in biased)


def test_int32_dequantize_is_refused():
    weights = numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_q")
    scale = numpy_helper.from_array(np.ones(4, np.float32), "bias_scale")
    node = onnx.helper.make_node("DequantizeLinear", ["bias_q", "bias_scale"], ["bias"], name="bias_dq", axis=0)
    graph = onnx.helper.make_graph([node], "g", [], [onnx.helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4])],
                                   [weights, scale])
    with pytest.raises(ExportError, match="bias_dq dequantizes the int32 tensor bias_q"):
        check_symmetric(onnx.helper.make_model(graph))


def test_cpu_uint8_rewrite_keeps_the_int8_numbers(artifacts_dir):
    """The ONNX Runtime CPU form of the int8 graph (``unsigned_activations``): uint8 activations on the
    same grid (zero point 0 for the ReLU side, 128 elsewhere), weights untouched, same outputs up to
    the fused kernels' rounding and the later saturation of values above the calibrated maximum
    (measured with the default encoder layers: 0 here; bound 5e-4, far below the int8 graph's ~1e-2
    distance to the reference)."""
    path = load_manifest(artifacts_dir("int8"), "int8").graph("whole").path
    model = unsigned_activations(onnx.load(str(path)))
    inits = {i.name: i for i in model.graph.initializer}
    activation_zero_points = {
        n.input[2] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    }
    assert activation_zero_points
    assert all(inits[name].data_type == TensorProto.UINT8 for name in activation_zero_points)
    assert {int(numpy_helper.to_array(inits[name])) for name in activation_zero_points} <= {0, 128}
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) > 1]
    assert weights and all(inits[n.input[0]].data_type == TensorProto.INT8 for n in weights)

    signed = cpu_session(path, threads=1)
    unsigned = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for size in SIZES:
        image = random_image((1, *size, 3), seed=size[0])
        for want, got in zip(signed.run(None, {"image": image}), unsigned.run(None, {"image": image})):
            np.testing.assert_allclose(got, want, atol=5e-4)


def test_export_writes_the_uint8_form_and_the_cpu_backend_runs_it(artifacts_dir):
    """The rewrite happens at export (the manifest lists the file), not when a session loads."""
    manifest = load_manifest(artifacts_dir("int8"), "int8")
    for graph in ("whole", "tile"):
        entry = manifest.graph(graph)
        rewritten = unsigned_activations(onnx.load(str(entry.path)))
        assert onnx.load(str(entry.uint8_activations)).graph == rewritten.graph, graph
    assert manifest.graph("score").uint8_activations is None  # float32 in every precision
    backend = OrtBackend(artifacts_dir("int8"), "int8", providers=["CPUExecutionProvider"], threads=1)
    # The CPU loads ONNX Runtime's optimized form of the uint8 files (tests/export/test_ort_optimized.py).
    assert [runner.path for runner in backend.runners.values()] == [
        manifest.graph(g).ort_optimized.path for g in ("whole", "tile", "score")]
    assert [manifest.graph(g).cpu_file[0] for g in ("whole", "tile", "score")] == [
        manifest.graph("whole").uint8_activations, manifest.graph("tile").uint8_activations, manifest.graph("score").path]
    on_gpu = OrtBackend(artifacts_dir("int8"), "int8", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [runner.path for runner in on_gpu.runners.values()] == [manifest.graph(g).path for g in ("whole", "tile", "score")]
    signed = cpu_session(manifest.graph("whole").path, threads=1)
    image = random_image((1, 64, 96, 3), seed=3)
    with backend:
        got = backend.whole.infer({"image": image})
    for name, want in zip(("map", "conf", "score"), signed.run(None, {"image": image})):
        np.testing.assert_allclose(got[name], want, atol=5e-4)
