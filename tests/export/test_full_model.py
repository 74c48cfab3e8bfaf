"""The full ``trufor`` preset: fp32 whole graph against PyTorch (slow: ~1-2 minutes, ~3 GB)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import perturb_weights, random_image, reference_outputs

from export.contract import graph_specs
from export.onnx_export import export_graph, save_model
from export.pipeline import EXPORT_OVERRIDES
from export.session import cpu_session
from export.wrappers import WholeImageModel
from reference.build import build_trufor


@pytest.mark.slow
def test_full_trufor_whole_graph_fp32_parity(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = perturb_weights(build_trufor("trufor"))
    exported = build_trufor("trufor", **EXPORT_OVERRIDES)
    exported.load_state_dict(reference.state_dict())
    example = (torch.randint(0, 256, (2, 64, 96, 3), dtype=torch.uint8),)
    path = save_model(export_graph(WholeImageModel(exported.eval()), example, graph_specs()["whole"]), tmp_path / "whole.onnx")
    session = cpu_session(path, threads=2)
    image = random_image((1, 64, 96, 3), seed=11)
    ref = reference_outputs(reference, image)
    got = dict(zip(("map", "conf", "score"), session.run(None, {"image": image})))
    assert ref["map"].std() > 0.01
    np.testing.assert_allclose(got["map"], ref["map"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["conf"], ref["conf"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got["score"], ref["score"], rtol=0, atol=1e-5)
