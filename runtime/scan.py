"""Scan many images with TruFor: one JSON line per image, resumable, safe to interrupt.

    python -m runtime.scan photos/ more/*.jpg @list.txt --out scan/ [--save-maps] [--overlays] [--report]

Writes ``DIR/results.jsonl`` (one row per image: status, size, score, decision and its threshold,
forged fractions, backend, timing), ``DIR/maps/<relpath>.npz`` with the official fields
(``--save-maps``), ``DIR/overlays/<relpath>.png`` (``--overlays``) and ``DIR/report.html`` with
``DIR/thumbnails/`` (``--report``, see ``runtime.report``). Rerunning the same command skips finished images.
With ``--ray [ADDRESS]`` the model runs on a Ray cluster's actors (``runtime.ray_scan``); the rows,
files and resume are the same. The model: exported artifacts (``--artifacts``, default ``artifacts/``
when they exist), else the PyTorch reference with ``--weights official|ZIP|PATH``, by default the
project's own trained model (said in one line).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from export.auto_precision import INT8_CPU_NOTE
from reference.errors import TruForError
from reference.inputs import InputFile, collect_inputs

from . import ray_scan
from .args import ImageArgs, ModelArgs, TilingArgs
from .backends import cpu_count, create_backend
from .decision import DEFAULT_CONFIDENCE_THRESHOLD, DEFAULT_THRESHOLD, DecisionRule, read_threshold_file
from .decode import DONE, EMPTY, Decoded, DecodePool
from .errors import UsageError
from .outputs import remove_stale_temps
from .predictor import Predictor
from .records import OK, ResultsWriter, generic_error, read_latest
from .scan_dir import ScanDirLock, check_settings, record_backends_ran, record_command
from .scanner import OUTPUT_FILES, OutputOptions, Scanner

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_WORKERS = min(4, cpu_count())
EPILOG = """\
exit status:
  0    every input's latest row in results.jsonl is ok
  1    some input failed (its row says why: decode_error, too_large, too_small,
       unsupported_mode, inference_error, or worker_crash with --ray: it killed its Ray
       worker on every try); the scan still went through every file
  2    bad arguments, no usable backend or model, an output folder that cannot be written,
       or (--ray) no Ray installed, no cluster to connect to, or actors that cannot start
  130  interrupted (Ctrl-C or SIGTERM); everything written so far stays valid

Rerun the same command to resume: inputs whose latest row is ok (and whose requested map and
overlay files exist) are skipped, as are failed ones unless --retry-errors is given.
"""


class OutputArgs:
    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("outputs")
        group.add_argument("--out", type=Path, required=True, help="output folder (created; reused to resume)")
        group.add_argument("--save-maps", action="store_true", help="write maps/<relpath>.npz (map, conf, score, imgsize)")
        group.add_argument("--overlays", action="store_true", help="write overlays/<relpath>.png (map and confidence)")
        group.add_argument("--report", action="store_true", help="write thumbnails/ and report.html (runtime.report)")
        group.add_argument(
            "--threshold", type=float, help=f"an image is forged when score > T (default: {DEFAULT_THRESHOLD})"
        )
        group.add_argument(
            "--threshold-file", type=Path, help="the threshold python -m runtime.calibrate set for a false-alarm rate"
        )
        group.add_argument(
            "--confidence-threshold",
            type=float,
            default=DEFAULT_CONFIDENCE_THRESHOLD,
            help="forged_fraction_confident counts forged pixels whose confidence is above C (default: %(default)s)",
        )
        group.add_argument("--retry-errors", action="store_true", help="rerun inputs whose latest row is an error")
        group.add_argument(
            "--workers", type=int, default=DEFAULT_WORKERS, help="decoding threads (default: %(default)s)"
        )

    def parse(self, args: argparse.Namespace) -> OutputOptions:
        for flag, value in (("--threshold", args.threshold), ("--confidence-threshold", args.confidence_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{flag} must be within [0, 1], got {value}")
        if args.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {args.workers}")
        if args.threshold_file is not None:
            if args.threshold is not None:
                raise UsageError(
                    f"--threshold {args.threshold} and --threshold-file {args.threshold_file} both set the threshold; "
                    "pick one"
                )
            try:
                decision = read_threshold_file(args.threshold_file, args.confidence_threshold)
            except TruForError as error:
                raise UsageError(str(error)) from None
        elif args.threshold is not None:
            decision = DecisionRule(args.threshold, "--threshold", args.confidence_threshold)
        else:
            decision = DecisionRule(confidence_threshold=args.confidence_threshold)
        return OutputOptions(
            args.out, args.save_maps, args.overlays, decision, args.retry_errors, args.workers, thumbnails=args.report
        )


GROUPS = {
    "model": ModelArgs(),
    "image": ImageArgs(),
    "tiling": TilingArgs(),
    "output": OutputArgs(),
    "ray": ray_scan.RayArgs(),
}


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


class RowLog:
    """Appends each row to results.jsonl and tallies it for the progress bar and the summary."""

    def __init__(self, writer: ResultsWriter, progress: tqdm):
        self.writer = writer
        self.progress = progress
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.seconds = 0.0

    def append(self, row: dict) -> None:
        self.writer.append(row)
        status = row["status"]
        self.statuses[status] += 1
        if status != OK:
            # The commonest errors are counted without the file name, which every message starts with.
            self.errors[f"{status}: {generic_error(row)[:200]}"] += 1
        self.progress.update(1)
        failed = sum(n for status, n in self.statuses.items() if status != OK)
        self.progress.set_postfix_str(f"failed {failed}" if failed else "", refresh=False)


class Scan(RowLog):
    """The local model thread's loop: batches decoded images of one size for the Scanner, appends the rows."""

    def __init__(self, predictor: Predictor, options: OutputOptions, writer: ResultsWriter, progress: tqdm):
        super().__init__(writer, progress)
        self.predictor = predictor
        self.scanner = Scanner(predictor, options)
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
            elif got.error is not None or self.predictor.mode(*got.rgb.shape[:2]) == "tiled":
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
        for row in self.scanner.scan(batch):
            self.append(row)


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


def _precision_notes(backend) -> None:
    """Say what --precision auto picked and why, and that int8 does not pay on a CPU."""
    if backend.precision_choice is not None:
        _log(f"[I] {backend.precision_choice.message()}")
    if backend.precision == "int8" and not backend.capabilities.gpu:
        _warn(f"[W] {INT8_CPU_NOTE}")


def _random_weights_warning(backend) -> None:
    what = backend.identity.random_weights
    if what is None:
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
        request, image_options, tiling, options, ray_options = (GROUPS[name].parse(args) for name in GROUPS)
    except UsageError as error:
        parser.error(str(error))
    code = run(args.inputs, request, image_options, tiling, options, ray_options, command)
    if args.report and code in (EXIT_OK, EXIT_FAILED):
        from .report import write_report  # jinja2 loads only for a report

        _log(f"[I] report: {write_report(options.out)}")
    return code


def run(specs: list[str], request, image_options, tiling, options: OutputOptions, ray_options, command: str) -> int:
    """Scan the inputs ``specs`` name into ``options.out`` and return the exit status; ``runtime.calibrate``
    scans with it too."""
    started = time.perf_counter()

    with ExitStack() as stack:
        try:
            inputs = collect_inputs(specs)
            backend = create_backend(request)
            request = replace(request, precision=backend.precision)  # --precision auto, resolved (Ray actors too)
            _precision_notes(backend)
            _random_weights_warning(backend)
            if ray_options is not None:  # the model runs on the actors; the backend here names what they run
                stack.enter_context(ray_scan.connect(ray_options))
                job = ray_scan.RayScan(ray_options, request, backend, tiling, image_options, options)
                where = job.describe()
            options.out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(ScanDirLock(options.out))
            if ray_options is None:
                predictor = stack.enter_context(
                    Predictor(
                        backend, tiling, exif_transpose=image_options.exif_transpose, max_pixels=image_options.max_pixels
                    )
                )
                where = f"{options.workers} decoding threads"
            check_settings(options.out, backend, tiling, image_options, options.decision)
            record_command(options.out, command)
        except (TruForError, ValueError, OSError) as error:
            _warn(f"[E] {error}")
            _warn(f"[E] FAILED | Command: {command}")
            return EXIT_USAGE
        for folder in OUTPUT_FILES:
            for path in remove_stale_temps(options.out / folder):
                _log(f"[I] removed {path}, left by an interrupted run")
        results_path = options.out / "results.jsonl"
        latest = read_latest(results_path)
        todo = [item for item in inputs if not _is_done(item, latest, options)]
        _log(
            f"[I] {len(inputs)} inputs, {len(inputs) - len(todo)} already done, {len(todo)} to scan with "
            f"{backend.describe()}, {where} -> {options.out}"
        )
        writer = stack.enter_context(ResultsWriter(results_path))
        if writer.torn_bytes:
            _log(f"[I] cut a torn last line ({writer.torn_bytes} bytes) from {results_path}")
        progress = stack.enter_context(tqdm(total=len(todo), unit="img", dynamic_ncols=True, file=sys.stderr))
        if ray_options is None:
            log = Scan(predictor, options, writer, progress)
            pool = DecodePool(todo, options.workers, image_options)
            stack.callback(pool.close)

            def work() -> None:
                log.run(pool)
        else:
            log = RowLog(writer, progress)

            def work() -> None:
                with closing(job.rows(todo)) as rows:  # closing stops the Ray job at once on Ctrl-C
                    for row in rows:
                        log.append(row)

        interrupted, fatal = False, None
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        loop_started = time.perf_counter()
        try:
            work()
        except KeyboardInterrupt:
            interrupted = True
        except OSError as error:  # an output file could not be written: every later file would fail too
            fatal = f"cannot write outputs: {error}"
        except TruForError as error:  # the Ray job could not go on
            fatal = str(error)
        finally:
            signal.signal(signal.SIGTERM, previous)
            progress.close()
            log.seconds = time.perf_counter() - loop_started
        if fatal is None:  # still under the folder's lock
            record_backends_ran(options.out, read_latest(results_path).values())
    timing = "model loading excluded" if ray_options is None else "Ray actor start-up included"
    return _summary(log, inputs, results_path, time.perf_counter() - started, command, interrupted, fatal, timing)


def _summary(log: RowLog, inputs, results_path, seconds, command, interrupted, fatal, timing: str) -> int:
    done = sum(log.statuses.values())
    counts = ", ".join(f"{status} {n}" for status, n in log.statuses.most_common()) or "nothing"
    rate = done / log.seconds if log.seconds else 0.0
    _log(f"[I] This run: {counts} in {log.seconds:.1f} s ({rate:.3f} images/s, {timing})")
    for message, n in log.errors.most_common(5):
        _log(f"[I]   {n} x {message}")
    if len(log.errors) > 5:
        _log(f"[I]   ... and {len(log.errors) - 5} other error messages (see {results_path})")
    latest = read_latest(results_path)
    rows = [latest.get(item.relpath) for item in inputs]
    failed = sum(row is not None and row["status"] != OK for row in rows)
    missing = sum(row is None for row in rows)
    _log(f"[I] All {len(inputs)} inputs: ok {len(inputs) - failed - missing}, failed {failed}, not scanned {missing}")
    if fatal is not None:
        _warn(f"[E] stopped: {fatal}")
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
