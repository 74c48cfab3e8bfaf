"""``python -m training.recipe``: the project's default model, trained end to end and resumable.

    python -m training.recipe --cameras ../shared/data/cameras --out runs/trufor_lite
    python -m training.recipe --cameras ../shared/data/cameras --out runs/trufor_lite --stop-after phase1

Stages, each skipped once done and resumed where it stopped (a stopped job is simply re-run):

1. ``split``: the camera-model folders are copied into ``OUT/data/{train,val,test}`` by the fixed
   lists below, so test cameras are never seen in training and validation cameras only select
   checkpoints;
2. ``phase1`` to ``phase3``: ``python -m training --config training/recipes/NAME/phaseN.yaml``
   with ``{data}`` filled in, the phase-1 best checkpoint as phase 2's Noiseprint++ and the
   phase-2 best as phase 3's start;
3. ``release``: the phase-3 best, its confidence BN eps folded to the inference default, stored
   in float16 as ``OUT/NAME.pth.tar`` (the file the project ships);
4. ``heldout``: forgeries of the test cameras' photos (``OUT/heldout``), for
   ``benchmarks.evaluate``.

Each stage's completion is a ``.done`` file in its folder, written last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from reference.errors import TruForError
from reference.outputs import atomic_write

from .config import load_file, resolve
from .data.forgery import ForgeryGenerator
from .data.sources import PhotoFolderSource
from .loop import BEST, LAST
from .phases import run
from .release import release
from .synthesize import write_synthetic_set

RECIPES = Path(__file__).parent / "recipes"
# Camera models kept out of training (by folder name in ../shared/data/cameras): the held-out
# test set is made from TEST's photos, checkpoints are selected on VALIDATION's.
TEST_CAMERAS = ("Apple_iPhone_XR", "Canon_PowerShot_S50", "HP_Photosmart_M425", "Nikon_D90", "Olympus_C-5050", "Sony_FD92")
VALIDATION_CAMERAS = ("Canon_PowerShot_G6", "Kodak_DC280", "Pentax_ist_DL", "Sony_SLT-A57")
STAGES = ("split", "phase1", "phase2", "phase3", "release", "heldout")
HELDOUT_COUNT, HELDOUT_SIZE, HELDOUT_SEED = 200, 512, 20261201


def _done(folder: Path) -> bool:
    return (folder / ".done").is_file()


def _mark_done(folder: Path, record: dict) -> None:
    atomic_write(folder / ".done", lambda f: f.write((json.dumps(record) + "\n").encode()))


def split_cameras(cameras: Path, data: Path) -> dict[str, list[str]]:
    """Copy each camera-model folder into data/train, data/val or data/test."""
    models = sorted(p.name for p in cameras.iterdir() if p.is_dir())
    missing = sorted(set(TEST_CAMERAS + VALIDATION_CAMERAS) - set(models))
    if missing:
        raise TruForError(f"{cameras} lacks the held-out camera folders {missing}; is it ../shared/data/cameras?")
    split = {"test": list(TEST_CAMERAS), "val": list(VALIDATION_CAMERAS)}
    split["train"] = [m for m in models if m not in TEST_CAMERAS + VALIDATION_CAMERAS]
    for part, names in split.items():
        for name in names:
            shutil.copytree(cameras / name, data / part / name, dirs_exist_ok=True)
    return split


def phase_settings(recipe: str, phase: int, data: Path, run_dir: Path, previous: Path | None) -> dict:
    values = load_file(RECIPES / recipe / f"phase{phase}.yaml")
    for key in ("data", "val_data"):
        values[key] = tuple(spec.format(data=data) for spec in values[key])
    values.update(phase=phase, out=str(run_dir))
    if phase == 2:
        values["noiseprint"] = str(previous)
    elif phase == 3:
        values["init"] = str(previous)
    return values


def train_phase(recipe: str, phase: int, data: Path, run_dir: Path, previous: Path | None, device: str) -> None:
    values = phase_settings(recipe, phase, data, run_dir, previous)
    resuming = (run_dir / LAST).is_file()
    config = resolve({**values, "device": device, "resume": resuming})
    started = time.time()
    result = run(config)
    _mark_done(run_dir, {"iteration": result.iteration, "best": result.best_value, "seconds_this_run": time.time() - started})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=Path, required=True, help="camera-model folders of photos (../shared/data/cameras)")
    parser.add_argument("--out", type=Path, default=Path("runs/trufor_lite"), help="run folder (default runs/trufor_lite)")
    parser.add_argument("--recipe", default="trufor_lite", choices=sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--stop-after", choices=STAGES, default=STAGES[-1], help="last stage to run")
    args = parser.parse_args(argv)
    out, data = args.out, args.out / "data"
    stages = STAGES[: STAGES.index(args.stop_after) + 1]
    try:
        for stage in stages:
            folder = data if stage == "split" else out / stage
            if _done(folder):
                print(f"[recipe] {stage}: done", flush=True)
                continue
            print(f"[recipe] {stage}: running", flush=True)
            if stage == "split":
                _mark_done(data, split_cameras(args.cameras, data))
            elif stage.startswith("phase"):
                phase = int(stage[-1])
                previous = out / f"phase{phase - 1}" / BEST if phase > 1 else None
                train_phase(args.recipe, phase, data, folder, previous, args.device)
            elif stage == "release":
                model = out / f"{args.recipe}.pth.tar"
                difference = release(out / "phase3" / BEST, model, None, "train", "docker", "float16")
                folder.mkdir(parents=True, exist_ok=True)
                _mark_done(folder, {"model": str(model), "bytes": model.stat().st_size, "max_relative_change": difference})
            elif stage == "heldout":
                generator = ForgeryGenerator(PhotoFolderSource(data / "test"))
                kinds = write_synthetic_set(folder, HELDOUT_COUNT, HELDOUT_SIZE, HELDOUT_SEED, generator)
                _mark_done(folder, kinds)
    except TruForError as error:
        print(f"[recipe] failed: {error}", file=sys.stderr)
        return 1
    print(f"[recipe] finished: {', '.join(stages)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
