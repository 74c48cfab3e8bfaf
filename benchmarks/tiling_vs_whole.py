"""How far tiled inference is from the whole-image (official) output, on images where both run.

    python -m benchmarks.tiling_vs_whole IMAGE... [--weights official] [--overlaps 64 128 256]
        [--windows tukey hann] [--json out.json]

For each image: one whole-image run, then one tiled run per (overlap, window), all with the same
backend (``runtime.args.ModelArgs`` flags). Per tiled run: max and mean |diff| of ``map`` and
``conf``, agreement of ``map > 0.5`` (fraction of pixels with the same decision, and IoU of the
forged masks) and the score difference. Prints one JSON row per run and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from reference.image import load_rgb
from runtime.args import ModelArgs
from runtime.backends import create_backend
from runtime.errors import UsageError
from runtime.predictor import Predictor
from runtime.tiling import WINDOWS, TilingConfig


def compare(whole, tiled) -> dict:
    a, b = whole.map > 0.5, tiled.map > 0.5
    union = np.count_nonzero(a | b)
    return {
        "map_max_abs": float(np.abs(whole.map - tiled.map).max()),
        "map_mean_abs": float(np.abs(whole.map - tiled.map).mean()),
        "conf_max_abs": float(np.abs(whole.conf - tiled.conf).max()),
        "conf_mean_abs": float(np.abs(whole.conf - tiled.conf).mean()),
        "map_0.5_agreement": float(np.count_nonzero(a == b) / a.size),
        "map_0.5_iou": float(np.count_nonzero(a & b) / union) if union else 1.0,
        "score_whole": whole.score,
        "score_tiled": tiled.score,
        "score_abs_diff": abs(whole.score - tiled.score),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tiling_vs_whole", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[128])
    parser.add_argument("--windows", nargs="+", choices=WINDOWS, default=["tukey"])
    parser.add_argument("--json", help="also write the rows to this file")
    model_args = ModelArgs()
    model_args.add_to(parser)
    args = parser.parse_args(argv)
    try:
        request = model_args.parse(args)
    except UsageError as error:
        parser.error(str(error))
    backend = create_backend(request)
    rows = []
    with backend:
        for path in args.images:
            rgb = load_rgb(path, max_pixels=None)
            start = time.perf_counter()
            forced_whole = TilingConfig(threshold_pixels=rgb.shape[0] * rgb.shape[1], max_side=max(rgb.shape[:2]))
            whole = Predictor(backend, forced_whole).predict_rgb(rgb)
            whole_seconds = time.perf_counter() - start
            for overlap in args.overlaps:
                for window in args.windows:
                    tiling = TilingConfig(threshold_pixels=0, overlap=overlap, window=window)
                    start = time.perf_counter()
                    tiled = Predictor(backend, tiling).predict_rgb(rgb)
                    row = {
                        "image": path, "width": rgb.shape[1], "height": rgb.shape[0], "backend": backend.describe(),
                        "tile": backend.tile_size, "overlap": overlap, "window": window,
                        "whole_seconds": round(whole_seconds, 2), "tiled_seconds": round(time.perf_counter() - start, 2),
                        **compare(whole, tiled),
                    }  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)
    print("\n| image | WxH | overlap | window | map max/mean abs | conf max/mean abs | map>0.5 agree / IoU | score whole -> tiled |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['image'].rsplit('/', 1)[-1]} | {r['width']}x{r['height']} | {r['overlap']} | {r['window']} | "
            f"{r['map_max_abs']:.3f} / {r['map_mean_abs']:.4f} | {r['conf_max_abs']:.3f} / {r['conf_mean_abs']:.4f} | "
            f"{r['map_0.5_agreement']:.4f} / {r['map_0.5_iou']:.3f} | {r['score_whole']:.4f} -> {r['score_tiled']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
