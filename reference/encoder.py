"""Dual-stream MiT encoder with CMX rectification (FRM) and fusion (FFM).

Module and attribute names follow the official state_dict (``backbone.block1``, ``extra_norm2``,
``FRMs.0``, ...) so the released checkpoint loads strictly. Every eps is set here explicitly
because checkpoints do not store it (ARCHITECTURE.md 4.5 and 4.7):
patch-embed norms, SR-attention norms and FFM norms use 1e-5; block and stage-end norms 1e-6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH_NORM_EPS = 1e-5
BLOCK_NORM_EPS = 1e-6
SR_NORM_EPS = 1e-5
STAGE_NORM_EPS = 1e-6
FUSION_NORM_EPS = 1e-5
FUSION_BN_EPS = 1e-5


def tokens_to_map(x: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) tokens in row-major order to a (B, C, H, W) map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class OverlapPatchEmbed(nn.Module):
    """Strided conv whose kernel overlaps its neighbours, then tokens and LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=PATCH_NORM_EPS)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.dwconv(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear, 3x3 depthwise conv on the token grid, exact GELU, linear."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))


class Attention(nn.Module):
    """Spatial-reduction attention: keys and values come from a strided-conv summary of the map.

    The reduction conv has kernel = stride = ``sr_ratio`` and no padding, so trailing rows and
    columns beyond a multiple of the ratio are dropped from K/V (floor), as in the official model.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused = fused
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=SR_NORM_EPS)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, tokens, dim = x.shape
        q = self.q(x).reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2))
        # kv channels are laid out [K | V], heads contiguous inside each.
        kv = self.kv(x).reshape(batch, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: SR attention then Mix-FFN, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: int = 4,
        drop_path: float = 0.0,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.attn = Attention(dim, num_heads, sr_ratio, fused=fused_attention)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class ChannelWeights(nn.Module):
    """Per-channel gates for each stream from global average and max pooling of both."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, 2 * dim), nn.Sigmoid()
        )

    def forward(self, rgb: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        both = torch.cat((rgb, extra), dim=1)
        # Order [avg_rgb, avg_extra, max_rgb, max_extra]: amax/mean keep the graph free of
        # adaptive pooling, which exporters would bake to one input size.
        pooled = torch.cat((both.mean(dim=(2, 3)), both.amax(dim=(2, 3))), dim=1)
        weights = self.mlp(pooled)[:, :, None, None]
        return weights.chunk(2, dim=1)


class SpatialWeights(nn.Module):
    """Per-pixel gates for each stream from 1x1 convs over both streams."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(2 * dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, 2, 1), nn.Sigmoid()
        )

    def forward(self, rgb: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        return self.mlp(torch.cat((rgb, extra), dim=1)).chunk(2, dim=1)


class FeatureRectifyModule(nn.Module):
    """FRM: each stream is corrected by the other, gated per channel and per pixel.

    Gate index 1 updates the RGB stream and index 0 the extra stream, as in the official model.
    """

    def __init__(self, dim: int, lambda_c: float = 0.5, lambda_s: float = 0.5):
        super().__init__()
        self.lambda_c = lambda_c
        self.lambda_s = lambda_s
        self.channel_weights = ChannelWeights(dim)
        self.spatial_weights = SpatialWeights(dim)

    def forward(self, rgb: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        cw_extra, cw_rgb = self.channel_weights(rgb, extra)
        sw_extra, sw_rgb = self.spatial_weights(rgb, extra)
        rgb_out = rgb + self.lambda_c * cw_rgb * extra + self.lambda_s * sw_rgb * extra
        extra_out = extra + self.lambda_c * cw_extra * rgb + self.lambda_s * sw_extra * rgb
        return rgb_out, extra_out


class CrossAttention(nn.Module):
    """Efficient "context" attention between streams: each stream queries the other's d x d context.

    No query projection (the input is the query), kv without bias, softmax over dim -2 of the
    context (the key-feature axis).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.kv1 = nn.Linear(dim, 2 * dim, bias=False)
        self.kv2 = nn.Linear(dim, 2 * dim, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def _context(self, kv: nn.Linear, x: Tensor) -> Tensor:
        k, v = kv(x).chunk(2, dim=-1)
        context = (self._heads(k).transpose(-2, -1) @ self._heads(v)) * self.scale
        return context.softmax(dim=-2)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        batch, tokens, dim = x1.shape
        context1 = self._context(self.kv1, x1)
        context2 = self._context(self.kv2, x2)
        out1 = (self._heads(x1) @ context2).transpose(1, 2).reshape(batch, tokens, dim)
        out2 = (self._heads(x2) @ context1).transpose(1, 2).reshape(batch, tokens, dim)
        return out1, out2


class CrossPath(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.channel_proj1 = nn.Linear(dim, 2 * dim)
        self.channel_proj2 = nn.Linear(dim, 2 * dim)
        self.act1 = nn.ReLU(inplace=True)
        self.act2 = nn.ReLU(inplace=True)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.end_proj1 = nn.Linear(2 * dim, dim)
        self.end_proj2 = nn.Linear(2 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=FUSION_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=FUSION_NORM_EPS)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        y1, u1 = self.act1(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = self.act2(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        out1 = self.norm1(x1 + self.end_proj1(torch.cat((y1, v1), dim=-1)))
        out2 = self.norm2(x2 + self.end_proj2(torch.cat((y2, v2), dim=-1)))
        return out1, out2


class ChannelEmbed(nn.Module):
    """Merges the two streams' 2C channels back to C: BN(1x1 residual + conv branch)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Conv2d(in_dim, out_dim, 1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 1),
            nn.Conv2d(out_dim, out_dim, 3, 1, 1, groups=out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, 1),
            nn.BatchNorm2d(out_dim, eps=FUSION_BN_EPS),
        )
        self.norm = nn.BatchNorm2d(out_dim, eps=FUSION_BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusionModule(nn.Module):
    """FFM: cross-attention between the rectified streams, then a conv merge to one map."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.cross = CrossPath(dim, num_heads)
        self.channel_emb = ChannelEmbed(2 * dim, dim)

    def forward(self, rgb: Tensor, extra: Tensor) -> Tensor:
        height, width = rgb.shape[2:]
        rgb, extra = self.cross(rgb.flatten(2).transpose(1, 2), extra.flatten(2).transpose(1, 2))
        return self.channel_emb(tokens_to_map(torch.cat((rgb, extra), dim=-1), height, width))


class DualMiTEncoder(nn.Module):
    """Two MiT streams (RGB and Noiseprint++) rectified and fused after every stage.

    Returns the fused maps of the four stages, at strides 4, 8, 16 and 32 (ceil-divided).
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        mlp_ratio: int = 4,
        drop_path_rate: float = 0.1,
        fused_attention: bool = True,
        in_chans: int = 3,
    ):
        super().__init__()
        self.num_stages = len(embed_dims)
        in_dims = (in_chans,) + tuple(embed_dims[:-1])
        # Registration order mirrors the official state_dict: patch embeds, then per stage
        # blocks/norm of each stream, then FRMs and FFMs.
        for prefix in ("", "extra_"):
            for i in range(self.num_stages):
                patch, stride = (7, 4) if i == 0 else (3, 2)
                setattr(self, f"{prefix}patch_embed{i + 1}", OverlapPatchEmbed(in_dims[i], embed_dims[i], patch, stride))
        drop_rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        for i in range(self.num_stages):
            rates = drop_rates[sum(depths[:i]) : sum(depths[: i + 1])]
            for prefix in ("", "extra_"):
                blocks = nn.ModuleList(
                    Block(embed_dims[i], num_heads[i], sr_ratios[i], mlp_ratio, rate, fused_attention)
                    for rate in rates
                )
                setattr(self, f"{prefix}block{i + 1}", blocks)
                setattr(self, f"{prefix}norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=STAGE_NORM_EPS))
        self.FRMs = nn.ModuleList(FeatureRectifyModule(dim) for dim in embed_dims)
        self.FFMs = nn.ModuleList(FeatureFusionModule(dim, heads) for dim, heads in zip(embed_dims, num_heads))

    def _stage(self, prefix: str, index: int, x: Tensor) -> Tensor:
        x, height, width = getattr(self, f"{prefix}patch_embed{index}")(x)
        for block in getattr(self, f"{prefix}block{index}"):
            x = block(x, height, width)
        return tokens_to_map(getattr(self, f"{prefix}norm{index}")(x), height, width)

    def forward(self, rgb: Tensor, extra: Tensor) -> list[Tensor]:
        fused = []
        for i in range(self.num_stages):
            rgb = self._stage("", i + 1, rgb)
            extra = self._stage("extra_", i + 1, extra)
            # The rectified maps, not the fused one, feed the next stage.
            rgb, extra = self.FRMs[i](rgb, extra)
            fused.append(self.FFMs[i](rgb, extra))
        return fused
