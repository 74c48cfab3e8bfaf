"""Latency and peak memory of the reference PyTorch forward on CPU, one fresh process per size.

    python -m benchmarks.reference_cpu [--sizes 256x384 768x1024 1536x2048] [--threads 2] [--preset trufor] [--plain]

By default the model is what ``ReferencePredictor`` runs (``optimize_for_inference``: BatchNorm
folded, channels-last); ``--plain`` times the eval-mode model as built. Each size runs in its own process, so its peak RSS is its own. Prints one JSON row per size and,
with --markdown, a table for BENCHMARKS.md. Weights are random: cost does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def measure(size: str, threads: int, preset: str, repeats: int, fused: bool, plain: bool) -> dict:
    from reference import build_trufor
    from reference.optimize import optimize_for_inference

    torch.set_num_threads(threads)
    height, width = (int(v) for v in size.split("x"))
    model = build_trufor(preset, fused_attention=fused)
    if not plain:
        model = optimize_for_inference(model)
    x = torch.rand(1, 3, height, width)
    times = []
    with torch.inference_mode():
        model(x)  # warm-up: first-call allocations and kernel selection
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return {
        "preset": preset,
        "size": size,
        "threads": threads,
        "attention": "fused" if fused else "explicit",
        "model": "plain" if plain else "optimized",
        "repeats": repeats,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["256x384", "768x1024", "1536x2048"], help="HxW")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="trufor")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--explicit-attention", action="store_true", help="the official matmul-softmax attention")
    parser.add_argument("--plain", action="store_true", help="no inference optimizations (BN folding, channels-last)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.threads, args.preset, args.repeats, not args.explicit_attention, args.plain)))
        return
    rows = []
    for size in args.sizes:
        command = [sys.executable, "-m", "benchmarks.reference_cpu", "--worker", size, "--threads", str(args.threads),
                   "--preset", args.preset, "--repeats", str(args.repeats)]
        command += ["--explicit-attention"] * args.explicit_attention + ["--plain"] * args.plain
        done = subprocess.run(command, capture_output=True, text=True)
        row = json.loads(done.stdout) if done.returncode == 0 else {"size": size, "error": done.stderr.strip().splitlines()[-1:]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.markdown:
        print(f"\ntorch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads\n")
        print("| size (HxW) | model | attention | median s | min s | peak RSS GB |\n|---|---|---|---|---|---|")
        for row in rows:
            if "error" in row:
                print(f"| {row['size']} | error: {row['error']} | | | | |")
            else:
                print(f"| {row['size']} | {row['model']} | {row['attention']} | {row['median_s']} | {row['min_s']} | {row['peak_rss_gb']} |")


if __name__ == "__main__":
    main()
