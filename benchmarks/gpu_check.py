"""Every GPU check in one command: parity tests, then latency/throughput of each backend available here.

    python -m benchmarks.gpu_check [--artifacts DIR] [--out report.md] [--checkpoint FILE | --preset NAME]
                                   [--build-engines] [--repeats 20] [--skip-tests]

Runs ``pytest -m gpu tests/engines tests/runtime``, then benchmarks torch CUDA fp32 and fp16
autocast, TensorRT for each precision with engines in --artifacts (built first with
--build-engines), and ONNX Runtime's CUDA provider when installed, at 512x512, 1024x1024 and a
12-megapixel tiled image (3024x4032). Writes a markdown report with device, driver, CUDA,
TensorRT and torch versions and this command. Exit status: 0 all passed, 1 a test or benchmark
failed, 2 no CUDA GPU here (nothing was run).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shlex
import subprocess
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2
SIZES = ((512, 512), (1024, 1024), (3024, 4032))


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


def environment() -> dict:
    import torch

    from engines._trt import tensorrt
    from engines.cuda import cudart, device_info

    info = {"command": "python -m benchmarks.gpu_check " + shlex.join(sys.argv[1:]), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            "tensorrt": str(tensorrt.__version__) if tensorrt.is_importable else "not installed",
            "onnxruntime": _version("onnxruntime") if _version("onnxruntime-gpu") == "not installed" else _version("onnxruntime-gpu"),
            "cuda_python": _version("cuda-python")}
    if cudart.is_importable:
        device = device_info()
        info.update(gpu=device.name, compute_capability=device.compute_capability, driver_cuda=device.driver,
                    runtime_cuda=device.runtime, memory_gb=round(device.total_memory / 2**30, 1))
    else:
        info.update(gpu=torch.cuda.get_device_name(0))
    return info


def run_tests() -> dict:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/engines", "tests/runtime", "-q", "-rs"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {"command": shlex.join(command[1:]), "returncode": done.returncode, "summary": lines[-1] if lines else "",
            "skips": [line for line in lines if line.startswith("SKIPPED")][:20]}


def backends(args) -> list[tuple[dict, object]]:
    """(label, zero-argument factory) for every backend this machine can run."""
    from reference import build_trufor

    found = []

    def torch_backend(precision):
        from runtime.runners.torch_cuda import TorchCudaBackend

        return TorchCudaBackend(build_trufor(args.preset, args.checkpoint), "cuda", args.tile, precision)

    for precision in ("fp32", "fp16"):
        found.append(({"backend": "torch", "precision": precision}, lambda p=precision: torch_backend(p)))
    if args.artifacts is None:
        return found
    from export.manifest import available_precisions

    from runtime.runners.trt_backend import TensorRTBackend, tensorrt_unavailable

    for precision in available_precisions(args.artifacts):
        reason = tensorrt_unavailable(args.artifacts, precision)
        if reason is None:
            found.append(({"backend": "tensorrt", "precision": precision},
                          lambda p=precision: TensorRTBackend(args.artifacts, p, timing=True)))
        else:
            print(f"tensorrt {precision}: not benchmarked: {reason}", file=sys.stderr)
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        from runtime.runners.ort_runner import OrtBackend

        for precision in available_precisions(args.artifacts):
            found.append(({"backend": "onnxruntime-cuda", "precision": precision},
                          lambda p=precision: OrtBackend(args.artifacts, p, ["CUDAExecutionProvider"])))
    return found


def benchmark(args) -> list[dict]:
    from runtime.tiling import TilingConfig

    from .gpu_bench import measure, measure_pipelined, test_image

    rows = []
    for label, factory in backends(args):
        try:
            backend = factory()
        except Exception as error:  # noqa: BLE001 - recorded in the report
            rows.append({**label, "error": f"{type(error).__name__}: {error}"})
            continue
        for height, width in SIZES:
            row = measure(backend, label, height, width, args.repeats, args.warmup, TilingConfig())
            print(json.dumps(row), flush=True)
            rows.append(row)
        if label["backend"] == "tensorrt":
            try:
                backend.activate()
                row = {**label, "size": "1024x1024", "mode": "pipelined",
                       **measure_pipelined(backend.whole, test_image(1024, 1024), 4 * args.repeats)}
            except Exception as error:  # noqa: BLE001
                row = {**label, "size": "1024x1024", "mode": "pipelined", "error": f"{type(error).__name__}: {error}"}
            finally:
                backend.deactivate()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def report(env: dict, tests: dict | None, rows: list[dict]) -> str:
    lines = ["# GPU check", "", "| | |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in env.items()] + [""]
    if tests is not None:
        verdict = "PASSED" if tests["returncode"] == 0 else "FAILED"
        lines += ["## Parity tests", "", f"`{tests['command']}`: **{verdict}**, {tests['summary']}", ""]
        lines += [f"- {skip}" for skip in tests["skips"]] + [""]
    lines += ["## Benchmarks", "", "Milliseconds; stages are medians per image. `stitch`: tiled time outside the graphs "
              "(host blending). `h2d`/`compute`/`d2h`: CUDA events inside the TensorRT calls.", "",
              "| backend | precision | size | mode | p50 | p90 | p99 | images/s | stages | error |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        stages = ", ".join(f"{k} {v}" for k, v in row.get("stages_ms", {}).items())
        if "gpu_busy" in row:
            stages = f"GPU busy {row['gpu_busy']:.0%} of wall time"
        lines.append(f"| {row['backend']} | {row['precision']} | {row.get('size', '')} | {row.get('mode', '')} | "
                     f"{row.get('latency_p50_ms', '')} | {row.get('latency_p90_ms', '')} | {row.get('latency_p99_ms', '')} | "
                     f"{row.get('images_per_s', '')} | {stages} | {row.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, help="folder made by python -m export.build (TensorRT, ONNX Runtime)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="report file (default: %(default)s)")
    parser.add_argument("--checkpoint", type=Path, help="weights for the torch backends (default: random; speed is the same)")
    parser.add_argument("--preset", default="trufor")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--build-engines", action="store_true", help="build TensorRT engines for every precision in --artifacts")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(f"gpu_check: no CUDA GPU here ({reason}); nothing was run. Run it on a machine with an NVIDIA GPU.",
              file=sys.stderr)
        return EXIT_NO_GPU
    if args.build_engines and args.artifacts is not None:
        from engines.build import build_engines
        from export.manifest import available_precisions, load_manifest

        for precision in available_precisions(args.artifacts):
            build_engines(load_manifest(args.artifacts, precision), rebuild=True)
    env = environment()
    tests = None if args.skip_tests else run_tests()
    rows = benchmark(args)
    args.out.write_text(report(env, tests, rows))
    failed = (tests is not None and tests["returncode"] not in (0, 5)) or any("error" in row for row in rows)
    print(f"{'FAILED' if failed else 'PASSED'}: report in {args.out}")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
