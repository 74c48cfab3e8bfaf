"""Build TensorRT engines for an exported precision: ``python -m engines.build --artifacts DIR --precision P``.

One engine per graph of ``manifest.<precision>.json``, written beside its ONNX file with a sidecar:

- ``whole``: the official whole-image path; profile over batch (1..--max-batch) and height/width
  (29 to the manifest's whole-image rule's ``max_side``, tuned for --opt-height/--opt-width): the
  rule that makes the Predictor run an image whole sizes this profile, so such an image always fits;
- ``tile``: fixed T x T tiles; profile over batch (1..--max-tile-batch, tuned for --opt-tile-batch);
- ``score``: the float32 detection head over stitched full-resolution logits (29..--max-score-side
  per side, tuned for a 12 MP photo). It is small, but as an engine it keeps the tiled path's score
  on the GPU without PyTorch; shapes beyond its profile fall back to ONNX Runtime (runtime/).

Whole and tile engines get ``--streams`` identical profiles: one per execution context, so that
contexts on different CUDA streams never share a profile's state. An engine that exists and
matches (GPU, TensorRT, ONNX hash, profiles, options) is reused; one that does not is refused,
and replaced only with ``--rebuild``. Exit status: 0 built or up to date, 1 a build failed or an
engine was refused (or the artifacts are missing), 2 bad arguments or no TensorRT/GPU here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from export.contract import GRAPH_NAMES, MIN_SIDE, PRECISION_NAMES, TensorSpec, WholeImageRule
from export.errors import BackendUnavailableError
from reference.errors import TruForError

from .artifacts import engine_path, rebuild_command, write_index
from .cache import check_engine, make_key, sidecar_path, write_sidecar
from .cuda import device_info
from .errors import EngineCacheError
from .loaders import BuildOptions, EngineBytesFromNetwork, NetworkFromOnnxPath, SaveEngine, log

SCORE_OPT = (3024, 4032)  # a 12 MP photo, the common tiled size


@dataclass(frozen=True)
class EngineBuildConfig:
    opt_height: int = 1024
    opt_width: int = 1024
    max_batch: int = 1
    max_tile_batch: int = 8
    opt_tile_batch: int = 4
    max_score_side: int = 8192
    streams: int = 2
    workspace_gb: float | None = None
    timing_cache: Path | None = None  # None: <artifacts>/timing.cache
    rebuild: bool = False
    tf32: bool = False
    version_compatible: bool = False
    graphs: tuple[str, ...] = GRAPH_NAMES

    def __post_init__(self):
        problems = [f"{name} must be >= {MIN_SIDE}, got {getattr(self, name)}"
                    for name in ("opt_height", "opt_width", "max_score_side")
                    if getattr(self, name) < MIN_SIDE]
        problems += [f"{name} must be >= 1, got {getattr(self, name)}"
                     for name in ("max_batch", "max_tile_batch", "opt_tile_batch", "streams") if getattr(self, name) < 1]
        if self.opt_tile_batch > self.max_tile_batch:
            problems.append(f"opt_tile_batch {self.opt_tile_batch} exceeds max_tile_batch {self.max_tile_batch}")
        if self.workspace_gb is not None and self.workspace_gb <= 0:
            problems.append(f"workspace_gb must be > 0, got {self.workspace_gb}")
        unknown = sorted(set(self.graphs) - set(GRAPH_NAMES))
        if unknown:
            problems.append(f"unknown graphs {unknown}; choose from {list(GRAPH_NAMES)}")
        if problems:
            raise ValueError("; ".join(problems))

    def dims(self, graph: str, whole_rule: WholeImageRule) -> dict[str, tuple[int, int, int]]:
        """(min, opt, max) of each named dynamic dimension of ``graph``'s inputs; the whole graph's sides
        reach the manifest's ``whole_rule`` (opt sizes beyond it are lowered to it)."""
        if graph == "whole":
            side = whole_rule.max_side
            if side < MIN_SIDE:
                raise TruForError(f"the manifest's whole-image rule allows sides up to {side}, below the minimum "
                                  f"{MIN_SIDE}: no whole image runs; export with --whole-max-side >= {MIN_SIDE}")
            return {"batch": (1, 1, self.max_batch), "height": (MIN_SIDE, min(self.opt_height, side), side),
                    "width": (MIN_SIDE, min(self.opt_width, side), side)}
        if graph == "tile":
            return {"batch": (1, self.opt_tile_batch, self.max_tile_batch)}
        side = self.max_score_side
        return {"height": (MIN_SIDE, min(SCORE_OPT[0], side), side), "width": (MIN_SIDE, min(SCORE_OPT[1], side), side)}

    def profile_count(self, graph: str) -> int:
        return 1 if graph == "score" else self.streams  # the score graph runs once per tiled image

    def options(self) -> BuildOptions:
        workspace = None if self.workspace_gb is None else int(self.workspace_gb * (1 << 30))
        return BuildOptions([], workspace, self.tf32, self.version_compatible)

    def settings(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def profiles_for(inputs: tuple[TensorSpec, ...], dims: dict[str, tuple[int, int, int]], count: int) -> list[dict]:
    """``count`` identical profiles from the manifest's input specs (ints fixed, names looked up in ``dims``)."""
    profile = {}
    for spec in inputs:
        shapes = []
        for which in range(3):
            shape = []
            for dim in spec.shape:
                if isinstance(dim, int):
                    shape.append(dim)
                elif dim in dims:
                    shape.append(dims[dim][which])
                else:
                    raise TruForError(f"input {spec.name!r} has dynamic dimension {dim!r} that no build setting covers")
            shapes.append(tuple(shape))
        profile[spec.name] = tuple(shapes)
    return [dict(profile) for _ in range(count)]


def build_engines(manifest, config: EngineBuildConfig | None = None, *, device=None, **settings) -> dict[str, Path]:
    """Build (or reuse, when up to date) the engines of ``manifest``; returns graph -> plan path.

    ``settings`` are EngineBuildConfig fields (max_batch=..., rebuild=True, ...).
    """
    from export.manifest import utc_now

    from ._trt import builder_module

    if config is not None and settings:
        raise TypeError(f"pass either config or settings, not both (got {sorted(settings)})")
    config = config or EngineBuildConfig(**settings)
    trt = builder_module()
    device = device or device_info()
    hint = rebuild_command(manifest.directory, manifest.precision)
    timing_cache = config.timing_cache or manifest.directory / "timing.cache"
    log(f"{device.name} (compute {device.compute_capability}), TensorRT {trt.__version__}, precision {manifest.precision}")
    built, entries = {}, {}
    for graph in config.graphs:
        entry = manifest.graph(graph)
        options = config.options()
        options.profiles = profiles_for(entry.spec.inputs, config.dims(graph, manifest.whole_rule),
                                        config.profile_count(graph))
        key = make_key(graph, manifest.precision, entry.sha256, str(trt.__version__), device,
                       [{n: [list(s) for s in v] for n, v in p.items()} for p in options.profiles],
                       options.key_options())
        plan = engine_path(entry.path)
        if plan.exists() or sidecar_path(plan).exists():
            try:
                check_engine(plan, key, hint)
                log(f"{plan.name} is up to date (same GPU, TensorRT, ONNX graph and settings): reused")
                built[graph], entries[graph] = plan, {"file": plan.name, "sidecar": sidecar_path(plan).name}
                continue
            except EngineCacheError as error:
                if not config.rebuild:
                    raise
                log(f"rebuilding {plan.name}: {error}")
        sidecar_path(plan).unlink(missing_ok=True)  # an interrupted build leaves a plan nobody trusts
        builder = EngineBytesFromNetwork(NetworkFromOnnxPath(entry.path), options, timing_cache)
        SaveEngine(builder, plan)()
        write_sidecar(plan, key, {"onnx_file": entry.path.name, "built": utc_now(),
                                  "device": dataclasses.asdict(device), **builder.last_build})
        built[graph], entries[graph] = plan, {"file": plan.name, "sidecar": sidecar_path(plan).name}
    write_index(manifest.directory, manifest.precision, entries, config.settings(), utc_now())
    return built


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder made by python -m export.build")
    parser.add_argument("--precision", required=True, choices=PRECISION_NAMES)
    defaults = EngineBuildConfig()
    for name in ("opt_height", "opt_width", "max_batch", "max_tile_batch",
                 "opt_tile_batch", "max_score_side", "streams"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name),
                            help="(default: %(default)s)")
    parser.add_argument("--workspace-gb", type=float, help="builder workspace limit (default: TensorRT's)")
    parser.add_argument("--timing-cache", type=Path, help="timing cache file (default: ARTIFACTS/timing.cache)")
    parser.add_argument("--rebuild", action="store_true", help="replace engines that are refused (mismatched or corrupt)")
    parser.add_argument("--tf32", action="store_true",
                        help="let float32 layers use TF32 (faster; NOT faithful: Noiseprint++ amplifies TF32 "
                        "rounding into a residual up to 68%% off, see benchmarks.noiseprint_precision)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="plans that later TensorRT of the same major and tensorrt_lean can run (can be slower)")
    parser.add_argument("--graphs", nargs="+", default=list(GRAPH_NAMES), choices=GRAPH_NAMES)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    fields = {f.name for f in dataclasses.fields(EngineBuildConfig)}
    try:
        config = EngineBuildConfig(**{k: (tuple(v) if k == "graphs" else v) for k, v in vars(args).items() if k in fields})
    except ValueError as error:
        parser.error(str(error))
    from export.manifest import load_manifest

    try:
        built = build_engines(load_manifest(args.artifacts, args.precision), config)
    except BackendUnavailableError as error:
        print(f"FAILED: no engine can be built here: {error}", file=sys.stderr)
        return 2
    except TruForError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    print("PASSED: " + ", ".join(f"{graph} -> {path}" for graph, path in built.items()))
    print(f"Next: python -m runtime.scan INPUT --out results --backend tensorrt --artifacts {args.artifacts} "
          f"--precision {args.precision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
