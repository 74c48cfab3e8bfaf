"""The torch backend reproduces the reference model exactly, and its runners check what they are fed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rt_helpers import TILE, noise_image

from reference.errors import TruForError
from reference.model import probabilities, to_tensor

SIZES = [(64, 64), (48, 80), (29, 29), (75, 100)]


def reference_outputs(model, rgb):
    with torch.inference_mode():
        probs = probabilities(model(to_tensor(rgb)))
    return probs.map[0].numpy(), probs.conf[0].numpy(), float(probs.score[0])


@pytest.mark.parametrize("shape", SIZES)
def test_torch_whole_graph_equals_the_reference_model_exactly(tiny_model, torch_backend, shape):
    rgb = noise_image(*shape, seed=sum(shape))
    with torch_backend:
        out = torch_backend.whole.infer({"image": rgb[None]})
    ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
    assert ref_map.std() > 1e-3
    np.testing.assert_array_equal(out["map"][0], ref_map)
    np.testing.assert_array_equal(out["conf"][0], ref_conf)
    assert float(out["score"][0]) == ref_score


def test_torch_batched_whole_graph_matches_one_by_one(tiny_model, torch_backend):
    images = np.stack([noise_image(48, 64, seed=s) for s in range(3)])
    with torch_backend:
        batched = torch_backend.whole.infer({"image": images})
    for i, rgb in enumerate(images):
        ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
        np.testing.assert_allclose(batched["map"][i], ref_map, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched["conf"][i], ref_conf, rtol=0, atol=1e-5)
        assert abs(float(batched["score"][i]) - ref_score) < 1e-5


def test_runner_checks_names_dtypes_shapes_and_activation(torch_backend):
    rgb = noise_image(TILE, TILE)
    with pytest.raises(RuntimeError, match="activated"):
        torch_backend.tile.infer({"image": rgb[None]})
    with torch_backend:
        with pytest.raises(TruForError, match="missing \\['image'\\]"):
            torch_backend.whole.infer({"pixels": rgb[None]})
        with pytest.raises(TruForError, match="dtype float32, expected uint8"):
            torch_backend.whole.infer({"image": rgb[None].astype(np.float32)})
        with pytest.raises(TruForError, match="shape"):
            torch_backend.tile.infer({"image": rgb[None, :32]})
    assert not torch_backend.whole.is_active
