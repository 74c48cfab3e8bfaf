"""Reusable argument groups: each adds its flags to a parser and parses them into a frozen object.

A CLI composes the groups it needs (``runtime.scan`` uses all of them; ``export.build`` can share
``ModelArgs``). ``parse`` raises ``UsageError`` naming both sides of a conflict; the CLI turns it
into argparse's usage error (exit status 2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from reference.config import PRESETS
from reference.image import DEFAULT_MAX_PIXELS

from .backends import (
    AUTO_ORDER,
    BACKEND_CHOICES,
    BACKENDS,
    DEFAULT_ARTIFACTS,
    DEFAULT_TRITON_URL,
    PRECISIONS,
    BackendRequest,
    cpu_count,
)
from .tiling import DEFAULT_BATCH_SIZE, DEFAULT_THRESHOLD_PIXELS, WINDOWS, TilingConfig


class UsageError(ValueError):
    """Arguments that cannot be honoured together; the message names both sides."""


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
    """Which backend runs which model at which precision."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("model and backend")
        group.add_argument(
            "--backend",
            default="auto",
            choices=BACKEND_CHOICES,
            help="auto (default) takes the fastest one usable here: "
            + ", then ".join(f"{name} ({BACKENDS[name].summary})" for name in AUTO_ORDER)
            + "; or triton (" + BACKENDS["triton"].summary + "), never chosen by auto",
        )
        group.add_argument("--precision", default="fp32", choices=PRECISIONS, help="(default: %(default)s)")
        group.add_argument(
            "--artifacts",
            type=Path,
            default=None,
            help=f"folder made by python -m export.build (default: {DEFAULT_ARTIFACTS}/); onnxruntime only",
        )
        group.add_argument("--checkpoint", type=Path, help="official-format weights (trufor.pth.tar); torch only")
        group.add_argument(
            "--preset",
            choices=sorted(PRESETS),
            help="model variant for --checkpoint (default trufor); alone it means RANDOM weights, for testing",
        )
        group.add_argument("--device", default=None, help="torch device: cpu (default), cuda, cuda:N")
        group.add_argument(
            "--threads", type=_positive, default=None, help=f"intra-op threads (default: all {cpu_count()} cores)"
        )
        group.add_argument(
            "--tile-size", type=_positive, default=None, help="tile side for the torch backend (default 512); "
            "onnxruntime takes it from the artifacts"
        )
        group.add_argument(
            "--url", default=None, help=f"gRPC address HOST:PORT of the Triton server (default {DEFAULT_TRITON_URL}); "
            "triton only"
        )

    def parse(self, args: argparse.Namespace) -> BackendRequest:
        torch_only = {
            "--checkpoint": args.checkpoint,
            "--preset": args.preset,
            "--device": args.device,
            "--tile-size": args.tile_size,
        }
        given = [flag for flag, value in torch_only.items() if value is not None]
        if args.url is not None and args.backend != "triton":
            raise UsageError(
                f"--url is read by --backend triton only, but --backend {args.backend} was given; "
                "pass --backend triton to scan through a Triton server"
            )
        if args.backend == "triton":
            local = {"--artifacts": args.artifacts, "--threads": args.threads, **torch_only}
            misplaced = [flag for flag, value in local.items() if value is not None]
            if misplaced:
                raise UsageError(
                    f"{misplaced[0]} describes a local model, but --backend triton runs the models of the "
                    "server at --url (their threads and tile size are set when the repository is written: "
                    "python -m export.build --triton REPO --triton-threads N)"
                )
        if args.backend in ("onnxruntime", "tensorrt") and given:
            raise UsageError(
                f"{given[0]} is read by --backend torch only, but --backend {args.backend} was given; "
                f"{args.backend} takes the model from --artifacts (build them with python -m export.build)"
            )
        if args.backend == "torch" and args.artifacts is not None:
            raise UsageError(
                "--artifacts is read by --backend onnxruntime only, but --backend torch was given; "
                "pass --checkpoint FILE for torch"
            )
        on_cuda = (args.device or "cpu").startswith("cuda")
        if args.backend == "torch" and args.precision not in (("fp32", "fp16") if on_cuda else ("fp32",)):
            raise UsageError(
                f"--backend torch runs fp32 (and fp16 with --device cuda), but --precision {args.precision} was "
                f"given{'' if on_cuda else ' without --device cuda'}; use --backend onnxruntime with artifacts "
                f"built by python -m export.build --precision {args.precision}"
            )
        if args.backend == "auto" and args.artifacts is not None and given:
            raise UsageError(
                f"--artifacts and {given[0]} name two different models; pick one with --backend "
                "onnxruntime (--artifacts) or --backend torch (--checkpoint/--preset)"
            )
        return BackendRequest(
            backend=args.backend,
            precision=args.precision,
            artifacts=args.artifacts if args.artifacts is not None else DEFAULT_ARTIFACTS,
            checkpoint=args.checkpoint,
            preset=args.preset,
            device=args.device or "cpu",
            threads=args.threads,
            tile_size=args.tile_size,
            url=args.url or DEFAULT_TRITON_URL,
        )


@dataclass(frozen=True)
class ImageOptions:
    exif_transpose: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS


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
        group.add_argument(
            "--tile-threshold-pixels",
            type=_non_negative,
            default=DEFAULT_THRESHOLD_PIXELS,
            help="images with more pixels run as blended tiles (an approximation of the official output); "
            "smaller ones run whole, as the official code does. 0 tiles everything (default: %(default)s)",
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
            "--tile-threshold-pixels in total (default: %(default)s)",
        )

    def parse(self, args: argparse.Namespace) -> TilingConfig:
        try:
            return TilingConfig(args.tile_threshold_pixels, args.tile_overlap, args.tile_window, args.batch_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
