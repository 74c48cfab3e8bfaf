"""Numerical checks of the parts that are easy to get wrong, each against a direct formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trufor_testing import randomize_
from reference import build_trufor
from reference.encoder import Attention, CrossAttention, FeatureRectifyModule
from reference.heads import MLPDecoder, weighted_statistics_pooling
from reference.model import to_tensor
from reference.model import probabilities

torch.manual_seed(0)


def test_weighted_statistics_pooling_formula():
    values = torch.randn(2, 1, 7, 5, dtype=torch.float64) * 3
    log_weights = torch.randn(2, 1, 7, 5, dtype=torch.float64)
    for logw in (None, log_weights):
        pooled = weighted_statistics_pooling(values, logw).numpy()
        for b in range(2):
            v = values[b].flatten().numpy()
            w = np.ones_like(v) if logw is None else np.exp(logw[b].flatten().numpy())
            w = w / w.sum()
            expected = [
                -np.log(np.sum(w * np.exp(-v))),  # soft-min
                np.log(np.sum(w * np.exp(v))),  # soft-max
                np.sum(w * v),
                np.sum(w * v * v),
            ]
            np.testing.assert_allclose(pooled[b], expected, rtol=1e-12)


def test_feature_rectify_orders_gates_as_the_official_model():
    dim = 4
    frm = randomize_(FeatureRectifyModule(dim)).double()
    rgb, extra = torch.randn(1, dim, 3, 5, dtype=torch.float64), torch.randn(1, dim, 3, 5, dtype=torch.float64)
    vector = torch.cat((rgb.mean((2, 3)), extra.mean((2, 3)), rgb.amax((2, 3)), extra.amax((2, 3))), dim=1)
    mlp = frm.channel_weights.mlp
    cw = torch.sigmoid(F.linear(torch.relu(F.linear(vector, mlp[0].weight, mlp[0].bias)), mlp[2].weight, mlp[2].bias))
    conv = frm.spatial_weights.mlp
    sw = torch.sigmoid(conv[2](torch.relu(conv[0](torch.cat((rgb, extra), dim=1)))))
    cw0, cw1 = cw[:, :dim, None, None], cw[:, dim:, None, None]
    expected_rgb = rgb + 0.5 * cw1 * extra + 0.5 * sw[:, 1:2] * extra
    expected_extra = extra + 0.5 * cw0 * rgb + 0.5 * sw[:, 0:1] * rgb
    out_rgb, out_extra = frm(rgb, extra)
    torch.testing.assert_close(out_rgb, expected_rgb)
    torch.testing.assert_close(out_extra, expected_extra)


def test_cross_attention_softmax_over_key_features_and_crossed_queries():
    dim, heads, tokens = 8, 2, 6
    attn = randomize_(CrossAttention(dim, heads)).double()
    u1, u2 = torch.randn(1, tokens, dim, dtype=torch.float64), torch.randn(1, tokens, dim, dtype=torch.float64)
    d = dim // heads

    def split(x):  # (tokens, dim) -> (heads, tokens, d)
        return x.reshape(tokens, heads, d).transpose(0, 1)

    def context(kv, u):
        k, v = (u[0] @ kv.weight.T).split(dim, dim=-1)
        ctx = split(k).transpose(-2, -1) @ split(v) * d**-0.5
        return torch.softmax(ctx, dim=-2)

    ctx1, ctx2 = context(attn.kv1, u1), context(attn.kv2, u2)
    expected1 = (split(u1[0]) @ ctx2).transpose(0, 1).reshape(1, tokens, dim)
    expected2 = (split(u2[0]) @ ctx1).transpose(0, 1).reshape(1, tokens, dim)
    out1, out2 = attn(u1, u2)
    torch.testing.assert_close(out1, expected1)
    torch.testing.assert_close(out2, expected2)


@pytest.mark.parametrize("height,width", [(13, 9), (8, 8), (17, 23)])
def test_spatial_reduction_floors_trailing_rows_and_columns(height, width):
    """K/V come from floor(H/8) x floor(W/8) cells: pixels past the last full cell never reach them."""
    attn = randomize_(Attention(dim=8, num_heads=1, sr_ratio=8)).double().eval()
    x = torch.randn(1, height * width, 8, dtype=torch.float64)
    grid = x.transpose(1, 2).reshape(1, 8, height, width)
    kept = grid[:, :, : height // 8 * 8, : width // 8 * 8]
    kv_tokens = attn.norm(attn.sr(kept).flatten(2).transpose(1, 2))
    k, v = attn.kv(kv_tokens).chunk(2, dim=-1)
    q = attn.q(x)
    expected = attn.proj(torch.softmax(q @ k.transpose(1, 2) * 8**-0.5, dim=-1) @ v)
    torch.testing.assert_close(attn(x, height, width), expected)


def test_decoder_concatenates_c4_c3_c2_c1():
    dims, dim = (3, 4, 5, 6), 7
    decoder = randomize_(MLPDecoder(dims, dim, num_classes=2, bn_eps=1e-3)).double().eval()
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2)]
    features = [torch.randn(1, c, h, w, dtype=torch.float64) for c, (h, w) in zip(dims, sizes)]
    projected = []
    for i in (3, 2, 1, 0):
        proj = getattr(decoder, f"linear_c{i + 1}").proj
        x = torch.einsum("bchw,oc->bohw", features[i], proj.weight) + proj.bias[:, None, None]
        projected.append(F.interpolate(x, size=sizes[0], mode="bilinear", align_corners=False))
    fuse, bn = decoder.linear_fuse[0], decoder.linear_fuse[1]
    x = torch.relu(bn(fuse(torch.cat(projected, dim=1))))
    torch.testing.assert_close(decoder(features), decoder.linear_pred(x))


@pytest.mark.parametrize("height,width", [(29, 29), (33, 47), (100, 37), (64, 64)])
def test_any_size_from_29_gives_full_resolution_outputs(tiny_model, height, width):
    x = torch.rand(1, 3, height, width)
    with torch.inference_mode():
        output = tiny_model(x)
    assert output.loc_logits.shape == (1, 2, height, width)
    assert output.conf_logits.shape == (1, 1, height, width)
    assert output.noiseprint.shape == (1, 1, height, width)
    assert output.det_logit.shape == (1, 1)
    assert torch.isfinite(output.loc_logits).all()


def test_batched_forward_equals_one_image_at_a_time(tiny_model):
    x = torch.rand(3, 3, 40, 56)
    with torch.inference_mode():
        batched = tiny_model(x)
        single = [tiny_model(x[i : i + 1]) for i in range(3)]
    for field in ("loc_logits", "conf_logits", "det_logit"):
        torch.testing.assert_close(getattr(batched, field), torch.cat([getattr(s, field) for s in single]), atol=1e-4, rtol=1e-4)


def test_conf_bn_variant_changes_only_confidence_and_score():
    docker = randomize_(build_trufor("tiny"), seed=1).eval()
    train = build_trufor("tiny", conf_bn_variant="train")
    train.load_state_dict(docker.state_dict())
    # Small running_var makes the eps difference visible, as it would be with trained statistics.
    for model in (docker, train):
        model.decode_head_conf.linear_fuse[1].running_var.fill_(1e-3)
    x = to_tensor(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        out_docker, out_train = docker(x), train(x)
    a, b = probabilities(out_docker), probabilities(out_train)
    assert torch.equal(a.map, b.map)
    assert not torch.allclose(a.conf, b.conf)
    assert out_docker.det_logit != out_train.det_logit


def test_to_tensor_scales_by_256_not_255():
    rgb = np.full((2, 2, 3), 255, dtype=np.uint8)
    x = to_tensor(rgb)
    assert x.shape == (1, 3, 2, 2)
    assert torch.all(x == 255 / 256)


def test_score_pooling_traces_for_every_size():
    """The uniform weights must stay a function of the traced input's size, not the example's."""
    pool = torch.jit.trace(weighted_statistics_pooling, torch.randn(1, 1, 6, 7))
    values = torch.randn(1, 1, 11, 13)
    torch.testing.assert_close(pool(values), weighted_statistics_pooling(values))


def test_noiseprint_stays_float32_under_autocast():
    """Noiseprint++ amplifies rounding 2000 to 3000 times: autocast (training with AMP, the CUDA fp16 backend) must not lower it."""
    model = randomize_(build_trufor("tiny")).eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        expected = model.dncnn(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            residual = model.dncnn(x)
            features = model.backbone.block1[0].mlp.fc1(torch.rand(2, 16))
    assert features.dtype == torch.bfloat16, "autocast is on for the rest of the model"
    assert residual.dtype == torch.float32
    torch.testing.assert_close(residual, expected, rtol=0, atol=0)
