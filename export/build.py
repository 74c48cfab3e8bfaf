"""``python -m export.build``: the reference model to ONNX graphs (whole, tile, score) plus a manifest.

    python -m export.build [--precision auto|fp32|fp16|int8] [--weights official|ZIP|PATH] [--out DIR]
                           [--tile N] [--calib DIR] [--int8-layers SCOPE ...] [--onnx-only] [--conf-bn-variant docker|train]
                           [--triton REPO [--triton-device auto|cpu|gpu] [--triton-instances N] ...]

``--weights`` picks the weights (default: the project's trained model; ``official`` for the authors',
see ``reference.weights``) and with them the architecture; ``--random-weights --preset NAME`` exports an
untrained model (for tests). The manifest records which weights it holds. ``--triton REPO`` also writes the graphs
(and engines) as a Triton Inference Server model repository (``export.triton``). Exit status: 0 when
done, 1 when an export step failed, 2 for usage errors and when no TensorRT engine could be built
(unless ``--onnx-only``).

The engines layer sits above export and reads its artifacts, so the TensorRT steps run as its own
commands in child processes (``python -m engines.build``, ``python -m engines.triton``): export never
imports it, and a TensorRT crash cannot take this command's summary with it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from reference.config import CONF_BN_EPS
from reference.errors import TruForError
from reference.weights import ResolvedWeights
from reference.weights_args import WeightsArgs

from .auto_precision import AUTO, INT8_CPU_NOTE, for_export, visible_nvidia_gpus
from .contract import DEFAULT_TILE, PRECISIONS, WholeImageRule, check_tile_size, precision_help
from .errors import BackendUnavailableError, ExportError
from .int8 import DEFAULT_SCOPES, SCOPES
from .manifest import load_manifest
from .triton import (
    TritonOptions,
    add_engine_plans,
    add_options,
    model_config_pb2,
    next_commands,
    options_from,
    write_repository,
)

EXIT_OK, EXIT_FAILED, EXIT_NO_ENGINE = 0, 1, 2
ENGINES_UNAVAILABLE = 2  # python -m engines.build's exit status when no TensorRT or GPU is usable here
WEIGHTS = WeightsArgs()


@dataclass(frozen=True)
class BuildConfig:
    precision: str
    preset: str = "trufor"  # the weights' preset
    weights: ResolvedWeights | None = None  # None: random init of ``preset`` (tests that pass their own model)
    out: Path = Path("artifacts")
    tile: int = DEFAULT_TILE
    whole_rule: WholeImageRule = WholeImageRule()
    calib: Path | None = None
    calib_count: int = 16
    int8_layers: tuple[str, ...] = DEFAULT_SCOPES
    onnx_only: bool = False
    conf_bn_variant: str = "docker"
    triton: Path | None = None  # Triton model repository to write (export.triton)
    triton_options: TritonOptions = TritonOptions()


def _precision_help() -> str:
    text = (f"{AUTO} (default): the fastest where this machine runs the model, said when it starts: fp16 with an "
            f"NVIDIA GPU, fp32 on a CPU; {precision_help()}. {INT8_CPU_NOTE}")
    return text.replace("%", "%%")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.build",
        description="Export TruFor to ONNX (whole-image, tile and score graphs) and write a manifest.",
    )
    parser.add_argument("--precision", default=AUTO, choices=[AUTO, *PRECISIONS], help=_precision_help())
    WEIGHTS.add_to(parser)
    parser.add_argument("--out", type=Path, default=Path("artifacts"), help="output folder (default artifacts/)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile graph size T (default {DEFAULT_TILE})")
    default_rule = WholeImageRule()
    parser.add_argument("--whole-max-pixels", type=int, default=default_rule.max_pixels,
                        help="images of at most this many pixels, and --whole-max-side per side, run whole; larger "
                        "ones run as tiles. Recorded in the manifest: TensorRT's whole-image profile is sized from "
                        "it (default %(default)s)")
    parser.add_argument("--whole-max-side", type=int, default=default_rule.max_side, help="(default %(default)s)")
    parser.add_argument("--calib", type=Path, help="int8: folder of calibration images (default: synthetic images; "
                        "real images from the scanned domain give better ranges)")
    parser.add_argument("--calib-count", type=int, default=16, help="int8: number of calibration tiles (default 16)")
    parser.add_argument("--int8-layers", nargs="+", choices=sorted(SCOPES), metavar="SCOPE",
                        help=f"int8: the layers to quantize, by scope (default {' '.join(DEFAULT_SCOPES)}): "
                        + "; ".join(f"{name}: {text}" for name, text in SCOPES.items()))
    parser.add_argument("--onnx-only", action="store_true", help="stop after the ONNX artifacts (exit 0 without TensorRT)")
    parser.add_argument("--conf-bn-variant", default="docker", choices=sorted(CONF_BN_EPS),
                        help="confidence-decoder BN eps: docker = test_docker outputs (default), train = TruFor_train_test")
    parser.add_argument("--triton", type=Path, metavar="REPO",
                        help="also write a Triton Inference Server model repository there (models of other "
                        "precisions already in it stay)")
    add_options(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.precision == AUTO:
        choice = for_export()
        print(choice.message(), flush=True)
        args.precision = choice.precision
    elif args.precision == "int8" and not visible_nvidia_gpus():
        print(f"note: {INT8_CPU_NOTE}", flush=True)
    try:
        check_tile_size(args.tile)
    except ValueError as error:
        parser.error(str(error))
    if args.calib is not None and not PRECISIONS[args.precision].calibrated:
        parser.error(f"--calib is only used by int8, not {args.precision}")
    if args.calib_count < 1:
        parser.error("--calib-count must be at least 1")
    if args.int8_layers is not None and not PRECISIONS[args.precision].calibrated:
        parser.error(f"--int8-layers is only used by int8, not {args.precision}")
    args.int8_layers = tuple(dict.fromkeys(args.int8_layers or DEFAULT_SCOPES))
    values = vars(args)
    try:
        triton_options = options_from(values)
    except ValueError as error:
        parser.error(str(error))
    if args.triton is None and triton_options != TritonOptions():
        parser.error("the --triton-* options shape the Triton model repository; pass --triton REPO too")
    if args.triton is not None:
        try:
            model_config_pb2()
        except TruForError as error:
            parser.error(f"--triton: {error}")
    try:
        whole_rule = WholeImageRule(args.whole_max_pixels, args.whole_max_side)
    except ValueError as error:
        parser.error(str(error))
    weights = WEIGHTS.parse_or_exit(args, parser)  # last: it may download the authors' weights
    skip = ("triton_options", "whole_rule", "preset", "weights")
    fields = {k: values[k] for k in BuildConfig.__dataclass_fields__ if k not in skip}
    return BuildConfig(**fields, preset=weights.preset, weights=weights, whole_rule=whole_rule,
                       triton_options=triton_options)


@contextlib.contextmanager
def step(label: str, path: Path | None = None):
    """Log a step's outcome: seconds and the file's path and size, or the failure and its reason."""
    start = time.perf_counter()
    print(f"{label} ...", flush=True)
    try:
        yield
    except Exception as error:
        print(f"{label}: FAILED after {time.perf_counter() - start:.1f}s: {type(error).__name__}: {error}", flush=True)
        raise
    size = f", {path} ({path.stat().st_size / 1e6:.1f} MB)" if path is not None and path.exists() else ""
    print(f"{label}: done in {time.perf_counter() - start:.1f}s{size}", flush=True)


def build_engines(out: Path, precision: str) -> None:
    """Build the TensorRT engines of the graphs just exported, with ``python -m engines.build --rebuild``
    (the graphs were rewritten, so engines built from older ones are replaced rather than refused)."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError("TensorRT is not installed (on a machine with an NVIDIA GPU: pip install -e "
                                      "'.[gpu]' for CUDA 13, driver >= 580, or -e '.[gpu-cu12]' for CUDA 12, driver >= 525)")
    command = [sys.executable, "-m", "engines.build", "--artifacts", str(out), "--precision", precision, "--rebuild"]
    status = subprocess.run(command, check=False).returncode
    if status == ENGINES_UNAVAILABLE:
        raise BackendUnavailableError("python -m engines.build found no usable TensorRT or GPU here (its reason is above)")
    if status:
        raise ExportError(f"{shlex.join(command)} exited with status {status} (its error is above)")


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    from .pipeline import export_artifacts  # torch and friends load after argument checks

    try:
        manifest_path = export_artifacts(config, step)
    except TruForError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    out, p = config.out, config.precision
    print(f"\nONNX artifacts ready in {out}/ ({manifest_path.name})")
    status = EXIT_OK
    if not config.onnx_only:
        try:
            with step("tensorrt engines"):
                build_engines(out, p)
        except BackendUnavailableError as error:
            print(f"No TensorRT engine was built: {error}. The ONNX artifacts in {out}/ are ready for the "
                  "ONNX Runtime backend; pass --onnx-only to make this the expected outcome (exit 0).")
            status = EXIT_NO_ENGINE
        except TruForError as error:
            print(f"engine build failed: {error}", file=sys.stderr)
            return EXIT_FAILED
    if config.triton is not None:
        try:
            with step(f"triton model repository {config.triton}"):
                names = write_repository(load_manifest(out, p), config.triton, config.triton_options)
                add_engine_plans(out, p, config.triton, config.triton_options)
        except TruForError as error:
            print(f"triton model repository failed: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(f"Triton models in {config.triton}/: {', '.join(names)}")
    print("\nNext:")
    print(f"  python -m runtime.scan INPUT --out results --artifacts {out} --precision {p}")
    if config.triton is not None:
        print("\n".join(f"  {command}" for command in next_commands(config.triton, p)))
    if status == EXIT_NO_ENGINE:
        source = config.weights.argv if config.weights else ("--random-weights", "--preset", config.preset)
        print(f"  (on a machine with TensorRT and a GPU) python -m export.build --precision {p} --out {out} "
              + shlex.join(source))
    return status


if __name__ == "__main__":
    sys.exit(main())
