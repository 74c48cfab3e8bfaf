"""``python -m training.synthesize``: write a fixed synthetic forgery set to disk.

    python -m training.synthesize --out data/synth-test --count 200 --size 256 --seed 1 --first-camera 1000

Layout (what ``benchmarks.evaluate --data`` and ``--data pairs:DIR`` read): ``images/NNNNNN.png``
for every sample, ``masks/NNNNNN.png`` (0 / 255) for the forged ones only, and ``samples.jsonl``
with each sample's kind and final JPEG quality. Images are PNG so nothing is added to the
generator's own processing. For a held-out set, use a seed and cameras the training did not
(training uses cameras 0..N-1 of the simulated family: ``--first-camera 1000`` is unseen).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from reference.errors import TruForError

from .data.forgery import FORGERY_KINDS, ForgeryConfig, ForgeryGenerator
from .data.sources import PhotoFolderSource, SimulatedCameraSource

SYNTHESIS_STREAM = 0x5E7


def write_synthetic_set(out: Path, count: int, size: int, seed: int, generator: ForgeryGenerator) -> dict[str, int]:
    """Write ``count`` samples; returns how many of each kind."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    kinds: dict[str, int] = {}
    with open(out / "samples.jsonl", "w") as manifest:
        for index in range(count):
            sample = generator.sample(np.random.default_rng([seed, SYNTHESIS_STREAM, index]), size, size)
            name = f"{index:06d}.png"
            Image.fromarray(sample.image).save(out / "images" / name)
            if sample.mask.any():
                Image.fromarray(sample.mask * 255).save(out / "masks" / name)
            manifest.write(json.dumps({"image": name, "kind": sample.kind, "final_jpeg": sample.final_jpeg,
                                       "forged_fraction": float(sample.mask.mean())}) + "\n")
            kinds[sample.kind] = kinds.get(sample.kind, 0) + 1
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.synthesize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cameras", type=int, default=64, help="simulated cameras to draw from (default 64)")
    parser.add_argument("--first-camera", type=int, default=1000, help="first simulated camera (default 1000: unseen in training)")
    parser.add_argument("--pristine", type=Path, help="folder of photos instead of simulated cameras")
    parser.add_argument("--kinds", nargs="+", choices=FORGERY_KINDS, default=list(FORGERY_KINDS))
    parser.add_argument("--pristine-fraction", type=float, default=0.3)
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 29:
        parser.error("--count must be >= 1 and --size >= 29")
    try:
        source = PhotoFolderSource(args.pristine) if args.pristine else SimulatedCameraSource(args.cameras, args.first_camera)
        generator = ForgeryGenerator(source, ForgeryConfig(kinds=tuple(args.kinds), pristine_fraction=args.pristine_fraction))
        kinds = write_synthetic_set(args.out, args.count, args.size, args.seed, generator)
    except TruForError as error:
        print(f"synthesis failed: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} samples to {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
