"""Latency, throughput and per-stage time of one backend on one image size (used by gpu_check).

timm-style: warm up, then time iterations; every clock read follows a device sync (the predictor
returns numpy, which syncs). A configuration that fails records its error in its row instead of
ending the sweep. Stages: ``decode`` (JPEG bytes -> RGB, host), one wall time per graph call
(``whole``, ``tile``, ``score``), ``stitch`` (tiled wall time not spent in a graph: host blending),
and for TensorRT the CUDA-event times inside each call (``h2d``, ``compute``, ``d2h``).
"""

from __future__ import annotations

import io
import time
from collections import defaultdict

import numpy as np


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    p50, p90, p99 = np.percentile(np.asarray(values, np.float64), [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2)}


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: compresses like a photo, so JPEG decode time is realistic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    base = 128 + 80 * np.sin(5 * xx[..., None] + 3 * yy[..., None] + rng.uniform(0, 6, 3))
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


class GraphTimer:
    """Wraps each runner's ``infer`` to add its wall milliseconds to ``totals[graph]``."""

    def __init__(self, backend):
        self.totals: dict[str, float] = defaultdict(float)
        self._originals = {}
        for graph, runner in backend.runners.items():
            self._originals[graph] = runner.infer
            runner.infer = self._timed(graph, runner.infer)

    def _timed(self, graph, infer):
        def run(feed):
            start = time.perf_counter()
            try:
                return infer(feed)
            finally:
                self.totals[graph] += (time.perf_counter() - start) * 1e3
        return run

    def take(self) -> dict[str, float]:
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals


def _cuda_stage_log(backend) -> list[dict[str, float]]:
    logs = []
    for runner in backend.runners.values():
        log = getattr(runner, "stage_log", None)
        if log:
            logs.extend(log)
            log.clear()
    return logs


def measure(backend, label: dict, height: int, width: int, repeats: int, warmup: int, tiling) -> dict:
    """One row: end-to-end latency percentiles, images/s and median per-stage milliseconds."""
    from reference.image import load_rgb
    from runtime.predictor import Predictor

    row = {**label, "size": f"{height}x{width}"}
    try:
        rgb = test_image(height, width)
        encoded = jpeg_bytes(rgb)
        with Predictor(backend, tiling) as predictor:
            row["mode"] = predictor.mode(height, width)
            timer = GraphTimer(backend)
            for _ in range(warmup):
                predictor.predict_rgb(rgb)
            timer.take()  # drop the warm-up's times
            _cuda_stage_log(backend)
            latencies, stages = [], defaultdict(list)
            for _ in range(repeats):
                start = time.perf_counter()
                load_rgb(encoded, max_pixels=None)
                stages["decode"].append((time.perf_counter() - start) * 1e3)
                start = time.perf_counter()
                predictor.predict_rgb(rgb)
                latency = (time.perf_counter() - start) * 1e3
                latencies.append(latency)
                graphs = timer.take()
                for graph, ms in graphs.items():
                    stages[graph].append(ms)
                if row["mode"] == "tiled":
                    stages["stitch"].append(latency - sum(graphs.values()))
                events = _cuda_stage_log(backend)
                for name in ("h2d", "compute", "d2h") if events else ():
                    stages[name].append(sum(entry[name] for entry in events))
        row.update({f"latency_{k}_ms": v for k, v in percentiles(latencies).items()})
        row["images_per_s"] = round(1e3 / float(np.mean(latencies)), 2)
        row["stages_ms"] = {name: percentiles(values)["p50"] for name, values in stages.items()}
    except Exception as error:  # noqa: BLE001 - a failing configuration is a row, not the end of the sweep
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def measure_pipelined(runner, image: np.ndarray, count: int) -> dict:
    """Back-to-back submissions on a TrtRunner: images/s and the share of wall time in compute.

    Image k+1 is submitted before image k is awaited, as a scan with decoded-ahead images runs;
    ``gpu_busy`` is the summed compute time (CUDA events) over the wall time.
    """
    feed = {"image": image[np.newaxis]}
    runner.submit(feed).wait()  # warm-up
    start = time.perf_counter()
    previous, compute = None, 0.0
    for _ in range(count):
        pending = runner.submit(feed)
        if previous is not None:
            previous.wait()
            compute += previous.stage_ms.get("compute", 0.0)
        previous = pending
    previous.wait()
    compute += previous.stage_ms.get("compute", 0.0)
    wall = (time.perf_counter() - start) * 1e3
    return {"images_per_s": round(count * 1e3 / wall, 2), "gpu_busy": round(min(compute / wall, 1.0), 3)}
