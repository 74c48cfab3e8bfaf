"""Reusable argument groups: each adds its flags to a parser and parses them into a frozen object.

A CLI composes the groups it needs (``runtime.scan`` uses all of them, ``benchmarks.tiling_vs_whole``
``ModelArgs``). ``parse`` raises ``UsageError`` naming both sides of a conflict; the CLI turns it
into argparse's usage error (exit status 2).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from export.auto_precision import AUTO, INT8_CPU_NOTE
from export.contract import DEFAULT_TILE, PRECISION_NAMES, WholeImageRule
from reference.errors import CheckpointError
from reference.image import DEFAULT_MAX_PIXELS
from reference.weights_args import WeightsArgs

from .backends import (
    DEFAULT_ARTIFACTS,
    DEFAULT_SERVER_URL,
    BackendRequest,
    backend_help,
    check_request,
    choices,
    cpu_count,
    readers,
)
from .decode import ImageOptions
from .errors import UsageError
from .tiling import DEFAULT_BATCH_SIZE, WINDOWS, TilingConfig

WEIGHTS = WeightsArgs()


PRECISION_HELP = (
    f"{AUTO} (default): the fastest for the backend that runs, said at the start: fp16 on a GPU (TensorRT, "
    f"CUDA), fp32 on a CPU. {INT8_CPU_NOTE}"
).replace("%", "%%")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


class ModelArgs:
    """Which backend runs which model at which precision; each model flag is read by the backends that
    declare it (``Backend.flags``), which the help says and ``parse`` enforces."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("model and backend")
        group.add_argument("--backend", default="auto", choices=choices(), help=backend_help())
        group.add_argument("--precision", default=AUTO, choices=(AUTO, *PRECISION_NAMES), help=PRECISION_HELP)

        def read_by(flag: str) -> str:
            return f"; read by --backend {readers(flag)}"

        def model_flag(flag: str, text: str, **kwargs) -> None:
            group.add_argument(flag, help=text + read_by(flag), **kwargs)

        model_flag("--artifacts", f"folder made by python -m export.build (default: {DEFAULT_ARTIFACTS}/)", type=Path)
        WEIGHTS.add_to(group, note=read_by)
        model_flag("--device", "device to run on: cpu (default), cuda, cuda:N")
        model_flag("--threads", f"intra-op threads (default: all {cpu_count()} cores)", type=_positive)
        model_flag("--tile-size", f"tile side (default {DEFAULT_TILE}); backends that load artifacts take it from "
                   "them", type=_positive)
        model_flag("--url", f"gRPC address HOST:PORT of the inference server (default {DEFAULT_SERVER_URL})")

    def parse(self, args: argparse.Namespace) -> BackendRequest:
        """The request, with the weights of --weights or --random-weights resolved (the authors' downloaded)
        once the flags are known to fit the backend; without either, the torch backend resolves the
        project's default model if it is the one that runs."""
        others = {"--device": args.device, "--threads": args.threads, "--tile-size": args.tile_size, "--url": args.url}
        given = [
            *(["--artifacts"] if args.artifacts is not None else []),
            *WEIGHTS.given(args),
            *(flag for flag, value in others.items() if value is not None),
        ]
        request = BackendRequest(
            backend=args.backend,
            precision=args.precision,
            artifacts=args.artifacts if args.artifacts is not None else DEFAULT_ARTIFACTS,
            preset=args.preset,
            random_weights=args.random_weights,
            device=args.device or "cpu",
            threads=args.threads,
            tile_size=args.tile_size,
            url=args.url or DEFAULT_SERVER_URL,
        )
        check_request(request, given)
        try:
            return replace(request, weights=WEIGHTS.parse(args, defer_default=True))
        except CheckpointError as error:
            raise UsageError(str(error)) from None


class ImageArgs:
    """How files become the model's RGB input."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("image decoding")
        group.add_argument(
            "--exif-transpose",
            action="store_true",
            help="apply EXIF orientation first (the official code does not; off by default for parity)",
        )
        group.add_argument(
            "--max-pixels",
            type=_non_negative,
            default=DEFAULT_MAX_PIXELS,
            help="larger images get status too_large, checked on the header before decoding; 0: no limit "
            "(default: %(default)s)",
        )

    def parse(self, args: argparse.Namespace) -> ImageOptions:
        return ImageOptions(args.exif_transpose, args.max_pixels or None)


class TilingArgs:
    """When large images run as tiles, and how many images or tiles share one call."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("tiling and batching")
        rule = WholeImageRule()
        group.add_argument(
            "--tile-threshold-pixels",
            type=_non_negative,
            default=None,
            help="images with more pixels, or a side above the artifacts' whole-image limit, run as blended tiles "
            "(an approximation of the official output); the others run whole, as the official code does. "
            f"0 tiles everything (default: the artifacts' limit, set by python -m export.build --whole-max-pixels; "
            f"{rule.max_pixels} pixels and {rule.max_side} per side for the torch backend)",
        )
        group.add_argument(
            "--tile-overlap", type=_non_negative, default=None, help="minimum overlap of neighbouring tiles in "
            "pixels (default: a quarter of the tile size)"
        )
        group.add_argument("--tile-window", default="tukey", choices=WINDOWS, help="blending window (default: %(default)s)")
        group.add_argument(
            "--batch-size",
            type=_positive,
            default=DEFAULT_BATCH_SIZE,
            help="tiles, or same-size whole images, per model call; whole-image batches also stay within "
            "the whole-image pixel limit in total (default: %(default)s)",
        )

    def parse(self, args: argparse.Namespace) -> TilingConfig:
        try:
            return TilingConfig(args.tile_threshold_pixels, args.tile_overlap, args.tile_window, args.batch_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
