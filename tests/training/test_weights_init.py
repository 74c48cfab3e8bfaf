"""Head initialisation, MiT loading into both streams, and partial loading."""

from __future__ import annotations

import pytest
import torch

from reference.errors import CheckpointError
from training.config import TrainConfig
from training.loop import build_model
from training.weights import init_decoder_, load_matching, load_mit


def tiny_model():
    return build_model(TrainConfig(phase=2, preset="tiny", noiseprint="random"))


def test_training_models_use_bn_eps_1e_3_in_both_decoders():
    model = tiny_model()
    assert model.decode_head.linear_fuse[1].eps == 1e-3
    assert model.decode_head_conf.linear_fuse[1].eps == 1e-3


def test_decoder_init_is_kaiming_normal_fan_in():
    model = tiny_model()
    torch.manual_seed(0)
    init_decoder_(model.decode_head)
    fuse = model.decode_head.linear_fuse
    fan_in = fuse[0].weight[0].numel()
    assert float(fuse[0].weight.detach().std()) == pytest.approx((2.0 / fan_in) ** 0.5, rel=0.1)
    assert not fuse[0].bias.detach().any()
    assert torch.equal(fuse[1].weight, torch.ones_like(fuse[1].weight))
    assert torch.equal(fuse[1].bias, torch.zeros_like(fuse[1].bias))


def fake_mit(model, prefix=""):
    """A MiT-layout state for the tiny preset's stream, plus a classifier head to be skipped."""
    generator = torch.Generator().manual_seed(1)
    state = {
        f"{prefix}{name}": torch.randn(tensor.shape, generator=generator)
        for name, tensor in model.backbone.state_dict().items()
        if name.startswith(("patch_embed", "block", "norm")) and tensor.is_floating_point()
    }
    state["head.weight"] = torch.zeros(10, 128)
    return state


@pytest.mark.parametrize("layout", ["imagenet", "segformer"])
def test_mit_is_copied_into_both_streams(tmp_path, layout):
    model = tiny_model()
    state = fake_mit(model, "backbone." if layout == "segformer" else "")
    if layout == "segformer":
        state["decode_head.linear_pred.weight"] = torch.zeros(2, 8)
    torch.save({"state_dict": state}, tmp_path / "mit.pth")
    fusion_before = model.backbone.FRMs[0].spatial_weights.mlp[0].weight.clone()
    count = load_mit(model.backbone, tmp_path / "mit.pth")
    own = model.backbone.state_dict()
    prefix = "backbone." if layout == "segformer" else ""
    assert count == 2 * (len(state) - 1 - (layout == "segformer"))
    for name in ("patch_embed1.proj.weight", "block2.0.attn.kv.weight", "norm4.bias"):
        assert torch.equal(own[name], state[prefix + name]) and torch.equal(own[f"extra_{name}"], state[prefix + name])
    assert torch.equal(model.backbone.FRMs[0].spatial_weights.mlp[0].weight, fusion_before)


def test_mit_of_another_size_is_refused(tmp_path):
    model = tiny_model()
    state = fake_mit(model)
    state["patch_embed1.proj.weight"] = torch.zeros(64, 3, 7, 7)
    del state["norm1.weight"]
    torch.save(state, tmp_path / "mit.pth")
    with pytest.raises(CheckpointError, match="missing: norm1.weight.*shape mismatch: patch_embed1.proj.weight"):
        load_mit(model.backbone, tmp_path / "mit.pth")


def test_load_matching_loads_what_exists_and_refuses_other_shapes(tmp_path):
    source = tiny_model()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("detection.")}
    torch.save({"state_dict": state}, tmp_path / "partial.pth")
    target = tiny_model()
    loaded, missing = load_matching(target, tmp_path / "partial.pth")
    assert "detection" not in loaded and all(k.startswith("detection.") for k in missing) and missing
    assert torch.equal(target.dncnn[0].weight, source.dncnn[0].weight)
    state["dncnn.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="other shapes"):
        load_matching(target, tmp_path / "bad.pth")
