"""Initialising and partially loading TruFor weights for training.

- Heads: the official initialisation, Kaiming-normal (fan_in, ReLU) weights for every conv and
  linear layer of both decoders, zero biases, BatchNorm weight 1 and bias 0; their eps (1e-3) is
  set when the model is built (``conf_bn_variant="train"``). The detection MLP keeps PyTorch's
  default initialisation, as in the official code.
- Encoder: the official run starts from ImageNet MiT weights (``load_mit``, each key copied into
  both streams). Without them, streams and fusion modules get the usual MiT initialisation
  (truncated normal 0.02 for linear layers, normal with std sqrt(2 / fan_out) for convs, LayerNorm
  1 and 0); the facts do not say how the official FRM/FFM modules were initialised.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from reference.checkpoint import clean_state_dict, load_noiseprint, read_checkpoint
from reference.errors import CheckpointError
from reference.model import TruFor

_STREAM_PREFIXES = ("patch_embed", "block", "norm")


def init_decoder_(decoder: nn.Module) -> None:
    for module in decoder.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_encoder_(backbone: nn.Module) -> None:
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def load_mit(backbone: nn.Module, path: str | os.PathLike) -> int:
    """Copy a MiT (SegFormer encoder) checkpoint into both streams; returns the tensors copied.

    Accepted: the ImageNet MiT layout (``patch_embed1.proj.weight``, ``block1.0.attn.q.weight``,
    ``norm1.weight``, plus a classifier ``head.*`` that is skipped) and SegFormer checkpoints whose
    encoder keys start with ``backbone.`` (their decoder is skipped). Every stream tensor of this
    preset must be present with the same shape.
    """
    state = clean_state_dict(read_checkpoint(path))
    if any(name.startswith("backbone.") for name in state):
        state = {name.removeprefix("backbone."): t for name, t in state.items() if name.startswith("backbone.")}
    state = {name: t for name, t in state.items() if not name.startswith("head.")}
    own = backbone.state_dict()
    stream = {name for name in own if name.startswith(_STREAM_PREFIXES)}
    missing = sorted(stream - set(state))
    unexpected = sorted(set(state) - stream)
    mismatched = [f"{n} {tuple(state[n].shape)} != {tuple(own[n].shape)}" for n in stream & set(state) if state[n].shape != own[n].shape]
    if missing or unexpected or mismatched:
        details = "; ".join(
            f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''} ({len(items)})"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if items
        )
        raise CheckpointError(
            f"MiT checkpoint {os.fspath(path)!r} does not match this preset's encoder streams: {details}. "
            "Use the MiT variant of the preset (trufor: mit_b2, trufor_b0: mit_b0) in the ImageNet layout "
            "(patch_embed1.*, block1.*, norm1.*)"
        )
    with torch.no_grad():
        for name in stream:
            own[name].copy_(state[name])
            own[f"extra_{name}"].copy_(state[name])
    return 2 * len(stream)


def load_matching(model: TruFor, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Load every tensor of a checkpoint that the model has (strict=False semantics); a tensor of
    another shape is an error. Returns (loaded prefixes, missing keys)."""
    state = clean_state_dict(read_checkpoint(path))
    own = model.state_dict()
    mismatched = [f"{n} {tuple(t.shape)} != {tuple(own[n].shape)}" for n, t in state.items() if n in own and t.shape != own[n].shape]
    if mismatched:
        raise CheckpointError(
            f"{os.fspath(path)!r} has tensors of other shapes than this model: {', '.join(mismatched[:4])}"
            f"{' ...' if len(mismatched) > 4 else ''}; use the preset the checkpoint was trained with"
        )
    loadable = {n: t for n, t in state.items() if n in own}
    if not loadable:
        raise CheckpointError(f"{os.fspath(path)!r} has no tensor this model knows (is it a TruFor checkpoint?)")
    model.load_state_dict(loadable, strict=False)
    loaded = sorted({n.split(".")[0] for n in loadable})
    return loaded, sorted(set(own) - set(loadable))


def load_noiseprint_weights(model: TruFor, spec: str) -> str:
    """Noiseprint++ weights for phase 2: a phase-1 (or any TruFor) checkpoint, the released
    ``noiseprint++.th`` layout, or ``random`` (kept at its initialisation, for tests)."""
    if spec == "random":
        return "Noiseprint++: random (untrained) weights, as asked by --noiseprint random"
    load_noiseprint(model.dncnn, spec)
    return f"Noiseprint++: loaded from {spec}"
