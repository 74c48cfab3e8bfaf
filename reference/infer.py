"""Official-compatible inference: one ``.npz`` per image, at native resolution, with the PyTorch model.

    python -m reference.infer --input images/ --output out/ [--weights official|ZIP|PATH] [--save-np]

Writes ``out/<path relative to the input root>.npz`` with ``map``, ``conf``, ``score``, ``imgsize``
(and ``np++`` with --save-np), like the official test scripts. Existing outputs are skipped, a bad
image is reported and the run goes on, and files are written atomically. Without ``--weights`` it runs
the project's default model (and says so); ``--weights official`` runs the authors' (see
``reference.weights``). Exit status: 0 when every image succeeded, 1 when any failed, 2 for bad
arguments or weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from .config import CONF_BN_EPS
from .errors import TruForError, UsageError
from .image import DEFAULT_MAX_PIXELS
from .inputs import collect_inputs
from .outputs import save_npz
from .predictor import ReferencePredictor
from .weights_args import WeightsArgs

WEIGHTS = WeightsArgs()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reference.infer",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 all images succeeded, 1 some image failed, 2 bad arguments or model.",
    )
    WEIGHTS.add_to(parser)
    parser.add_argument(
        "-in", "--input", required=True, nargs="+", help="image file, folder (recursive), glob, or @list.txt"
    )
    parser.add_argument("-out", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--save-np", action="store_true", help="also save the Noiseprint++ residual as np++")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument(
        "--conf-bn-variant",
        default="docker",
        choices=sorted(CONF_BN_EPS),
        help="confidence-decoder BN eps of the official release to match: docker (test_docker, 1e-5) "
        "or train (TruFor_train_test, 1e-3) (default: %(default)s)",
    )
    parser.add_argument(
        "--exif-transpose",
        action="store_true",
        help="apply EXIF orientation before inference (the official code does not; off for parity)",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        WEIGHTS.check(args)
    except UsageError as error:
        parser.error(str(error))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but torch sees no CUDA device; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m reference.infer", *(argv if argv is not None else sys.argv[1:])])
    try:
        files = collect_inputs(args.input)
        predictor = ReferencePredictor.from_weights(
            WEIGHTS.parse(args),
            device=args.device,
            exif_transpose=args.exif_transpose,
            max_pixels=args.max_pixels,
            conf_bn_variant=args.conf_bn_variant,
        )
    except TruForError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    statuses: Counter[str] = Counter()
    start = time.perf_counter()
    for item in tqdm(files, unit="img", desc="TruFor"):
        out_path = args.output / f"{item.relpath}.npz"
        if out_path.exists():
            statuses["skipped"] += 1
            continue
        try:
            result = predictor.predict(item.path, noiseprint=args.save_np)
            save_npz(out_path, result.npz_fields())
            statuses["ok"] += 1
        except TruForError as error:
            statuses[error.status] += 1
            tqdm.write(f"{item.path}: {error.status}: {error}", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - one image's failure (e.g. out of memory) must not end the run
            statuses["inference_error"] += 1
            tqdm.write(f"{item.path}: inference_error: {type(error).__name__}: {error}", file=sys.stderr)
    failed = sum(count for status, count in statuses.items() if status not in ("ok", "skipped"))
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "no images"
    print(f"{summary} in {time.perf_counter() - start:.1f} s -> {args.output}")
    print(f"{'FAILED' if failed else 'PASSED'} | {command}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
