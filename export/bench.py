"""``python -m export.bench``: latency and peak memory of one exported graph in ONNX Runtime (CPU).

    python -m export.bench ARTIFACTS --precision fp32 [--graph whole] [--size 768x1024] [--threads 2] [--runs 3] [--optimized]

Run it in a fresh process per configuration: peak RSS (``ru_maxrss``) covers the whole process.
Besides wall time it prints CPU time / threads with thread spinning off, which stays close to the
idle-machine latency when other processes share the cores (wall time then mostly measures them).
``load_s`` / ``load_cpu_s`` time the session's creation; ``--optimized`` loads ONNX Runtime's optimized
graph the export wrote (graph optimizations off, as the runtime loads it), ``--runs 0`` only loads.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections import Counter

import numpy as np

from .contract import PRECISIONS
from .manifest import load_manifest
from .session import session_options


def kernel_seconds(profile_path: str) -> tuple[dict[str, float], dict[str, float]]:
    """Kernel time of an ONNX Runtime profile summed by the model scope that made each node (its
    name's first component: dncnn, backbone, decode_head, ...; ``other`` for nodes the optimizer
    made) and by operator type, largest first."""
    with open(profile_path) as file:
        events = json.load(file)
    by_scope: Counter[str] = Counter()
    by_op: Counter[str] = Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        parts = event["name"].split("/")
        by_scope[parts[1] if event["name"].startswith("/") and len(parts) > 2 else "other"] += event["dur"]
        by_op[event["args"].get("op_name", "?")] += event["dur"]
    return tuple({key: round(us / 1e6, 3) for key, us in counts.most_common()} for counts in (by_scope, by_op))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", help="folder written by python -m export.build")
    parser.add_argument("--precision", required=True, choices=list(PRECISIONS))
    parser.add_argument("--graph", default="whole", choices=["whole", "tile"])
    parser.add_argument("--size", default="768x1024", help="HxW of the whole-graph input (default 768x1024)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after loading (0: time the loading only)")
    parser.add_argument("--optimized", action="store_true",
                        help="load the export's ONNX Runtime-optimized graph (ort_optimized) with graph optimizations off")
    parser.add_argument("--profile", help="write an ONNX Runtime profile with this file prefix")
    parser.add_argument("--unsigned-int8", action="store_true",
                        help="int8: run the uint8-activation form the runtime's CPU backend loads "
                        "(written by the export beside the symmetric graph) instead of the symmetric one")
    args = parser.parse_args(argv)
    if args.unsigned_int8 and args.precision != "int8":
        parser.error("--unsigned-int8 applies to --precision int8 only")

    import onnxruntime as ort

    manifest = load_manifest(args.artifacts, args.precision)
    entry = manifest.graph(args.graph)
    if args.graph == "tile":
        height = width = manifest.tile_size
    else:
        height, width = (int(v) for v in args.size.lower().split("x"))
    options = session_options(args.threads, profile_prefix=args.profile, optimize=not args.optimized)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = entry.uint8_activations if args.unsigned_int8 else entry.path
    if args.optimized:
        if entry.ort_optimized is None:
            parser.error(f"{manifest.path} lists no ONNX Runtime-optimized {args.graph} graph; re-export")
        path = entry.ort_optimized.path
    start, cpu = time.perf_counter(), time.process_time()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    load_s, load_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    load_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    image = np.random.default_rng(0).integers(0, 256, (args.batch, height, width, 3), dtype=np.uint8)
    walls, cpus = [], []
    for _ in range(args.runs):
        wall, cpu = time.perf_counter(), time.process_time()
        session.run(None, {"image": image})
        walls.append(time.perf_counter() - wall)
        cpus.append((time.process_time() - cpu) / args.threads)
    result = {
        "graph": path.name, "precision": args.precision, "unsigned_int8": args.unsigned_int8, "input": [args.batch, height, width, 3],
        "threads": args.threads, "load_s": round(load_s, 2), "load_cpu_s": round(load_cpu_s, 3),
        "load_peak_rss_gb": round(load_rss_gb, 3),
        "wall_s": [round(v, 2) for v in walls], "cpu_per_thread_s": [round(v, 2) for v in cpus],
        "wall_median_s": round(float(np.median(walls)), 2) if walls else None,
        "cpu_per_thread_median_s": round(float(np.median(cpus)), 2) if cpus else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "onnxruntime": ort.__version__,
    }
    if args.profile:
        result["profile"] = session.end_profiling()
        result["kernel_s_by_scope"], result["kernel_s_by_op"] = kernel_seconds(result["profile"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
