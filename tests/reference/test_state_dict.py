"""The model's state_dict is the official one: same names, shapes, dtypes and order."""

from __future__ import annotations

import pytest
import torch

from trufor_testing import shared_path
from reference import build_trufor
from reference.config import PRESETS


def official_entries() -> list[tuple[str, tuple[int, ...], str]]:
    entries = []
    for line in shared_path("state_dict.tsv").read_text().splitlines():
        name, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()[] ").replace(" ", "").split(",") if d)
        entries.append((name, dims, dtype))
    return entries


def test_state_dict_matches_official_list():
    ours = [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in build_trufor().state_dict().items()]
    official = official_entries()
    assert len(official) == 952
    assert ours == official


def test_parameter_counts_match_the_official_model():
    model = build_trufor()
    per_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    assert sum(per_module.values()) == 68_697_421
    assert per_module == {
        "backbone": 64_984_456,
        "decode_head": 1_577_474,
        "decode_head_conf": 1_576_961,
        "detection": 1_281,
        "dncnn": 557_249,
    }


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_shares_the_official_key_layout(preset):
    """Small presets differ in widths and depths only, so training and export code paths are the same."""
    keys = {name.split(".")[0] for name in build_trufor(preset).state_dict()}
    assert keys == {"backbone", "decode_head", "decode_head_conf", "detection", "dncnn"}


def test_eps_values_follow_the_official_traps():
    """eps is not in checkpoints: every LayerNorm/BatchNorm must carry the official value."""
    model = build_trufor()
    eps = {name: module.eps for name, module in model.named_modules() if isinstance(module, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))}
    for name, value in eps.items():
        if name.startswith("backbone.") and (".norm1" in name or ".norm2" in name) and "block" in name:
            expected = 1e-6  # block pre-norms
        elif name.startswith(("backbone.norm", "backbone.extra_norm")):
            expected = 1e-6  # stage-end norms
        elif name == "decode_head.linear_fuse.1":
            expected = 1e-3
        else:
            expected = 1e-5  # patch-embed, SR-attention, FFM norms; DnCNN, FFM and conf-decoder BNs
        assert value == expected, f"{name}: eps {value}, expected {expected}"
    assert eps["decode_head_conf.linear_fuse.1"] == 1e-5
    assert build_trufor(conf_bn_variant="train").decode_head_conf.linear_fuse[1].eps == 1e-3
