"""CPU backends side by side: latency and peak memory per image, one fresh process per run.

    python -m benchmarks.cpu_backends --artifacts A --random-weights --preset trufor \
        [--runs plain torch onnxruntime:fp32 onnxruntime:int8 onnxruntime:fp16 scan:onnxruntime:fp32 \
                throughput:onnxruntime:fp32] \
        [--sizes 256x384 768x1024 3000x4000] [--threads 2] [--repeats 3] [--mixed-images 32] [--markdown]

Each (backend, size) runs in its own process, so its peak RSS (``ru_maxrss``) is the whole
process's: what a user's scan of such an image costs. Timed is ``Predictor.predict_rgb`` on a
random uint8 image (preprocessing, the model, and for images above the tiling threshold the
tiles, the stitching and the score graph). Whole images get one untimed warm-up at the same size;
tiled ones do not (their first of many tile batches carries the one-off cost). Besides
wall time the rows give process CPU time divided by the threads, which stays close to the idle
machine's latency when other processes share the cores. A failing run records its error in its
row and the sweep goes on. Weights do not change the cost: random ones (``--random-weights --preset``)
will do; ``--weights`` picks others (default: the project's default model, a ``trufor_lite``).

``plain`` is the baseline the exported graphs must beat, what a user gets without this project's
export: ``torch.onnx.export`` of the reference model as built (the official explicit attention,
BatchNorms unfolded, float NCHW input, dynamic height and width, the exporter's defaults), run by
an ``InferenceSession`` with default options but the thread count; its timing includes the
preprocessing (/256, NHWC to NCHW), and it has no tiling (sizes the runtime tiles are not run). The reference's
decoders are already in their composed form, which makes this baseline cheaper than an export of
the official code (whose stride-4 concat-and-fuse costs ~0.2 TFLOP more at 768x1024): ratios
against it are conservative. A process of its own exports it once; the measuring process never
imports torch, as a plain ONNX Runtime user's would not.

``scan:BACKEND:PRECISION`` is the whole ``python -m runtime.scan`` process on one image of each size
(start-up, loading, decoding, writing the maps included), and ``throughput:BACKEND:PRECISION`` compares
a scan of ``--mixed-images`` images of mixed sizes with the model's forward-only rate on the same
images (``benchmarks.scan_process``); repeats alternate the two.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from export.contract import WholeImageRule
from reference.errors import UsageError
from reference.weights_args import WeightsArgs

from .scan_process import forward_only, load_average, reads_weights, throughput_rows, whole_process_row

DEFAULT_RUNS = ("plain", "torch", "onnxruntime:fp32", "onnxruntime:int8", "onnxruntime:fp16")
DEFAULT_SIZES = ("256x384", "768x1024", "3000x4000")
PLAIN_GRAPH = "plain.onnx"
WEIGHTS = WeightsArgs()


def export_plain(model, path: Path) -> None:
    """The plain baseline's graph: ``model``'s logits, exported with the exporter's defaults."""
    import torch

    class Logits(torch.nn.Module):  # the exporter takes a tuple of outputs, not a NamedTuple
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return tuple(self.model(x))

    names = ["loc_logits", "conf_logits", "det_logit", "noiseprint"]
    spatial = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        torch.onnx.export(
            Logits(model.eval()), (torch.rand(1, 3, 256, 384),), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=names,
            dynamic_axes={"x": spatial, **{n: {0: "batch"} if n == "det_logit" else spatial for n in names}},
        )


def _plain_predict(graph: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return lambda rgb: session.run(None, {"x": (rgb.transpose(2, 0, 1)[None] / np.float32(256)).astype(np.float32)})


def measure(run: str, size: str, args: argparse.Namespace) -> dict:
    height, width = (int(v) for v in size.lower().split("x"))
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if run == "plain":
        return _timed(run, size, "whole", _plain_predict(Path(args.plain_graph), args.threads), rgb, args)

    from runtime.backends import BackendRequest, create_backend
    from runtime.predictor import Predictor

    backend_name, _, precision = run.partition(":")
    weights = WEIGHTS.parse(args) if reads_weights(backend_name) else None  # torch: its model
    request = BackendRequest(
        backend=backend_name,
        precision=precision or "fp32",
        artifacts=Path(args.artifacts),
        weights=weights,
        threads=args.threads,
    )
    with Predictor(create_backend(request)) as predictor:
        row = _timed(run, size, predictor.mode(height, width), predictor.predict_rgb, rgb, args)
    return {**row, "model": predictor.backend.identity.description}


def _timed(run: str, size: str, mode: str, predict, rgb: np.ndarray, args: argparse.Namespace) -> dict:
    if mode == "whole":
        predict(rgb)  # warm-up: allocations, kernel and algorithm selection
    walls, cpus = [], []
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        predict(rgb)
        walls.append(time.perf_counter() - wall)
        cpus.append((time.process_time() - cpu) / args.threads)
    return {
        "run": run,
        "size": size,
        "mode": mode,
        "threads": args.threads,
        "repeats": args.repeats,
        "median_s": round(statistics.median(walls), 3),
        "min_s": round(min(walls), 3),
        "cpu_per_thread_s": round(statistics.median(cpus), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "load_average": round(load_average(), 2),
    }


def _markdown(rows: list[dict], threads: int) -> str:
    """One table of per-image times (and errors), one of throughput rows; each only when it has rows."""
    times = [row for row in rows if "images_per_s" not in row]
    rates = [row for row in rows if "images_per_s" in row]
    lines = [f"{platform.machine()}, {threads} threads, python {platform.python_version()}"]
    if times:
        lines += ["", "| size (HxW) | backend | mode | median s | min s | CPU s per thread | peak RSS GB | load avg |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {row['size']} | {row['run']} | error: {row['error']} | | | | | |" if "error" in row else
                  f"| {row['size']} | {row['run']} | {row['mode']} | {row['median_s']} | {row['min_s']} | "
                  f"{row['cpu_per_thread_s']} | {row['peak_rss_gb']} | {row['load_average']} |" for row in times]
    if rates:
        lines += ["", "| images | backend | mode | images/s | s (loading excluded) | CPU s per thread | peak RSS GB "
                  "| ratio to forward only | CPU-time ratio | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['size']} | {r['run'].partition(':')[2]} | {r['mode']} | {r['images_per_s']} | {r['median_s']} | "
                  f"{r['cpu_per_thread_s']} | {r.get('peak_rss_gb', '')} | {r.get('ratio_to_forward', '')} | "
                  f"{r.get('cpu_ratio_to_forward', '')} | {r['load_average']} |" for r in rates]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_backends", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", default="artifacts", help="folder made by python -m export.build")
    WEIGHTS.add_to(parser, note=lambda flag: " (the torch and plain runs)")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="BACKEND or BACKEND:PRECISION")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="HxW")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed-images", type=int, default=32, help="images of mixed sizes for throughput: runs")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", nargs=2, metavar=("RUN", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--plain-graph", help=argparse.SUPPRESS)
    parser.add_argument("--export-plain", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--forward-only", nargs=3, metavar=("BACKEND:PRECISION", "FOLDER", "batched|single"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forward_only:
        backend, _, precision = args.forward_only[0].partition(":")
        batched = args.forward_only[2] == "batched"
        print(json.dumps(forward_only(backend, precision, args.forward_only[1], args, batched)))
        return 0
    if args.export_plain:
        export_plain(WEIGHTS.parse_or_exit(args, parser).build(fused_attention=False), Path(args.export_plain))
        return 0
    if args.worker:
        print(json.dumps(measure(*args.worker, args)))
        return 0
    try:
        WEIGHTS.check(args)  # the runs resolve the weights: torch never loads in this process (see --export-plain)
    except UsageError as error:
        parser.error(str(error))
    forwarded = [sys.executable, "-m", "benchmarks.cpu_backends", "--artifacts", args.artifacts,
                 "--threads", str(args.threads), "--repeats", str(args.repeats), *WEIGHTS.argv(args)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="trufor-plain-") as tmp:
        if "plain" in args.runs:
            # in a process of its own: a child's ru_maxrss starts at its parent's RSS when forked
            graph = str(Path(tmp) / PLAIN_GRAPH)
            subprocess.run([*forwarded, "--export-plain", graph], check=True, capture_output=True)
            forwarded += ["--plain-graph", graph]
        for run in args.runs:
            if run.startswith("throughput:"):
                for row in throughput_rows(run, args, Path(tmp), forwarded):
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        for size in args.sizes:
            for run in args.runs:
                if run.startswith("throughput:"):
                    continue
                if run.startswith("scan:"):
                    row = whole_process_row(run, size, args, Path(tmp))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    continue
                if run == "plain" and not WholeImageRule().runs_whole(*(int(v) for v in size.lower().split("x"))):
                    # a whole 12-megapixel image needs tens of GB for stage-1 attention alone
                    row = {"run": run, "size": size, "error": "not run: the plain export has no tiling and this size is tiled"}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    continue
                done = subprocess.run([*forwarded, "--worker", run, size], capture_output=True, text=True)
                if done.returncode == 0:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                else:
                    row = {"run": run, "size": size, "error": (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        print("\n" + _markdown(rows, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
