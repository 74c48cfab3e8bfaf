"""Helpers for the export tests: a tiny TruFor whose outputs vary, torch reference outputs, exports."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from export.build import BuildConfig
from export.pipeline import EXPORT_OVERRIDES, export_artifacts
from reference.build import build_trufor
from reference.model import TruFor, images_to_input, probabilities

TILE = 64
SEED = 1234


def perturb_weights(model: TruFor, seed: int = SEED, strength: float = 0.3, gain: float = 2.0) -> TruFor:
    """Random weights whose maps and score vary with the input (a fresh init gives near-constant maps).

    Every float state_dict entry gets seeded noise (BN variances stay positive), then the
    decoders' last convs are rescaled so the logits are centred with a spread of ``gain`` on a
    random batch, and the detection bias is centred too.
    """
    generator = torch.Generator().manual_seed(seed)
    # state_dict only: the ImageNet mean/std buffers are not weights and must stay exact
    tensors = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()]
    with torch.no_grad():
        for name, tensor in tensors:
            noise = torch.randn(tensor.shape, generator=generator)
            if "running_var" in name:
                tensor.copy_(0.5 + noise.abs())
            elif tensor.ndim <= 1:
                tensor.add_(noise * strength)
            else:
                tensor.add_(noise * strength * tensor.std().clamp_min(1e-3))
        x = torch.rand(2, 3, 64, 64, generator=generator)
        out = model(x)
        for decoder, logits in ((model.decode_head, out.loc_logits), (model.decode_head_conf, out.conf_logits)):
            mean, std = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3))
            decoder.linear_pred.weight.mul_((gain / std)[:, None, None, None])
            decoder.linear_pred.bias.mul_(gain / std).sub_(mean * gain / std)
        model.detection[3].bias.sub_(model(x).det_logit.mean())
    return model.eval()


def make_tiny_model() -> TruFor:
    """The perturbed tiny reference, as users run it (fused attention); the same on every call."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return perturb_weights(build_trufor("tiny"))


def export_copy(model: TruFor) -> TruFor:
    """``model``'s weights in the configuration the exporter uses (explicit attention)."""
    copy = build_trufor("tiny", **EXPORT_OVERRIDES)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def reference_outputs(model: TruFor, image: np.ndarray) -> dict[str, np.ndarray]:
    """Torch outputs for a (B, H, W, 3) uint8 batch: map, conf, score and the logits."""
    x = images_to_input(torch.from_numpy(image))
    with torch.no_grad():
        out = model(x)
        probs = probabilities(out)
    return {
        "map": probs.map.numpy(),
        "conf": probs.conf.numpy(),
        "score": probs.score.numpy(),
        "loc_logits": out.loc_logits.numpy(),
        "conf_logits": out.conf_logits.numpy(),
    }


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth image plus noise (uint8): closer to a photo than uniform noise, so maps vary spatially."""
    rng = np.random.default_rng(seed)
    batch, height, width, _ = shape
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = 128 + 60 * np.sin(6 * xx[None, ..., None] + 4 * yy[None, ..., None] + rng.uniform(0, 6, (batch, 1, 1, 3)))
    return np.clip(base + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def _quiet_step(label, path=None):
    yield


def export_tiny(out_dir, precision: str, **config) -> object:
    """Export the perturbed tiny model (same seed as ``reference_model``) and return the manifest path."""
    model = export_copy(make_tiny_model())
    config = {"calib_count": 4, **config}
    build_config = BuildConfig(precision=precision, preset="tiny", out=out_dir, tile=TILE, **config)
    return export_artifacts(build_config, _quiet_step, model=model)
