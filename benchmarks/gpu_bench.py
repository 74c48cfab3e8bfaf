"""Latency, throughput, GPU-busy fraction and peak memory of one backend (used by gpu_check).

timm-style: warm up, then time iterations; every clock read follows a device sync (the predictor
returns numpy, which syncs). A configuration that fails records its error in its row instead of
ending the sweep. Stages: ``decode`` (JPEG bytes -> RGB, host), the host time inside each graph
call (``whole``, ``tile``, ``score``; for tiles, from submission until their logits are back, the
time the host waits on them), and for TensorRT the CUDA-event times inside each call (``h2d``,
``compute``, ``d2h``). The rest of a tiled image's time is ``stitch`` when the tiles are blended on
the host, and ``device_queue`` when they are blended on the device (``Capabilities.device_tensors``):
there the graph calls only queue work, and the host waits for all of it when the maps come back.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

WARMUP_IMAGES = 8  # scanned once before the timed runs


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
    """Adds the host milliseconds spent in each runner's calls to ``totals[graph]``.

    ``infer`` is timed as a whole. ``submit_batch`` and ``submit_tensors`` (how the Predictor runs
    tiles) are timed in their two halves, the submission and the wait for the outputs, so tiles
    computed on a GPU while the host blends count only while the host waits for them, and never as
    stitching.
    """

    def __init__(self, backend):
        self.totals: dict[str, float] = defaultdict(float)
        self._inside: set[str] = set()  # graphs in a timed call: a call within it is not counted twice
        for graph, runner in backend.runners.items():
            for method in ("infer", "submit_batch", "submit_tensors"):
                setattr(runner, method, self._timed(graph, getattr(runner, method), method != "infer"))

    def _time(self, graph: str, call: Callable, *args):
        if graph in self._inside:
            return call(*args)
        self._inside.add(graph)
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.totals[graph] += (time.perf_counter() - start) * 1e3
            self._inside.discard(graph)

    def _timed(self, graph: str, call: Callable, returns_wait: bool) -> Callable:
        def run(feed):
            result = self._time(graph, call, feed)
            return (lambda: self._time(graph, result)) if returns_wait else result

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


class PeakMemory:
    """Peak bytes the torch allocator held on ``device`` between ``reset`` and ``read`` (None off CUDA).

    TensorRT's and cuda-python's own allocations are outside torch's allocator; ``device_used``
    (free-memory difference from cudaMemGetInfo through torch) covers them.
    """

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.on_cuda = self.device.type == "cuda"

    def reset(self) -> None:
        if self.on_cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float | None]:
        if not self.on_cuda:
            return {"peak_torch_gb": None, "device_used_gb": None}
        free, total = self.torch.cuda.mem_get_info(self.device)
        return {"peak_torch_gb": round(self.torch.cuda.max_memory_allocated(self.device) / 2**30, 3),
                "device_used_gb": round((total - free) / 2**30, 3)}


def measure(backend, label: dict, height: int, width: int, repeats: int, warmup: int, tiling,
            max_seconds: float | None = None, device: str = "cpu") -> dict:
    """One row: end-to-end latency percentiles, images/s, median per-stage milliseconds and peak memory.

    ``max_seconds`` stops the timed repeats early (at least one runs), so a slow configuration
    cannot eat the whole time budget of a check; ``device`` is where peak memory is read.
    """
    from reference.image import load_rgb
    from runtime.predictor import Predictor

    row = {**label, "size": f"{height}x{width}"}
    try:
        rgb = test_image(height, width)
        encoded = jpeg_bytes(rgb)
        memory = PeakMemory(device)
        with Predictor(backend, tiling) as predictor:
            row["mode"] = predictor.mode(height, width)
            timer = GraphTimer(backend)
            memory.reset()
            for _ in range(warmup):
                predictor.predict_rgb(rgb)
            timer.take()  # drop the warm-up's times
            _cuda_stage_log(backend)
            latencies, stages = [], defaultdict(list)
            started = time.perf_counter()
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
                    rest = "device_queue" if backend.capabilities.device_tensors else "stitch"
                    stages[rest].append(latency - sum(graphs.values()))
                events = _cuda_stage_log(backend)
                for name in ("h2d", "compute", "d2h") if events else ():
                    stages[name].append(sum(entry[name] for entry in events))
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    break
            row.update(memory.read())
        row["repeats"] = len(latencies)
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


def busy_fraction(intervals: list[tuple[float, float]], wall: float) -> float:
    """The share of ``wall`` covered by the union of ``intervals`` (same unit): overlapping kernels on
    two streams count once."""
    covered, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        covered += stop - max(start, end)
        end = stop
    return min(covered / wall, 1.0) if wall > 0 else 0.0


def device_busy(run: Callable[[], None]) -> tuple[float, float | None]:
    """Run ``run`` under the PyTorch profiler (CUDA activity only); (wall seconds, share of the wall
    time some CUDA kernel, copy or memset was executing). Off CUDA the share is None."""
    import torch

    if not torch.cuda.is_available():
        start = time.perf_counter()
        run()
        return time.perf_counter() - start, None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        torch.cuda.synchronize()  # the kernels recorded are run's own
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    device = torch.autograd.DeviceType.CUDA
    intervals = [(event.start_ns(), event.end_ns()) for event in profiler.profiler.kineto_results.events()
                 if event.device_type() == device]
    if not intervals:
        raise RuntimeError("the profiler recorded no CUDA activity (is CUPTI available?)")
    return wall, busy_fraction(intervals, wall * 1e9)


def measure_scan(backend, paths: list, out, workers: int, tiling) -> dict:
    """The scan's own loop (decoding threads, the Predictor, rows and no map files) over ``paths``, with
    the model loaded and warmed up on a few of them: plain for images/s, then under the profiler for
    the GPU-busy share."""
    from tqdm import tqdm

    from reference.inputs import collect_inputs
    from runtime.args import ImageOptions
    from runtime.decision import DecisionRule
    from runtime.decode import DecodePool
    from runtime.predictor import Predictor
    from runtime.records import OK, ResultsWriter, read_latest
    from runtime.scan import Scan
    from runtime.scanner import OutputOptions

    inputs = collect_inputs([str(p) for p in paths])
    row: dict = {"images": len(inputs)}
    with Predictor(backend, tiling) as predictor:
        for run_name in ("warmup", "plain", "profiled"):
            folder = out / run_name
            folder.mkdir(parents=True, exist_ok=True)
            options = OutputOptions(folder, False, False, DecisionRule(), False, workers)
            results = folder / "results.jsonl"

            def scan() -> None:
                todo = inputs[:WARMUP_IMAGES] if run_name == "warmup" else inputs
                with ResultsWriter(results) as writer, tqdm(total=len(todo), disable=True) as progress:
                    pool = DecodePool(todo, workers, ImageOptions(max_pixels=None))
                    try:
                        Scan(predictor, options, writer, progress).run(pool)
                    finally:
                        pool.close()

            if run_name == "warmup":  # first calls at each size: allocator growth, kernel selection
                scan()
                continue
            if run_name == "plain":
                start = time.perf_counter()
                scan()
                seconds = time.perf_counter() - start
                row.update(seconds=round(seconds, 3), images_per_s=round(len(inputs) / seconds, 2))
            else:
                try:
                    wall, busy = device_busy(scan)
                except Exception as error:  # noqa: BLE001 - the throughput above still stands
                    row["error"] = f"GPU-busy share not measured: {type(error).__name__}: {error}"
                    continue
                row.update(profiled_seconds=round(wall, 3), gpu_busy=None if busy is None else round(busy, 3))
            rows = read_latest(results).values()
            row[f"{run_name}_ok"] = sum(r["status"] == OK for r in rows)
            row["backends_ran"] = sorted({r["backend"] for r in rows})
    return row
