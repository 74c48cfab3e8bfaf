"""``python -m training.release``: a training checkpoint as a deployable weights file.

    python -m training.release --checkpoint runs/det/best.pth.tar --out model.pth.tar [--dtype float16]

Why: BatchNorm eps is not stored in checkpoints, and the confidence decoder trains with eps 1e-3
(``conf_bn_variant="train"``, as the official training code) while the project's inference
default is the docker release's 1e-5. A phase-3 checkpoint must therefore either be run with
``conf_bn_variant="train"`` (``build_trufor(preset, ckpt, conf_bn_variant="train")``,
``export.build --conf-bn-variant train``, ``benchmarks.evaluate --conf-bn-variant train``), or
released with this tool, which folds the eps difference into the running variance:
``sqrt((var + 1e-3 - 1e-5) + 1e-5) == sqrt(var + 1e-3)``, so the released file gives the same
outputs under the default (docker) eps as the original under eps 1e-3. It is checked on a random
input before writing. The optimizer state is dropped; ``--dtype float16`` halves the file (the
model still runs in float32: tensors are upcast when loaded), at about 1e-3 relative error.

Do not resume training from a released file: its confidence-decoder statistics are shifted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from reference.build import build_trufor
from reference.checkpoint import clean_state_dict, read_checkpoint
from reference.config import CONF_BN_EPS, PRESETS
from reference.errors import TruForError

from .loop import save_checkpoint

CONF_BN_VAR = "decode_head_conf.linear_fuse.1.running_var"


def fold_conf_bn_eps(state: dict[str, torch.Tensor], trained_eps: float, target_eps: float) -> dict[str, torch.Tensor]:
    """A copy of ``state`` whose confidence-decoder BN gives, under ``target_eps``, what the
    original gives under ``trained_eps``."""
    if CONF_BN_VAR not in state:
        raise TruForError(f"the checkpoint has no {CONF_BN_VAR}; is it a TruFor checkpoint?")
    folded = dict(state)
    folded[CONF_BN_VAR] = state[CONF_BN_VAR] + (trained_eps - target_eps)
    if (folded[CONF_BN_VAR] + target_eps <= 0).any():
        raise TruForError(f"folding eps {trained_eps} -> {target_eps} would make a variance non-positive")
    return folded


def check_same_outputs(preset: str, original: dict, released: dict, trained: str, target: str) -> float:
    """Max |difference| of the logits of both models on a fixed random 64x64 input, relative to
    the largest logit (at least 1)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=generator)
    before = build_trufor(preset, conf_bn_variant=trained)
    before.load_state_dict(original)
    after = build_trufor(preset, conf_bn_variant=target)
    after.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in released.items()})
    with torch.no_grad():
        a, b = before.eval()(x), after.eval()(x)
    pairs = [(a.conf_logits, b.conf_logits), (a.det_logit, b.det_logit), (a.loc_logits, b.loc_logits)]
    return max(float((u - v).abs().max()) / max(1.0, float(u.abs().max())) for u, v in pairs)


def release(checkpoint: Path, out: Path, preset: str | None, trained: str, target: str, dtype: str) -> float:
    raw = read_checkpoint(checkpoint)
    state = clean_state_dict(raw)
    preset = preset or (raw.get("preset") if isinstance(raw, dict) else None)
    if preset not in PRESETS:
        raise TruForError(f"cannot tell the preset of {checkpoint}; pass --preset ({', '.join(sorted(PRESETS))})")
    folded = fold_conf_bn_eps(state, CONF_BN_EPS[trained], CONF_BN_EPS[target]) if trained != target else dict(state)
    if dtype == "float16":
        folded = {k: v.half() if v.is_floating_point() else v for k, v in folded.items()}
    difference = check_same_outputs(preset, state, folded, trained, target)
    tolerance = 1e-5 if dtype == "float32" else 1e-2
    if difference > tolerance:
        raise TruForError(f"the released weights change the logits by {difference:.2e} relative (> {tolerance:g}); not written")
    payload = {"epoch": raw.get("epoch", 0), "best_value": raw.get("best_value"), "best_key": raw.get("best_key"),
               "state_dict": folded, "preset": preset, "conf_bn_variant": target}
    save_checkpoint(out, payload)
    return difference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a training checkpoint (phase 3 best.pth.tar)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="default: the one recorded in the checkpoint")
    parser.add_argument("--trained-variant", choices=sorted(CONF_BN_EPS), default="train", help="eps it was trained with (default train)")
    parser.add_argument("--target-variant", choices=sorted(CONF_BN_EPS), default="docker", help="eps it will run with (default docker)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="storage type of the weights")
    args = parser.parse_args(argv)
    try:
        difference = release(args.checkpoint, args.out, args.preset, args.trained_variant, args.target_variant, args.dtype)
    except TruForError as error:
        print(f"release failed: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): runs with conf_bn_variant={args.target_variant}; "
          f"largest relative change of the logits {difference:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
