"""The device check: parity, latency, a scan's throughput and GPU use, in one command within a time budget.

    python -m benchmarks.gpu_check --out DIR [--weights official|ZIP|PATH | --random-weights --preset NAME] [--artifacts DIR]
                                   [--device cuda] [--budget-s 450]

Sections, in this order, each while the budget lasts (what does not fit is a row saying so):

- ``parity``: the PyTorch path on the device, fp32 and fp16 autocast, against the CPU reference
  (fp32) on the example images (``../shared/trufor/examples``), with the tolerances in ``TOLERANCES``;
- ``latency``: the reference model run eagerly in fp32 on the device against the optimized path
  (``TorchCudaBackend``) at 512x512, 768x1024 and a tiled 12 MP image, with peak GPU memory;
  ``speedup`` compares them at 768x1024 (target >= 5x);
- ``scan``: 64 JPEGs of mixed sizes through the scan's own loop: images/s and the share of the
  wall time the GPU was busy (target >= 90%);
- ``tensorrt``: with TensorRT and ``--artifacts``, engine builds (a failed build is a row), their
  parity and latency;
- ``tests``: ``pytest -m gpu tests/runtime/runners``.

Weights: ``--weights`` (or ``--random-weights``, said in the report), else the deterministic golden
weights that ``shared/trufor/golden/make_weights.py`` builds (the full ``trufor`` model with the same
numbers as the official code's golden outputs), else the project's default model.
Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md``. Exit status: 0 every check passed, 1 a
check failed or errored, 2 no CUDA GPU here for ``--device cuda`` (nothing was run).
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from reference.weights import ResolvedWeights, resolve_weights
from reference.weights_args import WeightsArgs
from runtime.tiling import TilingConfig

from .gpu_report import write_reports

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2
WEIGHTS = WeightsArgs()
SPEEDUP_TARGET = 5.0  # the optimized path against the eager fp32 reference, on the same GPU
BUSY_TARGET = 0.9
# Provisional (p99 |map - ref|, p99 |conf - ref|, max |score - ref|) of the device against the CPU
# reference; the first GPU run's measurements should tighten them to ~3x what it measured.
TOLERANCES = {"fp32": (2e-3, 2e-3, 1e-3), "fp16": (2e-2, 2e-2, 1e-2)}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width)


@dataclass(frozen=True)
class CheckConfig:
    """Everything one check does, built at the CLI edge."""

    out: Path
    device: str = "cuda"
    preset: str | None = None  # --preset: the golden weights are for trufor only
    weights: ResolvedWeights | None = None  # None: the golden weights, else the project's default model
    shared: Path | None = None  # shared/trufor: the example images and the golden weights' recipe
    sizes: tuple[tuple[int, int], ...] = ((512, 512), (768, 1024))
    tiled_size: tuple[int, int] = (3024, 4032)
    speedup_size: tuple[int, int] = (768, 1024)
    scan_images: int = 64
    scan_sizes: tuple[tuple[int, int], ...] = ((768, 1024), (1024, 768), (512, 512), (1080, 1920))
    workers: int = 4
    tile_size: int = 512
    tiling: TilingConfig = TilingConfig()
    repeats: int = 20
    warmup: int = 3
    row_seconds: float = 20.0  # the most one latency row may time
    budget_s: float = 450.0
    artifacts: Path | None = None
    tests: bool = True


class Budget:
    """The check's wall-clock allowance: sections ask before they start a piece of work."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def skip_reason(self, needs_s: float) -> str | None:
        left = self.left()
        return None if left >= needs_s else f"skipped: {left:.0f} s of the budget left, this needs ~{needs_s:.0f} s"


@dataclass
class Check:
    """The running check: its settings, budget, the models and the rows of each section."""

    config: CheckConfig
    budget: Budget
    weights: str = ""
    sections: dict[str, list[dict]] = field(default_factory=dict)
    reference: dict[str, object] = field(default_factory=dict)  # example name -> CPU reference result

    def add(self, section: str, row: dict) -> None:
        self.sections.setdefault(section, []).append(row)
        print(json.dumps({"section": section, **row}, default=str), flush=True)


def no_gpu_reason() -> str | None:
    """Why there is no usable CUDA GPU, from cuda-python when installed, else from torch."""
    from engines.cuda import cudart, gpu_unavailable_reason

    if cudart.is_importable:
        return gpu_unavailable_reason()
    import torch

    return None if torch.cuda.is_available() else f"cuda-python is not installed and torch {torch.__version__} sees no GPU"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(config: CheckConfig, argv: list[str]) -> dict:
    import torch

    from engines._trt import tensorrt

    info = {"command": "python -m benchmarks.gpu_check " + shlex.join(argv), "device": config.device,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "tensorrt": str(tensorrt.__version__) if tensorrt.is_importable else "not installed",
            "onnxruntime": _version("onnxruntime"), "cuda_python": _version("cuda-python")}
    if config.device.startswith("cuda"):
        from engines.cuda import device_info

        device = device_info()
        info.update(gpu=device.name, compute_capability=device.compute_capability, driver_cuda=device.driver,
                    runtime_cuda=device.runtime, memory_gb=round(device.total_memory / 2**30, 1))
    return info


def find_shared(start: Path) -> Path | None:
    """``shared/trufor`` beside the checkout or inside it."""
    for candidate in (start.parent / "shared" / "trufor", start / "shared" / "trufor"):
        if candidate.is_dir():
            return candidate
    return None


def model_weights(config: CheckConfig) -> tuple[ResolvedWeights, str]:
    """The weights to load and how the report names them."""
    weights = config.weights
    if weights is not None and weights.random:
        return weights, f"RANDOM weights of preset {weights.preset} (parity on them is weak evidence)"
    if weights is not None:
        return weights, weights.description
    recipe = config.shared / "golden" / "make_weights.py" if config.shared else None
    if config.preset in (None, "trufor") and recipe is not None and recipe.is_file():
        path = config.out / "golden_weights.pth.tar"
        if not path.is_file():
            subprocess.run([sys.executable, str(recipe), str(path)], check=True, capture_output=True)
        description = f"golden deterministic weights ({recipe})"
        return ResolvedWeights(path, "trufor", description), description
    weights = resolve_weights(None, config.preset)
    return weights, weights.description


def _timed_section(check: Check, section: str, needs_s: float, body: Callable[[], None]) -> None:
    reason = check.budget.skip_reason(needs_s)
    if reason is not None:
        check.add(section, {"skipped": reason})
        return
    try:
        body()
    except Exception as error:  # noqa: BLE001 - a section that fails is a row; the others still run
        check.add(section, {"error": f"{type(error).__name__}: {error}"})


def device_backends(config: CheckConfig, model) -> list[tuple[dict, Callable]]:
    """(label, factory) of the backends under test: the eager reference on the device, and on CUDA
    the optimized path in fp32 and fp16."""
    from runtime.runners.torch_runner import TorchBackend

    found = [({"backend": "reference-eager", "precision": "fp32"},
              lambda: TorchBackend(copy.deepcopy(model), config.device, config.tile_size))]
    if config.device.startswith("cuda"):
        from runtime.runners.torch_cuda import TorchCudaBackend

        for precision in ("fp32", "fp16"):
            found.append(({"backend": "torch-cuda", "precision": precision},
                          lambda p=precision: TorchCudaBackend(copy.deepcopy(model), config.device, config.tile_size, p)))
    return found


def example_images(config: CheckConfig) -> list[Path]:
    folder = config.shared / "examples" if config.shared else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def compare(got, want, precision: str) -> dict:
    import numpy as np

    measured = (float(np.quantile(np.abs(got.map - want.map), 0.99)),
                float(np.quantile(np.abs(got.conf - want.conf), 0.99)), abs(got.score - want.score))
    limits = TOLERANCES.get(precision, TOLERANCES["fp16"])
    return {"map_p99": f"{measured[0]:.2e}", "conf_p99": f"{measured[1]:.2e}", "score_diff": f"{measured[2]:.2e}",
            "passed": all(value <= limit for value, limit in zip(measured, limits))}


def parity_rows(check: Check, backends: list[tuple[dict, Callable]]) -> None:
    """Each backend against the CPU reference on every example image (whole or tiled as the Predictor runs it)."""
    from reference.image import load_rgb
    from runtime.predictor import Predictor

    images = example_images(check.config)
    if not images:
        check.add("parity", {"skipped": f"no example images under {check.config.shared}; pass --shared"})
        return
    for label, factory in backends:
        with Predictor(factory(), check.config.tiling) as predictor:
            for path in images:
                row = {**label, "image": path.name}
                if check.budget.skip_reason(10) is not None:
                    check.add("parity", {**row, "skipped": check.budget.skip_reason(10)})
                    continue
                rgb = load_rgb(path, max_pixels=None)
                row.update(size=f"{rgb.shape[0]}x{rgb.shape[1]}", mode=predictor.mode(*rgb.shape[:2]))
                check.add("parity", {**row, **compare(predictor.predict_rgb(rgb), check.reference[path.name],
                                                      label["precision"])})


def parity_section(check: Check, model, backends: list[tuple[dict, Callable]]) -> None:
    """The CPU fp32 reference's results on the example images (kept for TensorRT's parity too), then
    every backend under test against them."""
    from reference.image import load_rgb
    from runtime.predictor import Predictor
    from runtime.runners.torch_runner import TorchBackend

    with Predictor(TorchBackend(copy.deepcopy(model), "cpu", check.config.tile_size), check.config.tiling) as predictor:
        for path in example_images(check.config):
            check.reference[path.name] = predictor.predict_rgb(load_rgb(path, max_pixels=None))
    parity_rows(check, backends)


def latency_rows(check: Check, backends: list[tuple[dict, Callable]]) -> None:
    from .gpu_bench import measure

    config = check.config
    sizes = (*config.sizes, config.tiled_size)
    for label, factory in backends:
        backend = factory()
        for height, width in sizes:
            reason = check.budget.skip_reason(config.row_seconds + 5)
            row = {**label, "size": f"{height}x{width}"}
            if reason is not None:
                check.add("latency", {**row, "skipped": reason})
                continue
            check.add("latency", measure(backend, label, height, width, config.repeats, config.warmup, config.tiling,
                                         config.row_seconds, config.device))


def speedup_rows(check: Check) -> None:
    """The optimized rows against the eager reference at the speedup size (p50 over p50)."""
    size = "{}x{}".format(*check.config.speedup_size)
    rows = {(r["backend"], r["precision"]): r for r in check.sections.get("latency", [])
            if r.get("size") == size and "latency_p50_ms" in r}
    baseline = rows.get(("reference-eager", "fp32"))
    for (backend, precision), row in rows.items():
        if baseline is None or backend == "reference-eager":
            continue
        speedup = baseline["latency_p50_ms"] / row["latency_p50_ms"]
        check.add("speedup", {"backend": backend, "precision": precision, "size": size, "speedup": round(speedup, 2),
                              "target": SPEEDUP_TARGET, "met": speedup >= SPEEDUP_TARGET})


def scan_rows(check: Check, backends: list[tuple[dict, Callable]]) -> None:
    """The fastest backend under test (the last one: fp16 on CUDA) through the scan's loop."""
    from .gpu_bench import jpeg_bytes, measure_scan, test_image

    config = check.config
    folder = config.out / "scan_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(config.scan_images):
        height, width = config.scan_sizes[index % len(config.scan_sizes)]
        path = folder / f"{index:03d}_{height}x{width}.jpg"
        if not path.is_file():
            path.write_bytes(jpeg_bytes(test_image(height, width, seed=index)))
        paths.append(path)
    label, factory = backends[-1]
    row = measure_scan(factory(), paths, config.out / "scan_out", config.workers, config.tiling)
    busy = row.get("gpu_busy")
    check.add("scan", {**label, **row, "busy_target": BUSY_TARGET, "met": None if busy is None else busy >= BUSY_TARGET})


def tensorrt_rows(check: Check) -> None:
    """Engine builds (each failure a row), then parity and latency of every precision that built."""
    from engines._trt import tensorrt
    from export.manifest import available_precisions, load_manifest

    from .gpu_bench import measure

    config = check.config
    if config.artifacts is None or not tensorrt.is_importable:
        why = "no --artifacts given" if config.artifacts is None else f"TensorRT is not importable ({tensorrt.import_error})"
        check.add("tensorrt", {"skipped": why})
        return
    from engines.build import build_engines
    from runtime.runners.trt_backend import TensorRTBackend

    for precision in available_precisions(config.artifacts):
        label = {"backend": "tensorrt", "precision": precision}
        reason = check.budget.skip_reason(120)
        if reason is not None:
            check.add("tensorrt", {**label, "step": "build", "skipped": reason})
            continue
        start = time.perf_counter()
        try:
            build_engines(load_manifest(config.artifacts, precision), rebuild=True)
        except Exception as error:  # noqa: BLE001 - recorded; the other precisions still build
            check.add("tensorrt", {**label, "step": "build", "error": f"{type(error).__name__}: {error}"})
            continue
        check.add("tensorrt", {**label, "step": "build", "seconds": round(time.perf_counter() - start, 1)})
        parity_rows(check, [({**label, "step": "parity"}, lambda p=precision: TensorRTBackend(config.artifacts, p))])
        backend = TensorRTBackend(config.artifacts, precision, timing=True)
        for height, width in (*config.sizes, config.tiled_size):
            check.add("tensorrt", measure(backend, {**label, "step": "latency"}, height, width, config.repeats,
                                          config.warmup, config.tiling, config.row_seconds, config.device))


def test_rows(check: Check) -> None:
    # the folder that holds the gpu-marked tests: collecting the whole suite costs time and imports it
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/runtime/runners", "-q", "-rs", "-p", "no:cacheprovider"]
    timeout = max(check.budget.left() - 5, 10)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        check.add("tests", {"command": shlex.join(command[1:]), "error": f"timed out after {timeout:.0f} s"})
        return
    lines = (done.stdout + done.stderr).strip().splitlines()
    row = {"command": shlex.join(command[1:]), "returncode": done.returncode, "summary": lines[-1] if lines else ""}
    if done.returncode not in (0, 5):  # 5: no GPU test collected
        row["error"] = "gpu tests failed: " + "; ".join(line for line in lines if line.startswith("FAILED"))[:500]
    check.add("tests", row)


def run_check(config: CheckConfig, argv: list[str]) -> dict:
    """Every section within the budget; returns the report's data (also written to ``config.out``)."""
    import torch

    config.out.mkdir(parents=True, exist_ok=True)
    check = Check(config, Budget(config.budget_s))
    torch.backends.cudnn.benchmark = False  # recorded in the report: set here, not at import
    weights, check.weights = model_weights(config)
    model = weights.build()
    backends = device_backends(config, model)
    _timed_section(check, "parity", 30, lambda: parity_section(check, model, backends))
    _timed_section(check, "latency", 30, lambda: latency_rows(check, backends))
    speedup_rows(check)
    _timed_section(check, "scan", 30, lambda: scan_rows(check, backends))
    _timed_section(check, "tensorrt", 60, lambda: tensorrt_rows(check))
    if config.tests:
        _timed_section(check, "tests", 30, lambda: test_rows(check))
    failed = [row for rows in check.sections.values() for row in rows if "error" in row or row.get("passed") is False]
    data = {"environment": environment(config, argv), "config": {k: str(v) if isinstance(v, Path) else v
                                                                 for k, v in asdict(config).items()},
            "weights": check.weights, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "sections": check.sections, "seconds": round(config.budget_s - check.budget.left(), 1),
            "verdict": "FAILED" if failed else "PASSED"}
    write_reports(config.out, data)
    return data


def parse_args(argv: list[str]) -> CheckConfig:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json, gpu_check.md and scratch files")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to try the check itself")
    WEIGHTS.add_to(parser, note=lambda flag: " (default here: the golden deterministic weights when --shared has "
                   "their recipe, else the project's default model)" if flag == "--weights" else "")
    parser.add_argument("--shared", type=Path, help="shared/trufor folder (default: beside or inside the checkout)")
    parser.add_argument("--artifacts", type=Path, help="exported graphs: TensorRT engines are built and checked")
    parser.add_argument("--sizes", default="512x512,768x1024", help="whole-image latency sizes (default: %(default)s)")
    parser.add_argument("--tiled-size", default="3024x4032", help="tiled latency size (default: %(default)s)")
    parser.add_argument("--speedup-size", default="768x1024", help="(default: %(default)s)")
    parser.add_argument("--scan-images", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--scan-sizes", default="768x1024,1024x768,512x512,1080x1920", help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side of the torch backends (default: %(default)s)")
    parser.add_argument("--tile-threshold-pixels", type=int,
                        help="larger images run tiled (default: the contract's whole-image rule)")
    parser.add_argument("--workers", type=int, default=4, help="the scan's decoding threads (default: %(default)s)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget (default: %(default)s)")
    parser.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    args = parser.parse_args(argv)
    weights = WEIGHTS.parse_or_exit(args, parser, defer_default=True)
    return CheckConfig(
        out=args.out, device=args.device, preset=args.preset, weights=weights,
        shared=args.shared or find_shared(Path(__file__).resolve().parent.parent),
        sizes=tuple(_size(s) for s in args.sizes.split(",")), tiled_size=_size(args.tiled_size),
        speedup_size=_size(args.speedup_size), scan_images=args.scan_images,
        scan_sizes=tuple(_size(s) for s in args.scan_sizes.split(",")), repeats=args.repeats, warmup=args.warmup,
        workers=args.workers, tile_size=args.tile_size, tiling=TilingConfig(args.tile_threshold_pixels),
        budget_s=args.budget_s, artifacts=args.artifacts, tests=not args.no_tests,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = parse_args(argv)
    if config.device.startswith("cuda"):
        reason = no_gpu_reason()
        if reason:
            print(f"gpu_check: no CUDA GPU here ({reason}); nothing was run. Run it on a machine with an NVIDIA GPU, "
                  "or pass --device cpu to try the check itself.", file=sys.stderr)
            return EXIT_NO_GPU
    data = run_check(config, argv)
    print(f"{data['verdict']}: {config.out / 'gpu_check.md'} ({data['seconds']} s)")
    return EXIT_OK if data["verdict"] == "PASSED" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
