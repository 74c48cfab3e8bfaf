"""Set the image-score threshold for a chosen false-alarm rate, on the user's own pristine images.

    python -m runtime.calibrate pristine/ --target-fpr 0.01 --out threshold.json [--forged forged/] [model flags]
    python -m runtime.scan photos/ --out scan/ --threshold-file threshold.json [the same model flags]

The inputs are scanned exactly as ``runtime.scan`` scans (it takes the same model, image, tiling and
``--ray`` flags) into resumable scan folders beside OUT (``threshold.scans/pristine`` and
``/forged``), so a rerun with another rate scans nothing again. Inputs that fail are left out and
counted.

The threshold T is the smallest pristine score that at most ``floor(target * n)`` of the ``n``
pristine images exceed (an image is forged when score > T, as in the scan). The rate measured on a
sample is not the true rate: the file also gives the exact one-sided (Clopper-Pearson) upper bound on
the true false-alarm rate at T, at ``--confidence``. The sample is too small for the rate asked when
even no false alarm at all could not bring that bound down to the target: fewer than
``ln(1 - confidence) / ln(1 - target)`` images (about 3 / target at 95%); this is said and recorded.
``--conservative`` picks instead the smallest T whose upper bound is at most the target. With
``--forged``, the share of forged images that score above T is given with its exact interval at ``--confidence``.

Exit status: 0 threshold written, 1 no pristine input could be scanned, 2 bad arguments or a scan
that could not start, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from reference.inputs import collect_inputs
from reference.outputs import atomic_write

from .errors import UsageError
from .decision import THRESHOLD_FORMAT, DecisionRule
from .records import OK, read_latest
from .scan import DEFAULT_WORKERS, EXIT_FAILED, EXIT_OK, GROUPS, run
from .scan_dir import SETTINGS_FILE
from .scanner import OutputOptions

SCAN_GROUPS = ("model", "image", "tiling", "ray")
EXIT_NO_THRESHOLD = 1


def upper_bound(false_alarms: int, images: int, confidence: float) -> float:
    """Exact one-sided upper confidence bound on a rate seen ``false_alarms`` times in ``images``."""
    return float(binomtest(false_alarms, images, alternative="less").proportion_ci(confidence).high)


def images_needed(target_fpr: float, confidence: float) -> int:
    """The fewest images whose bound can reach ``target_fpr``: with no false alarm, (1 - target)^n <= 1 - confidence."""
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_fpr))


def threshold_for(scores: np.ndarray, allowed: int) -> float:
    """The smallest threshold among the scores that at most ``allowed`` scores exceed."""
    return float(np.sort(scores)[::-1][allowed])


def calibrate(pristine: np.ndarray, target_fpr: float, confidence: float, conservative: bool) -> dict[str, Any]:
    """The threshold for ``target_fpr`` on the pristine scores, with what the sample supports."""
    n = len(pristine)
    # The tolerance keeps float products such as 0.29 * 100 = 28.999999999999996 from losing an image.
    allowed = math.floor(target_fpr * n + 1e-9)
    if conservative:
        allowed = max(
            (k for k in range(allowed + 1) if upper_bound(k, n, confidence) <= target_fpr), default=None
        )  # fmt: skip
        if allowed is None:
            raise UsageError(
                f"{n} pristine images are too few for --conservative at a false-alarm rate of {target_fpr}: "
                f"at least {images_needed(target_fpr, confidence)} are needed"
            )
    threshold = threshold_for(pristine, allowed)
    false_alarms = int(np.count_nonzero(pristine > threshold))
    needed = images_needed(target_fpr, confidence)
    return {
        "threshold": threshold,
        "method": "conservative" if conservative else "empirical",
        "false_alarms": false_alarms,
        "fpr": false_alarms / n,
        "fpr_upper_bound": upper_bound(false_alarms, n, confidence),
        "images_needed": needed,
        "sample_too_small": n < needed,
    }


def detection(forged: np.ndarray, threshold: float, confidence: float) -> dict[str, Any]:
    """The share of forged images flagged at ``threshold``, with its exact two-sided interval."""
    detected = int(np.count_nonzero(forged > threshold))
    interval = binomtest(detected, len(forged)).proportion_ci(confidence, method="exact")
    return {
        "detected": detected,
        "detection_rate": detected / len(forged),
        "detection_rate_interval": [float(interval.low), float(interval.high)],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.calibrate",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "pristine", nargs="+", metavar="PRISTINE", help="known-pristine images: file, folder, glob or @list.txt"
    )
    group = parser.add_argument_group("calibration")
    group.add_argument("--target-fpr", type=float, required=True, help="the false-alarm rate to allow, e.g. 0.01")
    group.add_argument("--out", type=Path, required=True, help="the threshold file to write (JSON)")
    group.add_argument(
        "--forged", nargs="+", action="extend", metavar="INPUT", help="known-forged images: the detection rate"
    )
    group.add_argument(
        "--confidence", type=float, default=0.95, help="of the bounds and interval (default: %(default)s)"
    )
    group.add_argument(
        "--conservative", action="store_true", help="the smallest threshold whose bound is at most --target-fpr"
    )
    group.add_argument("--scans", type=Path, help="folder of the calibration scans (default: OUT's name + .scans)")
    group.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="decoding threads (default: %(default)s)")
    for name in SCAN_GROUPS:
        GROUPS[name].add_to(parser)
    return parser


def _scores(specs: list[str], folder: Path, parsed: tuple, workers: int, command: str) -> tuple[int, np.ndarray, int]:
    """Scan ``specs`` into ``folder``; returns the exit status, the ok inputs' scores and how many failed."""
    request, image_options, tiling, ray_options = parsed
    options = OutputOptions(folder, False, False, DecisionRule(), False, workers)
    code = run(specs, request, image_options, tiling, options, ray_options, command)
    if code not in (EXIT_OK, EXIT_FAILED):
        return code, np.empty(0), 0
    latest = read_latest(folder / "results.jsonl")
    rows = [latest.get(item.relpath) for item in collect_inputs(specs)]
    scores = np.array([row["score"] for row in rows if row is not None and row["status"] == OK], dtype=np.float64)
    return code, scores, len(rows) - len(scores)


def _percent(value: float) -> str:
    return f"{100 * value:.3g}%"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m runtime.calibrate " + shlex.join(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for flag, value in (("--target-fpr", args.target_fpr), ("--confidence", args.confidence)):
            if not 0.0 < value < 1.0:
                raise UsageError(f"{flag} must be within (0, 1), got {value}")
        if args.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {args.workers}")
        parsed = tuple(GROUPS[name].parse(args) for name in SCAN_GROUPS)
    except UsageError as error:
        parser.error(str(error))
    scans = args.scans or args.out.with_name(args.out.stem + ".scans")

    code, pristine, pristine_failed = _scores(args.pristine, scans / "pristine", parsed, args.workers, command)
    if code not in (EXIT_OK, EXIT_FAILED):
        return code
    if not len(pristine):
        results = scans / "pristine" / "results.jsonl"
        print(f"[E] no pristine input could be scanned (see {results}); no threshold", file=sys.stderr)
        return EXIT_NO_THRESHOLD
    try:
        found = calibrate(pristine, args.target_fpr, args.confidence, args.conservative)
    except UsageError as error:
        print(f"[E] {error}", file=sys.stderr)
        return EXIT_NO_THRESHOLD
    settings = json.loads((scans / "pristine" / SETTINGS_FILE).read_text())
    decision_keys = DecisionRule().settings()
    threshold = found.pop("threshold")
    pristine_scan = str((scans / "pristine").resolve())
    record: dict[str, Any] = {
        "format": THRESHOLD_FORMAT,
        "threshold": threshold,
        "rule": "an image is forged when its score > threshold",
        "target_fpr": args.target_fpr,
        "confidence": args.confidence,
        "pristine": {"scored": len(pristine), "failed": pristine_failed, **found, "scan": pristine_scan},
        "forged": None,
        "model": {key: value for key, value in settings.items() if key not in decision_keys},
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    n, bound = len(pristine), found["fpr_upper_bound"]
    left_out = f"; {pristine_failed} inputs failed and are left out" if pristine_failed else ""
    print(
        f"[I] threshold {threshold:.6g} ({found['method']}): {found['false_alarms']} of {n} pristine images score "
        f"above it ({_percent(found['fpr'])}); the true false-alarm rate is at most {_percent(bound)} with "
        f"{args.confidence:.0%} confidence{left_out}"
    )
    if found["sample_too_small"]:
        print(
            f"[W] {n} pristine images are too few for a false-alarm rate of {args.target_fpr}: even with no "
            f"false alarm the {args.confidence:.0%} bound would be {_percent(upper_bound(0, n, args.confidence))}; at least "
            f"{found['images_needed']} are needed",
            file=sys.stderr,
        )
    if args.forged:
        code, forged, forged_failed = _scores(args.forged, scans / "forged", parsed, args.workers, command)
        if code not in (EXIT_OK, EXIT_FAILED):
            return code
        if len(forged):
            detected = detection(forged, threshold, args.confidence)
            record["forged"] = {"scored": len(forged), "failed": forged_failed, **detected}
            rate, (low, high) = record["forged"]["detection_rate"], record["forged"]["detection_rate_interval"]
            print(
                f"[I] detects {_percent(rate)} of {len(forged)} forged images ({args.confidence:.0%} interval "
                f"{_percent(low)} to {_percent(high)})"
            )
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(args.out, lambda file: file.write(text.encode()))
    print(f"[I] wrote {args.out}")
    next_scan = f"python -m runtime.scan IMAGES --out RESULTS --threshold-file {shlex.quote(str(args.out))}"
    print(f"[I] next: {next_scan} (with the same model flags)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
