"""Scan many images with TruFor: one JSON line per image, resumable, safe to interrupt.

    python -m runtime.scan photos/ more/*.jpg @list.txt --out scan/ [--save-maps] [--overlays]

Writes ``DIR/results.jsonl`` (one row per image: status, size, score, decision, forged fraction,
backend, timing), ``DIR/maps/<relpath>.npz`` with the official fields (``--save-maps``) and
``DIR/overlays/<relpath>.png`` (``--overlays``). Rerunning the same command skips finished images.
"""

from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from reference.errors import TruForError
from reference.inputs import InputFile, collect_inputs
from reference.predictor import TruForResult

from .args import ImageArgs, ModelArgs, TilingArgs, UsageError
from .backends import cpu_count, create_backend
from .decode import DONE, EMPTY, Decoded, DecodePool
from .outputs import remove_stale_temps, save_maps, save_overlay
from .predictor import Predictor
from .records import OK, ResultsWriter, read_latest
from .scan_dir import ScanDirLock, check_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EPILOG = """\
exit status:
  0    every input's latest row in results.jsonl is ok
  1    some input failed (its row says why: decode_error, too_large, too_small,
       unsupported_mode, inference_error); the scan still went through every file
  2    bad arguments, no usable backend or model, or an output folder that cannot be written
  130  interrupted (Ctrl-C or SIGTERM); everything written so far stays valid

Rerun the same command to resume: inputs whose latest row is ok (and whose requested map and
overlay files exist) are skipped, as are failed ones unless --retry-errors is given.
"""


@dataclass(frozen=True)
class OutputOptions:
    out: Path
    save_maps: bool
    overlays: bool
    threshold: float
    retry_errors: bool
    workers: int

    def map_path(self, item: InputFile) -> Path:
        return self.out / "maps" / f"{item.relpath}.npz"

    def overlay_path(self, item: InputFile) -> Path:
        return self.out / "overlays" / f"{item.relpath}.png"


class OutputArgs:
    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("outputs")
        group.add_argument("--out", type=Path, required=True, help="output folder (created; reused to resume)")
        group.add_argument("--save-maps", action="store_true", help="write maps/<relpath>.npz (map, conf, score, imgsize)")
        group.add_argument("--overlays", action="store_true", help="write overlays/<relpath>.png (map and confidence)")
        group.add_argument(
            "--threshold", type=float, default=0.5, help="an image is forged when score > T (default: %(default)s)"
        )
        group.add_argument("--retry-errors", action="store_true", help="rerun inputs whose latest row is an error")
        group.add_argument(
            "--workers", type=int, default=min(4, cpu_count()), help="decoding threads (default: %(default)s)"
        )

    def parse(self, args: argparse.Namespace) -> OutputOptions:
        if not 0.0 <= args.threshold <= 1.0:
            raise UsageError(f"--threshold must be within [0, 1], got {args.threshold}")
        if args.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {args.workers}")
        return OutputOptions(args.out, args.save_maps, args.overlays, args.threshold, args.retry_errors, args.workers)


GROUPS = {"model": ModelArgs(), "image": ImageArgs(), "tiling": TilingArgs(), "output": OutputArgs()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.scan",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder (recursive), glob, or @list.txt")
    for group in GROUPS.values():
        group.add_to(parser)
    return parser


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stdout)


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class Scan:
    """The model thread's loop: batches decoded images, writes outputs, then the row."""

    def __init__(self, predictor: Predictor, options: OutputOptions, writer: ResultsWriter, progress: tqdm):
        self.predictor = predictor
        self.options = options
        self.writer = writer
        self.progress = progress
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.seconds = 0.0
        predictor.on_tiles = self._show_tiles

    def _show_tiles(self, done: int, total: int) -> None:
        self.progress.set_postfix_str(f"tiles {done}/{total}" if done < total else "pooling score")

    def run(self, pool: DecodePool) -> None:
        # Whole images wait here, grouped by size, until a group fills one call, the pending total
        # reaches the batch size, or the decoders fall behind; rows are written after every call.
        pending: dict[tuple[int, ...], list[Decoded]] = {}
        while True:
            got = pool.next(timeout=0.02 if pending else None)
            if got is DONE:
                break
            if got is EMPTY:
                pending = self._flush(pending)
            elif got.error is not None:
                self._record_error(got, got.error, "decode_error", got.seconds)
            elif self.predictor.mode(*got.rgb.shape[:2]) == "tiled":
                self._infer([got])
            else:
                group = pending.setdefault(got.rgb.shape, [])
                group.append(got)
                if len(group) >= self.predictor.whole_batch_limit(*got.rgb.shape[:2]):
                    self._infer(pending.pop(got.rgb.shape))
                elif sum(map(len, pending.values())) >= self.predictor.tiling.batch_size:
                    pending = self._flush(pending)
        self._flush(pending)

    def _flush(self, pending: dict[tuple[int, ...], list[Decoded]]) -> dict:
        while pending:
            self._infer(pending.pop(next(iter(pending))))
        return pending

    def _infer(self, batch: list[Decoded]) -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            results = self.predictor.predict_batch([decoded.rgb for decoded in batch])
        except Exception as error:
            if len(batch) > 1:  # find which image fails: each alone
                for decoded in batch:
                    self._infer([decoded])
            else:
                self._record_error(batch[0], error, "inference_error", batch[0].seconds + time.perf_counter() - start)
            return
        share = (time.perf_counter() - start) / len(batch)
        for decoded, result in zip(batch, results):
            self._finish(decoded, result, decoded.seconds + share)

    def _finish(self, decoded: Decoded, result: TruForResult, seconds: float) -> None:
        if not (math.isfinite(result.score) and np.isfinite(result.map).all() and np.isfinite(result.conf).all()):
            error = FloatingPointError("the model returned NaN or infinite values")
            self._record_error(decoded, error, "inference_error", seconds)
            return
        item = decoded.item
        if self.options.save_maps:
            save_maps(self.options.map_path(item), result)
        if self.options.overlays:
            save_overlay(self.options.overlay_path(item), decoded.rgb, result)
        height, width = result.map.shape
        backend = self.predictor.backend
        self._append(
            item,
            status=OK,
            error=None,
            width=width,
            height=height,
            score=float(result.score),
            forged=bool(result.score > self.options.threshold),
            forged_fraction=float(np.count_nonzero(result.map > 0.5) / result.map.size),
            mode=self.predictor.mode(height, width),
            backend=backend.name,
            precision=backend.precision,
            seconds=round(seconds, 4),
        )

    def _record_error(self, decoded: Decoded, error: BaseException, default_status: str, seconds: float) -> None:
        if isinstance(error, TruForError):
            status, message = error.status, str(error)
        else:
            status, message = default_status, f"{type(error).__name__}: {error}"
        rgb = decoded.rgb
        backend = self.predictor.backend
        self._append(
            decoded.item,
            status=status,
            error=message,
            width=None if rgb is None else rgb.shape[1],
            height=None if rgb is None else rgb.shape[0],
            score=None,
            forged=None,
            forged_fraction=None,
            mode=None if rgb is None else self.predictor.mode(*rgb.shape[:2]),
            backend=backend.name,
            precision=backend.precision,
            seconds=round(seconds, 4),
        )
        # The commonest errors are counted without the file name, which every message starts with.
        self.errors[f"{status}: {message.replace(str(decoded.item.path), '<file>')[:200]}"] += 1

    def _append(self, item: InputFile, **fields) -> None:
        self.writer.append({"path": str(item.path), "relpath": item.relpath, **fields})
        self.statuses[fields["status"]] += 1
        self.progress.update(1)
        failed = sum(n for status, n in self.statuses.items() if status != OK)
        self.progress.set_postfix_str(f"failed {failed}" if failed else "", refresh=False)


def _is_done(item: InputFile, latest: dict, options: OutputOptions) -> bool:
    row = latest.get(item.relpath)
    if row is None:
        return False
    if row["status"] != OK:
        return not options.retry_errors
    if options.save_maps and not options.map_path(item).is_file():
        return False
    return not (options.overlays and not options.overlay_path(item).is_file())


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _random_weights_warning(request, backend) -> None:
    manifest = getattr(backend, "manifest", None)
    if backend.name == "torch" and request.checkpoint is None:
        what = f"--preset {request.preset} without --checkpoint runs"
    elif manifest is not None and manifest.checkpoint is None:
        what = f"{manifest.path} was exported without a checkpoint: it holds"
    else:
        return
    bar = "!" * 78
    _warn(
        f"{bar}\n!! WARNING: {what} RANDOM WEIGHTS.\n"
        "!! Scores, maps and forged decisions are MEANINGLESS: use this only to test the pipeline.\n"
        f"{bar}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = "python -m runtime.scan " + shlex.join(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        request, image_options, tiling, options = (GROUPS[name].parse(args) for name in GROUPS)
    except UsageError as error:
        parser.error(str(error))
    started = time.perf_counter()

    with ExitStack() as stack:
        try:
            inputs = collect_inputs(args.inputs)
            backend = create_backend(request)
            _random_weights_warning(request, backend)
            options.out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(ScanDirLock(options.out))
            predictor = stack.enter_context(
                Predictor(backend, tiling, exif_transpose=image_options.exif_transpose, max_pixels=image_options.max_pixels)
            )
            check_settings(options.out, request, backend, tiling, image_options, options.threshold)
        except (TruForError, ValueError, OSError) as error:
            _warn(f"[E] {error}")
            _warn(f"[E] FAILED | Command: {command}")
            return EXIT_USAGE
        for folder in ("maps", "overlays"):
            for path in remove_stale_temps(options.out / folder):
                _log(f"[I] removed {path}, left by an interrupted run")
        results_path = options.out / "results.jsonl"
        latest = read_latest(results_path)
        todo = [item for item in inputs if not _is_done(item, latest, options)]
        _log(
            f"[I] {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to scan with "
            f"{backend.describe()}, {options.workers} decoding threads -> {options.out}"
        )
        writer = stack.enter_context(ResultsWriter(results_path))
        if writer.torn_bytes:
            _log(f"[I] cut a torn last line ({writer.torn_bytes} bytes) from {results_path}")
        progress = stack.enter_context(tqdm(total=len(todo), unit="img", dynamic_ncols=True, file=sys.stderr))
        scan = Scan(predictor, options, writer, progress)
        pool = DecodePool(todo, options.workers, image_options)
        stack.callback(pool.close)
        interrupted, fatal = False, None
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        loop_started = time.perf_counter()
        try:
            scan.run(pool)
        except KeyboardInterrupt:
            interrupted = True
        except OSError as error:  # an output file could not be written: every later file would fail too
            fatal = error
        finally:
            signal.signal(signal.SIGTERM, previous)
            progress.close()
            scan.seconds = time.perf_counter() - loop_started
    return _summary(scan, inputs, results_path, time.perf_counter() - started, command, interrupted, fatal)


def _summary(scan, inputs, results_path, seconds, command, interrupted, fatal) -> int:
    done = sum(scan.statuses.values())
    counts = ", ".join(f"{status} {n}" for status, n in scan.statuses.most_common()) or "nothing"
    rate = done / scan.seconds if scan.seconds else 0.0
    _log(f"[I] This run: {counts} in {scan.seconds:.1f} s ({rate:.3f} images/s, model loading excluded)")
    for message, n in scan.errors.most_common(5):
        _log(f"[I]   {n} x {message}")
    if len(scan.errors) > 5:
        _log(f"[I]   ... and {len(scan.errors) - 5} other error messages (see {results_path})")
    latest = read_latest(results_path)
    rows = [latest.get(item.relpath) for item in inputs]
    failed = sum(row is not None and row["status"] != OK for row in rows)
    missing = sum(row is None for row in rows)
    _log(f"[I] All {len(inputs)} inputs: ok {len(inputs) - failed - missing}, failed {failed}, not scanned {missing}")
    if fatal is not None:
        _warn(f"[E] stopped: cannot write outputs: {fatal}")
        _warn(f"[E] FAILED | Runtime: {seconds:.3f}s | Command: {command}")
        return EXIT_USAGE
    if interrupted:
        _warn(f"[W] INTERRUPTED | Runtime: {seconds:.3f}s | rerun to resume | Command: {command}")
        return EXIT_INTERRUPTED
    verdict = "PASSED" if failed == 0 and missing == 0 else "FAILED"
    _log(f"[I] {verdict} | Runtime: {seconds:.3f}s | Command: {command}")
    return EXIT_OK if verdict == "PASSED" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
