"""Whole-process and throughput measurements of ``python -m runtime.scan``, for ``benchmarks.cpu_backends``.

- ``scan:BACKEND:PRECISION`` rows: one image of each size, scanned by ``python -m runtime.scan`` in a
  process of its own, as a user runs it: start-up, loading the model, decoding, the model, writing the
  maps. Wall time and peak RSS (``ru_maxrss`` of that process) per fresh process; CPU time too.
- ``throughput:BACKEND:PRECISION`` rows: the same mixed-size images (JPEG files written once), through
  the model alone (decoded beforehand, one ``Predictor.predict_batch`` in one process, so same-size
  images share calls of ``--batch-size`` as a scan's do at best; loading excluded), and through ``python -m runtime.scan --save-maps`` (its own count of images/s, model
  loading excluded, decoding and writing included). The scan's ratio to the forward-only rate says
  how well decoding, writing and the next image overlap with the model (the issue's target: >= 0.9).

The images are random pixels: the model's cost does not depend on them, and decoding random JPEGs
costs at least as much as decoding photos.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reference.weights_args import WeightsArgs

# Sizes (HxW) the throughput images cycle through: photos and screenshots around 0.3 to 1.2 megapixels,
# every one run whole by default, several of each so the scan can batch same-size images.
MIXED_SIZES = ((480, 640), (768, 1024), (600, 800), (1024, 768), (540, 960), (512, 512), (720, 1280), (640, 480))
RATE = re.compile(r"This run: .* in ([0-9.]+) s \(([0-9.]+) images/s")  # runtime.scan's summary line


def write_images(folder: Path, count: int, sizes=MIXED_SIZES) -> list[Path]:
    """``count`` random JPEGs (quality 90) cycling through ``sizes``, named so their order is the cycle's."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        path = folder / f"{index:03d}_{height}x{width}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def reads_weights(backend: str) -> bool:
    """Whether ``backend`` takes its model from the weights flags (torch), not from exported artifacts."""
    from runtime.backends import BACKENDS

    return "--weights" in BACKENDS[backend].flags


def scan_command(inputs: list[str], out: Path, backend: str, precision: str, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "runtime.scan", *inputs, "--out", str(out), "--backend", backend,
               "--precision", precision, "--threads", str(args.threads), "--save-maps"]
    return command + (WeightsArgs.argv(args) if reads_weights(backend) else ["--artifacts", str(args.artifacts)])


def run_process(command: list[str]) -> dict:
    """Run ``command``: its wall time, CPU time (user + system, its children's included) and peak RSS
    (``ru_maxrss`` from ``wait4``: this process only, so a small parent skews nothing), and its output."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        stdout.seek(0)
        stderr.seek(0)
        return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 2**20,
                "code": child.returncode, "stdout": stdout.read(), "stderr": stderr.read()}


def whole_process_row(run: str, size: str, args: argparse.Namespace, folder: Path) -> dict:
    """``scan:BACKEND:PRECISION`` at ``size``: a fresh ``python -m runtime.scan`` of one image per repeat."""
    _, backend, precision = run.split(":")
    height, width = (int(v) for v in size.lower().split("x"))
    image = write_images(folder / f"one-{size}", 1, [(height, width)])[0]
    walls, cpus, peaks = [], [], []
    for repeat in range(args.repeats):
        done = run_process(scan_command([str(image)], folder / f"scan-{size}-{repeat}", backend, precision, args))
        if done["code"] != 0:
            return {"run": run, "size": size, "error": _last_line(done)}
        walls.append(done["wall_s"])
        cpus.append(done["cpu_s"] / args.threads)
        peaks.append(done["peak_rss_gb"])
    return {"run": run, "size": size, "mode": "whole process", "threads": args.threads, "repeats": args.repeats,
            "median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "cpu_per_thread_s": round(statistics.median(cpus), 3), "peak_rss_gb": round(max(peaks), 2),
            "load_average": round(load_average(), 2)}


def forward_only(backend: str, precision: str, folder: str, args: argparse.Namespace, batched: bool = True) -> dict:
    """The model alone over the decoded images of ``folder`` (the worker's side): batched by size, or
    one image per call (what a scan does when neighbouring files differ in size)."""
    from reference.image import load_rgb
    from runtime.backends import BackendRequest, create_backend
    from runtime.predictor import Predictor

    images = [load_rgb(path) for path in sorted(Path(folder).glob("*.jpg"))]
    weights = WeightsArgs().parse(args) if reads_weights(backend) else None
    request = BackendRequest(backend=backend, precision=precision, artifacts=Path(args.artifacts),
                             threads=args.threads, weights=weights)
    with Predictor(create_backend(request)) as predictor:
        start, cpu = time.perf_counter(), time.process_time()
        if batched:
            predictor.predict_batch(images)  # same-size images share calls, as the scan's batches do at best
        else:
            for rgb in images:
                predictor.predict_rgb(rgb)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"images": len(images), "seconds": seconds, "cpu_s": cpu}


def throughput_rows(run: str, args: argparse.Namespace, folder: Path, forwarded: list[str]) -> list[dict]:
    """``throughput:BACKEND:PRECISION``: forward-only and scan rates on the same images, alternated per repeat."""
    _, backend, precision = run.split(":")
    images = folder / "mixed"
    if not images.is_dir():
        write_images(images, args.mixed_images)
    forward, single, scan = [], [], []
    for repeat in range(args.repeats):
        for mode, runs in (("batched", forward), ("single", single)):
            done = run_process([*forwarded, "--forward-only", f"{backend}:{precision}", str(images), mode])
            if done["code"] != 0:
                return [{"run": run, "size": f"{args.mixed_images} mixed", "error": _last_line(done)}]
            runs.append(json.loads(done["stdout"].strip().splitlines()[-1]))
        done = run_process(scan_command([str(images)], folder / f"mixed-scan-{repeat}", backend, precision, args))
        rate = RATE.search(done["stdout"])
        if done["code"] != 0 or rate is None or float(rate.group(2)) <= 0:
            return [{"run": run, "size": f"{args.mixed_images} mixed", "error": _last_line(done)}]
        # the scan prints its rate to 3 decimals and its seconds to 1: the rate is the finer of the two
        scan.append({"rate": float(rate.group(2)), "wall_s": done["wall_s"], "cpu_s": done["cpu_s"],
                     "peak_rss_gb": done["peak_rss_gb"]})
    def rate_of(runs: list[dict]) -> float:
        return statistics.median(f["images"] / f["seconds"] for f in runs)

    forward_rate, scan_rate = rate_of(forward), statistics.median(s["rate"] for s in scan)
    common = {"run": run, "size": f"{args.mixed_images} mixed", "threads": args.threads, "repeats": args.repeats,
              "load_average": round(load_average(), 2)}

    def forward_row(mode: str, runs: list[dict], **extra) -> dict:
        return {**common, "mode": mode, "images_per_s": round(rate_of(runs), 4),
                "median_s": round(statistics.median(f["seconds"] for f in runs), 2),
                "cpu_per_thread_s": round(statistics.median(f["cpu_s"] for f in runs) / args.threads, 2), **extra}

    return [
        forward_row("forward only", forward),
        forward_row("forward only, one image per call", single, ratio_to_forward=round(rate_of(single) / forward_rate, 3)),
        {**common, "mode": "runtime.scan", "images_per_s": round(scan_rate, 4),
         "median_s": round(args.mixed_images / scan_rate, 2),
         "process_wall_s": round(statistics.median(s["wall_s"] for s in scan), 2),
         "cpu_per_thread_s": round(statistics.median(s["cpu_s"] for s in scan) / args.threads, 2),
         "peak_rss_gb": round(max(s["peak_rss_gb"] for s in scan), 2),
         "ratio_to_forward": round(scan_rate / forward_rate, 3),
         # under load, CPU time is the steadier measure: forward-only CPU over the scan's (decoding and
         # writing included), the ratio an idle machine whose cores the model fills would reach
         "cpu_ratio_to_forward": round(statistics.median(f["cpu_s"] for f in forward)
                                       / statistics.median(s["cpu_s"] for s in scan), 3)},
    ]


def _last_line(done: dict) -> str:
    return ((done["stderr"].strip() or done["stdout"].strip()).splitlines() or ["?"])[-1][:200]


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")
