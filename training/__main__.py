"""``python -m training``: train one TruFor phase.

    python -m training --phase 1 --preset tiny --out runs/np
    python -m training --phase 2 --preset tiny --noiseprint runs/np/best.pth.tar --out runs/loc
    python -m training --phase 3 --preset tiny --init runs/loc/best.pth.tar --out runs/det
    python -m training --phase 2 --config my.yaml --resume --out runs/loc

Settings: defaults (the official recipe) < ``--config FILE.yaml`` < flags; the resolved settings
are saved as ``args.yaml`` / ``args.json`` in the run folder. Exit status: 0 done, 1 a training
failure (bad data, checkpoint, non-finite loss), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from reference.config import PRESETS
from reference.errors import TruForError

from .config import resolve
from .data.forgery import FORGERY_KINDS
from .phases import run

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train TruFor: phase 1 Noiseprint++, phase 2 localization, phase 3 confidence + detection.",
        argument_default=argparse.SUPPRESS,  # only flags given on the command line override the file
    )
    run = parser.add_argument_group("run")
    run.add_argument("--phase", type=int, choices=(1, 2, 3), required=True)
    run.add_argument("--config", help="YAML (or JSON) file of settings; flags override it")
    run.add_argument("--out", help="run folder (default runs/phase<N>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pth.tar")
    run.add_argument("--seed", type=int, help="seed of everything random (default 0)")
    run.add_argument("--device", help="cpu (default), cuda or cuda:N")
    run.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    run.add_argument("--workers", type=int, help="data loading processes (default 0: in the main process)")
    run.add_argument("--log-every", type=int, help="iterations between log lines (default 10)")
    run.add_argument("--save-every", type=int, help="also save last.pth.tar every N iterations (default: epoch ends)")
    run.add_argument("--val-every", type=int, help="validate every N epochs (default 1; 0 never)")
    run.add_argument("--best-key", help="validation metric that selects best.pth.tar, higher is better "
                     "(default: the phase's official one: nn_acc, avg_p-F1_smooth, avg_img_bacc)")

    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), help="architecture (default trufor)")
    model.add_argument("--init", help="start from this checkpoint's tensors (phase 3: the phase-2 best.pth.tar)")
    model.add_argument("--noiseprint", help="phase 2: Noiseprint++ weights (phase-1 checkpoint or noiseprint++.th), or 'random'")
    model.add_argument("--mit", help="phase 2: MiT/SegFormer encoder checkpoint copied into both streams")

    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", help="training data, repeatable: synthetic, pairs:DIR, casia:DIR, "
                      "authentic:DIR, a bare DIR; phase 1: synthetic or cameras:DIR (default synthetic)")
    data.add_argument("--val-data", action="append", help="validation data, same forms (default synthetic)")
    data.add_argument("--pristine", help="folder of photos for the synthetic forgeries (default: simulated cameras)")
    data.add_argument("--cameras", type=int, help="simulated camera models (default 64)")
    data.add_argument("--histories", type=int, help="phase 1 editing histories (default 16)")
    data.add_argument("--synthetic-count", type=int, help="generated training samples per epoch (default 2000)")
    data.add_argument("--synthetic-size", type=int, help="side of generated images (default: --crop)")
    data.add_argument("--val-count", type=int, help="generated validation samples (default 64)")
    data.add_argument("--val-max-size", type=int, help="validation centre crop limit (default 2048)")
    data.add_argument("--kinds", nargs="+", choices=FORGERY_KINDS, help="forgery kinds to generate (default all)")
    data.add_argument("--pristine-fraction", type=float, help="share of generated samples left pristine (default 0.3)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, help="base learning rate (default 0.005)")
    optim.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    optim.add_argument("--weight-decay", type=float, help="default 5e-4")
    optim.add_argument("--poly-power", type=float, help="poly schedule exponent (default 0.9)")
    optim.add_argument("--epochs", type=int, help="default 100")
    optim.add_argument("--iterations", type=int, help="total iterations (overrides --epochs)")
    optim.add_argument("--batch-size", type=int, help="phases 2-3 (default 18)")

    aug = parser.add_argument_group("augmentation (phases 2 and 3)")
    aug.add_argument("--crop", type=int, help="training crop side (default 512)")
    aug.add_argument("--scale-p", type=float, help="probability of the random scale (default 0.5)")
    aug.add_argument("--scale-limit", type=float, help="scale factor range 1 +- limit (default 0.5)")
    aug.add_argument("--jpeg-p", type=float, help="probability of the JPEG augmentation (default 0.5)")
    aug.add_argument("--jpeg-quality", type=int, nargs=2, metavar=("MIN", "MAX"), help="default 30 100")

    contrastive = parser.add_argument_group("phase 1")
    contrastive.add_argument("--patch", type=int, help="patch side (default 48)")
    contrastive.add_argument("--groups", type=int, help="classes per batch (default 16)")
    contrastive.add_argument("--per-group", type=int, help="patches per class (default 4)")
    contrastive.add_argument("--temperature", type=float, help="InfoNCE temperature on mean squared distances (default 1)")
    contrastive.add_argument("--epoch-iterations", type=int, help="iterations per epoch (default 1000)")
    contrastive.add_argument("--val-batches", type=int, help="validation batches (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    try:
        config = resolve(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        run(config)
    except TruForError as error:
        print(f"training failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
