"""FP32 graphs against the PyTorch reference: numbers, I/O contract, structure, metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export.contract import OPSET, graph_specs
from export.manifest import load_manifest
from export.session import cpu_session
from reference.model import probabilities, TruForOutput

from export_helpers import TILE, random_image, reference_outputs

MAP_ATOL = 1e-4
SCORE_ATOL = 1e-5


@pytest.fixture(scope="module")
def manifest(artifacts_dir):
    return load_manifest(artifacts_dir("fp32"), "fp32")


@pytest.fixture(scope="module")
def sessions(manifest):
    return {kind: cpu_session(entry.path, threads=1) for kind, entry in manifest.graphs.items()}


@pytest.mark.parametrize("size", [(29, 29), (33, 47), (100, 37), (64, 96)])
def test_whole_graph_matches_reference(reference_model, sessions, size):
    image = random_image((1, *size, 3), seed=size[0])
    ref = reference_outputs(reference_model, image)
    got = dict(zip(["map", "conf", "score"], sessions["whole"].run(None, {"image": image})))
    assert ref["map"].std() > 0.05, "test model gives near-constant maps; the comparison would be weak"
    for name, atol in (("map", MAP_ATOL), ("conf", MAP_ATOL), ("score", SCORE_ATOL)):
        assert got[name].dtype == np.float32 and got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=atol, err_msg=f"{name} at {size}")


def test_whole_graph_batches_independently(reference_model, sessions):
    image = random_image((2, 48, 40, 3), seed=7)
    got = sessions["whole"].run(None, {"image": image})
    for i in range(2):
        ref = reference_outputs(reference_model, image[i : i + 1])
        np.testing.assert_allclose(got[0][i], ref["map"][0], rtol=0, atol=MAP_ATOL)
        np.testing.assert_allclose(got[2][i], ref["score"][0], rtol=0, atol=SCORE_ATOL)


@pytest.mark.parametrize("batch", [1, 3])  # the trace used 2: no batch size may be baked in
def test_tile_graph_matches_reference_logits(reference_model, sessions, batch):
    image = random_image((batch, TILE, TILE, 3), seed=3)
    ref = reference_outputs(reference_model, image)
    loc, conf = sessions["tile"].run(None, {"image": image})
    assert loc.shape == (batch, 2, TILE, TILE) and conf.shape == (batch, 1, TILE, TILE)
    np.testing.assert_allclose(loc, ref["loc_logits"], rtol=0, atol=MAP_ATOL)
    np.testing.assert_allclose(conf, ref["conf_logits"], rtol=0, atol=MAP_ATOL)


@pytest.mark.parametrize("size", [(64, 96), (33, 47), (700, 900)])
def test_score_graph_matches_forward_score(reference_model, sessions, size):
    generator = torch.Generator().manual_seed(size[1])
    loc = torch.randn(1, 2, *size, generator=generator) * 3
    conf = torch.randn(1, 1, *size, generator=generator) * 3
    with torch.no_grad():
        det = reference_model.forward_score(loc, conf)
        ref = probabilities(TruForOutput(loc, conf, det, conf))
    got = sessions["score"].run(None, {"loc_logits": loc.numpy(), "conf_logits": conf.numpy()})
    for name, value, atol in zip(("map", "conf", "score"), got, (MAP_ATOL, MAP_ATOL, SCORE_ATOL)):
        np.testing.assert_allclose(value, getattr(ref, name).numpy(), rtol=0, atol=atol, err_msg=name)


def test_graph_structure_and_contract(manifest):
    specs = graph_specs(TILE)
    for kind, entry in manifest.graphs.items():
        model = onnx.load(str(entry.path))
        onnx.checker.check_model(model, full_check=True)
        ops = {node.op_type for node in model.graph.node}
        assert not ops & {"If", "Loop", "Scan"}, kind
        assert model.opset_import[0].version == OPSET
        spec = specs[kind]
        for value, tensor in zip(list(model.graph.input) + list(model.graph.output), spec.inputs + spec.outputs):
            assert value.name == tensor.name
            assert onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) == np.dtype(tensor.dtype)
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims == list(tensor.shape), (kind, value.name, dims)
        assert entry.spec == spec  # the manifest gives back the contract's spec
        if kind != "score":
            assert "LayerNormalization" in ops
            producers = {o: n.op_type for n in model.graph.node for o in n.output}
            bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
            # DnCNN and decoder BNs fold into their convs; only the 4 FFM output BNs (after an Add) stay
            assert len(bns) == 4 and all(producers[n.input[0]] == "Add" for n in bns)


def test_metadata_props(manifest):
    for kind, entry in manifest.graphs.items():
        meta = {p.key: p.value for p in onnx.load(str(entry.path), load_external_data=False).metadata_props}
        assert meta["trufor.graph"] == kind
        assert meta["trufor.precision"] == "fp32" and meta["trufor.preset"] == "tiny"
        assert meta["trufor.opset"] == str(OPSET) and meta["trufor.tile_size"] == str(TILE)
        assert meta["trufor.checkpoint_sha256"] == ""
        assert json.loads(meta["trufor.preprocessing"])["scale"] == 256.0
