"""The Ray path of ``runtime.scan`` against the local path, on one generated folder: overhead and scaling.

    python -m benchmarks.ray_scan [--images 12] [--size 640x480] [--threads 2] [--json out.json] \\
        -- --artifacts ARTIFACTS_DIR          # or: -- --backend torch --preset tiny

Everything after ``--`` is passed to every scan (the model and backend flags). Runs, in order: the
local scan with ``--threads`` threads, then Ray scans of 1 actor x 1 thread, 1 actor x ``--threads``
threads and ``--threads`` actors x 1 thread. Each Ray run gets its own local cluster that declares
``actors x threads + 1`` logical CPUs (the scan keeps one for the reading tasks), so on a machine
with fewer cores the last runs are oversubscribed on purpose: they show the cost of more actors,
not more hardware. Per run: cluster start (not in the scan's wall time), the scan's wall time and
images/s, the model time per image (a row's ``seconds``: decoding plus its share of its batch's
model call), the compute time (those summed, divided by the actors working in parallel) and the
overhead (wall minus compute: model loading, actor start-up, scheduling). Prints one JSON row per
run and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from runtime.ray_scan import LOOPBACK_ONLY
from runtime.scan import main as scan_main


def make_images(folder: Path, count: int, width: int, height: int) -> None:
    """JPEGs of random 8x8 blocks plus noise: texture for the model, and no two alike."""
    rng = np.random.default_rng(0)
    for index in range(count):
        blocks = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
        rgb = np.clip(blocks[:height, :width] + rng.integers(-20, 21, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{index:04d}.jpg", quality=90)


def run(name: str, folder: Path, out: Path, scan_args: list[str], actors: int | None, threads: int) -> dict:
    ray = None
    cluster_seconds = 0.0
    if actors is not None:
        os.environ.setdefault(LOOPBACK_ONLY, "0")  # before ray is imported, as runtime.ray_scan.connect does
        import ray

        start = time.perf_counter()
        ray.init(address="local", num_cpus=actors * threads + 1, include_dashboard=False, logging_level="warning")
        cluster_seconds = time.perf_counter() - start
        scan_args = [*scan_args, "--ray", "--ray-actors", str(actors)]
    argv = [str(folder), "--out", str(out), "--threads", str(threads), *scan_args]
    try:
        start = time.perf_counter()
        status = scan_main(argv)
        wall = time.perf_counter() - start
    finally:
        if ray is not None:
            ray.shutdown()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # A row's seconds are its decoding plus its share of its batch's model call; actors work in parallel.
    compute = sum(row["seconds"] for row in rows) / (actors or 1)
    return {
        "run": name,
        "actors": actors or 0,
        "threads": threads,
        "exit_status": status,
        "rows": len(rows),
        "cluster_start_s": round(cluster_seconds, 2),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(rows) / wall, 3),
        "seconds_per_image": round(sum(row["seconds"] for row in rows) / len(rows), 3),
        "compute_s": round(compute, 2),
        "overhead_s": round(wall - compute, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--threads", type=int, default=2, help="threads of the local scan; the Ray runs' largest count")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("scan_args", nargs=argparse.REMAINDER, help="-- then runtime.scan model flags")
    args = parser.parse_args(argv)
    scan_args = args.scan_args[1:] if args.scan_args[:1] == ["--"] else args.scan_args
    width, height = map(int, args.size.split("x"))
    runs = [("local", None, args.threads), ("ray", 1, 1), ("ray", 1, args.threads), ("ray", args.threads, 1)]
    results = []
    with tempfile.TemporaryDirectory(prefix="ray_scan_bench_") as temp:
        folder = Path(temp) / "images"
        folder.mkdir()
        make_images(folder, args.images, width, height)
        for index, (name, actors, threads) in enumerate(runs):
            row = run(name, folder, Path(temp) / f"out{index}", scan_args, actors, threads)
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{args.images} JPEGs of {width}x{height}, model flags: {' '.join(scan_args)}\n")
    print("| run | actors x threads | cluster start s | scan wall s | images/s | s/image (model) | compute s | overhead s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        shape = f"{r['actors']} x {r['threads']}" if r["actors"] else f"- x {r['threads']}"
        print(
            f"| {r['run']} | {shape} | {r['cluster_start_s']} | {r['wall_s']} | {r['images_per_s']} | "
            f"{r['seconds_per_image']} | {r['compute_s']} | {r['overhead_s']} |"
        )
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
