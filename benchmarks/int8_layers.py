"""INT8 layer groups: what each costs in accuracy and saves in time, to choose ``--int8-layers``.

    python -m benchmarks.int8_layers [--weights official|ZIP|PATH] [--images DIR] [--count 4]
        [--groups encoder_kv encoder_fc2 ...] [--size 768x1024] [--threads 2] [--markdown]

Exports the fp32 graphs and calibrates the tile graph once (synthetic tiles, as ``python -m
export.build --precision int8`` does), then for the default scope alone and for each group added
to it quantizes the whole graph from those ranges, runs the whole graph in the form the CPU runtime loads (uint8
activations) on the images, and compares with the fp32 graph (itself within 1e-5 of the reference):
99th percentile of |map| and |conf| differences, max |score| difference, agreement of the maps
thresholded at 0.5. With ``--size`` it also times each graph on one image of that size (median of
3 runs after a warm-up). The weights are the project's default model unless ``--weights`` says otherwise;
random ones (``--random-weights``) give near-constant maps: measure with trained weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from reference.weights_args import WeightsArgs

WEIGHTS = WeightsArgs()
GROUPS = ("encoder_kv", "encoder_proj", "encoder_fc2", "fusion_linear", "encoder_linear", "dncnn")


def _images(folder: str | None, count: int) -> list[np.ndarray]:
    from export import calibration

    if folder:
        return list(calibration.folder_tiles(folder, 384, count, seed=7))
    return list(calibration.synthetic_tiles(384, count, seed=7))


def _outputs(session, images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    return [dict(zip(("map", "conf", "score"), session.run(None, {"image": image[None]}))) for image in images]


def _latency(session, size: str) -> float:
    height, width = (int(v) for v in size.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    session.run(None, {"image": image})
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        session.run(None, {"image": image})
        walls.append(time.perf_counter() - start)
    return round(statistics.median(walls), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_layers", description=__doc__.split("\n\n")[0])
    WEIGHTS.add_to(parser)
    parser.add_argument("--images", help="folder of images, cropped to 384x384 (default: synthetic images)")
    parser.add_argument("--count", type=int, default=4, help="images to compare on (default 4)")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), help="scopes to add to the default one, one at a time")
    parser.add_argument("--size", help="also time each whole graph on one HxW image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    weights = WEIGHTS.parse_or_exit(args, parser)

    import onnxruntime as ort

    from export import calibration
    import onnx

    from export.int8 import DEFAULT_SCOPES, SCOPES, calibrate, nodes_to_quantize, quantize_model, unsigned_activations
    from export.pipeline import EXPORT_OVERRIDES, fp32_graphs
    from export.session import session_options

    unknown = sorted(set(args.groups) - set(SCOPES))
    if unknown:
        parser.error(f"unknown scopes {unknown}; choose from {sorted(SCOPES)}")
    model = weights.build(**EXPORT_OVERRIDES)
    graphs = fp32_graphs(model, 512, lambda *_: contextlib.nullcontext())
    del model
    images = _images(args.images, args.count)

    def session(graph):
        return ort.InferenceSession(graph.SerializeToString(), session_options(args.threads), providers=["CPUExecutionProvider"])

    fp32 = session(graphs["whole"])
    reference = _outputs(fp32, images)
    rows = [{"layers": "fp32", "nodes": 0, **({"latency_s": _latency(fp32, args.size)} if args.size else {})}]
    del fp32
    with tempfile.TemporaryDirectory(prefix="trufor-int8-layers-") as tmp:
        tile, whole, cache = Path(tmp) / "tile.onnx", Path(tmp) / "whole.onnx", Path(tmp) / "calibration.json"
        onnx.save(graphs.pop("tile"), str(tile))
        onnx.save(graphs["whole"], str(whole))
        calibrate(tile, calibration.TileReader(calibration.synthetic_tiles(512), calibration.DEFAULT_COUNT), cache, Path(tmp))
        for extra in [(), *[(g,) for g in args.groups]]:
            scopes = tuple(DEFAULT_SCOPES) + extra
            nodes = nodes_to_quantize(graphs["whole"], scopes)
            int8 = session(unsigned_activations(quantize_model(whole, cache, nodes)))
            diffs = [
                (np.quantile(abs(got["map"] - ref["map"]), 0.99), np.quantile(abs(got["conf"] - ref["conf"]), 0.99),
                 float(abs(got["score"] - ref["score"]).max()), float(((got["map"] > 0.5) == (ref["map"] > 0.5)).mean()))
                for got, ref in zip(_outputs(int8, images), reference)
            ]
            worst = np.array(diffs)
            row = {
                "layers": " + ".join(scopes),
                "nodes": len(nodes),
                "map_p99": float(f"{worst[:, 0].max():.2e}"),
                "conf_p99": float(f"{worst[:, 1].max():.2e}"),
                "score_max": float(f"{worst[:, 2].max():.2e}"),
                "map_agreement": round(float(worst[:, 3].min()), 4),
                **({"latency_s": _latency(int8, args.size)} if args.size else {}),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.markdown:
        timed = " | latency s" if args.size else ""
        print(f"\nWeights: {weights.description}, preset {weights.preset}.")
        print(f"\n| layers | int8 nodes | map p99 | conf p99 | score max | map > 0.5 agreement{timed} |")
        print("|---|---|---|---|---|---|" + ("---|" if args.size else ""))
        for row in rows:
            cells = [row["layers"], row["nodes"], *(row.get(k, "") for k in ("map_p99", "conf_p99", "score_max", "map_agreement"))]
            cells += [row["latency_s"]] if args.size else []
            print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
