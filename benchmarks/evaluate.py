"""Forgery localization and detection metrics of a backend on folders of images with masks.

    python -m benchmarks.evaluate --data DIR [--data DIR2 ...] [--backend torch|onnxruntime]
        [--weights official|ZIP|PATH | --random-weights --preset NAME | --artifacts DIR] [--precision fp32|fp16|int8]
        [--mode official|benco|both] [--json OUT.json] [--limit N]
        [--perturb jpeg:90,70,50 resize:0.75,0.5 blur:1.0 noise:2]

``--data`` takes the training loaders' forms: ``DIR`` with ``images/`` and ``masks/`` (images
without a mask are pristine), ``casia:DIR`` (Tp/, Au/, GT/), ``coverage:DIR`` (forged/, masks/,
pristine/) or ``authentic:DIR``. Each image runs whole, as the official code does (the onnxruntime
backend tiles images above its pixel threshold, see ``runtime.tiling``). Metrics are those of ``training.metrics``, one protocol per
mode: ``official`` is the authors' ``test_docker/metrics.py`` (pixel metrics on forged images,
border band excluded, better of map and inverse); ``benco`` is IMDL-BenCo 0.1.45's tester (pixel
metrics at 0.5 averaged over all images, a pristine one scoring 0). Image metrics cover every
image with a finite score; ``img_scores_dropped`` counts the others. Prints one table row per
dataset plus a row over datasets (counts summed, metrics averaged), and ``--json`` writes the
same numbers. ``--perturb`` evaluates every metric again with each perturbation applied to the
images before the model (``benchmarks.perturb``), in the same table, under the unperturbed rows
("none"). From Python:
``evaluate_backend(["DIR"], "torch", weights="official")`` (None: the project's default model) or
``evaluate(predict, datasets)`` return the numbers as a dict.

Exit status: 0 done, 1 a failure while loading or predicting, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reference.errors import TruForError, UsageError
from reference.weights_args import WeightsArgs
from runtime.outputs import resize_map
from training.data.datasets import FileDataset, open_file_dataset
from training.metrics import COUNTS, MODES, MetricAccumulator, mean_of_defined

from .perturb import Perturbation, parse_perturbations

Predict = Callable[[np.ndarray], object]  # uint8 HxWx3 -> an object with .map (HxW) and .score
COLUMNS = {
    "official": ("px_f1_best", "px_f1_05", "px_mcc_best", "px_mcc_05", "px_iou_best", "px_iou_05", "px_auc", "img_auc", "img_bacc",
                 "img_auc_map_max", "img_auc_forged_fraction"),
    "benco": ("benco_px_f1", "benco_px_iou", "benco_px_auc", "img_auc", "benco_img_acc", "benco_img_f1"),
}


CLEAN = "none"  # the label of the images as they are
WEIGHTS = WeightsArgs()


def _mean(summaries: dict[str, dict]) -> dict[str, float]:
    """Counts summed over datasets, metrics averaged over those where they are defined."""
    keys = sorted({k for summary in summaries.values() for k in summary})
    mean = {}
    for key in keys:
        values = [s[key] for s in summaries.values() if key in s]
        mean[key] = sum(values) if key in COUNTS else mean_of_defined(values)
    return mean


def evaluate(predict: Predict, datasets: list[FileDataset], modes: tuple[str, ...] = MODES, limit: int | None = None,
             progress: Callable[[str], None] | None = None, perturbations: Sequence[Perturbation] = ()) -> dict:
    """``{"datasets": {name: metrics}, "mean": metrics over datasets, "seconds_per_image": float}`` for the
    images as they are, plus ``"perturbations": {label: {"datasets": ..., "mean": ...}}`` when some are given:
    each is applied alone to every image before the model, and its map resized back to the mask's size."""
    runs: dict[str, Perturbation | None] = {CLEAN: None, **{p.label: p for p in perturbations}}
    summaries: dict[str, dict[str, dict]] = {label: {} for label in runs}
    seconds, count = 0.0, 0
    for dataset in datasets:
        accumulators = {label: MetricAccumulator(modes=modes) for label in runs}
        for index in range(min(len(dataset), limit or len(dataset))):
            sample = dataset.load(index)
            for label, perturbation in runs.items():
                image = sample.image if perturbation is None else perturbation.apply(sample.image, seed=index)
                start = time.perf_counter()
                try:
                    prediction = predict(image)
                except TruForError as error:
                    raise TruForError(f"{dataset.name} {sample.name}, perturbation {label}: {error}") from error
                seconds += time.perf_counter() - start
                count += 1
                prob_map = np.asarray(prediction.map, dtype=np.float32)
                if sample.mask is not None and prob_map.shape != sample.mask.shape:  # a resized image
                    prob_map = resize_map(prob_map, sample.mask.shape[::-1])
                accumulators[label].add(prob_map, sample.mask, float(prediction.score))
            if progress:
                progress(f"{dataset.name} {index + 1}/{len(dataset)} {sample.name}")
        for label, accumulator in accumulators.items():
            summaries[label][dataset.name] = accumulator.summary()
    results: dict = {"datasets": summaries[CLEAN], "mean": _mean(summaries[CLEAN])}
    if perturbations:
        results["perturbations"] = {
            label: {"datasets": named, "mean": _mean(named)} for label, named in summaries.items() if label != CLEAN
        }
    results["seconds_per_image"] = seconds / count if count else math.nan
    return results


def format_table(results: dict, modes: tuple[str, ...] = MODES) -> str:
    """A Markdown table: a row per dataset (and their mean), under each perturbation when there are some."""
    columns = ["images", "forged", *dict.fromkeys(c for mode in modes for c in COLUMNS[mode]), "img_scores_dropped"]
    runs = [(CLEAN, results), *results.get("perturbations", {}).items()]
    perturbed = len(runs) > 1
    keys = ["perturbation", "dataset"] if perturbed else ["dataset"]
    rows = []
    for label, run in runs:
        named = list(run["datasets"].items())
        if len(named) > 1:
            named.append(("mean", run["mean"]))
        rows += [([label, name] if perturbed else [name], metrics) for name, metrics in named]
    widths = [max([len(key)] + [len(cells[i]) for cells, _ in rows]) for i, key in enumerate(keys)]
    lines = ["| " + " | ".join(k.ljust(w) for k, w in zip(keys, widths)) + " | " + " | ".join(columns) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|" + "|".join("-" * (len(c) + 2) for c in columns) + "|"]
    for names, metrics in rows:
        cells = []
        for column in columns:
            value = metrics.get(column, math.nan)
            text = f"{int(value)}" if column in COUNTS and not math.isnan(value) else f"{value:.4f}"
            cells.append(text.rjust(len(column)))
        lines.append("| " + " | ".join(n.ljust(w) for n, w in zip(names, widths)) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def torch_predictor(weights, preset: str | None, device: str, conf_bn_variant: str, *,
                    random_weights: bool = False, noiseprint_storage: str | None = None) -> tuple[Predict, str]:
    from reference.predictor import ReferencePredictor

    predictor = ReferencePredictor.from_weights(weights, preset, device, random_weights=random_weights,
                                                conf_bn_variant=conf_bn_variant)
    resolved = predictor.weights
    description = f"torch ({resolved.description}, preset {resolved.preset}, conf BN eps {conf_bn_variant}, {device}"
    if noiseprint_storage:
        from .noiseprint_precision import STORAGE, RoundedNoiseprint

        predictor.model.dncnn = RoundedNoiseprint(predictor.model.dncnn, STORAGE[noiseprint_storage])
        description += f", Noiseprint++ in {noiseprint_storage} storage (NOT FAITHFUL: a measurement)"
    return predictor.predict, description + ")"


def onnxruntime_predictor(artifacts: Path, precision: str, threads: int | None) -> tuple[Predict, str, Callable[[], None]]:
    try:
        from runtime.backends import BackendRequest, create_backend
        from runtime.predictor import Predictor
    except ImportError as error:
        raise TruForError(f"the onnxruntime backend needs the runtime package ({error})") from error
    backend = create_backend(BackendRequest(backend="onnxruntime", precision=precision, artifacts=artifacts, threads=threads))
    predictor = Predictor(backend)
    return predictor.predict_rgb, f"onnxruntime ({backend.describe()}, {artifacts})", predictor.close


def evaluate_backend(data: list[str], backend: str = "torch", *, weights=None, random_weights: bool = False,
                     artifacts: Path | None = None, preset: str | None = None, precision: str = "fp32",
                     device: str = "cpu", threads: int | None = None, conf_bn_variant: str = "docker",
                     modes: tuple[str, ...] = MODES, limit: int | None = None,
                     log: Callable[[str], None] | None = None, perturbations: Sequence[Perturbation] = (),
                     noiseprint_storage: str | None = None) -> dict:
    """Open the ``data`` specs and the backend, evaluate, and return ``evaluate``'s dict plus
    ``backend`` (a description) and ``modes``. The torch backend runs ``weights`` (what
    ``reference.weights.resolve_weights`` takes: None for the project's default model, "official", a
    zip or checkpoint path), or with ``random_weights`` the preset untrained."""
    datasets = [open_file_dataset(spec) for spec in data]
    close: Callable[[], None] = lambda: None
    if backend == "torch":
        if threads:
            import torch

            torch.set_num_threads(threads)
        predict, description = torch_predictor(weights, preset, device, conf_bn_variant, random_weights=random_weights,
                                               noiseprint_storage=noiseprint_storage)
    elif backend == "onnxruntime":
        if artifacts is None:
            raise TruForError("the onnxruntime backend needs the artifacts folder of python -m export.build")
        predict, description, close = onnxruntime_predictor(artifacts, precision, threads)
    else:
        raise TruForError(f"unknown backend {backend!r}; choose torch or onnxruntime")
    try:
        for dataset in datasets:
            if log:
                log(dataset.describe())
        results = evaluate(predict, datasets, modes, limit, perturbations=perturbations)
    finally:
        close()
    results["backend"] = description
    results["modes"] = list(modes)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="DIR (images/ + masks/), casia:DIR, coverage:DIR or authentic:DIR; repeatable")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    WEIGHTS.add_to(parser, note=lambda flag: " (torch backend)")
    parser.add_argument("--conf-bn-variant", choices=("docker", "train"), default="docker",
                        help="torch: confidence-decoder BN eps (train for a checkpoint fresh from training.phase 3)")
    parser.add_argument("--noiseprint-storage", choices=("float16", "bfloat16"),
                        help="torch: round Noiseprint++'s conv inputs and weights to this type (float32 "
                             "accumulation), to measure what a reduced-precision Noiseprint++ costs; not faithful")
    parser.add_argument("--artifacts", type=Path, help="onnxruntime: export folder (python -m export.build)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="onnxruntime artifacts to use")
    parser.add_argument("--device", default="cpu", help="torch: cpu or cuda")
    parser.add_argument("--threads", type=int, help="intra-op threads")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both",
                        help="official: the authors' test_docker/metrics.py (forged images, border band excluded, "
                             "better of map and inverse); benco: IMDL-BenCo 0.1.45's tester (all images, pristine "
                             "ones scoring 0); default both")
    parser.add_argument("--limit", type=int, help="at most N images per dataset")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--perturb", nargs="+", action="extend", default=[], metavar="KIND:V[,V...]",
                        help="also evaluate with each perturbation applied before the model: jpeg:QUALITY, "
                             "resize:FACTOR, blur:SIGMA, noise:SIGMA (e.g. jpeg:90,70,50 resize:0.75,0.5 blur:1.0 noise:2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.backend == "torch":
        if args.artifacts:
            parser.error("--artifacts is for --backend onnxruntime; the torch backend takes --weights")
        try:
            WEIGHTS.check(args)
        except UsageError as error:
            parser.error(str(error))
    elif WEIGHTS.given(args):
        parser.error(f"--backend onnxruntime reads exported graphs: pass --artifacts DIR, not {WEIGHTS.given(args)[0]}")
    elif args.artifacts is None:
        parser.error("--backend onnxruntime needs --artifacts DIR (python -m export.build ... --out DIR)")
    if args.noiseprint_storage and args.backend != "torch":
        parser.error("--noiseprint-storage is for --backend torch (the exported graphs keep Noiseprint++ in float32)")
    modes = MODES if args.mode == "both" else (args.mode,)
    try:
        perturbations = parse_perturbations(args.perturb)
    except ValueError as error:
        parser.error(f"--perturb: {error}")
    try:
        weights = WEIGHTS.parse(args) if args.backend == "torch" else None
        results = evaluate_backend(args.data, args.backend, weights=weights, artifacts=args.artifacts,
                                   precision=args.precision, device=args.device,
                                   threads=args.threads, conf_bn_variant=args.conf_bn_variant, modes=modes,
                                   limit=args.limit, log=lambda line: print(line, flush=True),
                                   perturbations=perturbations, noiseprint_storage=args.noiseprint_storage)
    except TruForError as error:
        print(f"evaluation failed: {error}", file=sys.stderr)
        return 1
    description = results["backend"]
    print(f"\n{description}, {results['seconds_per_image']:.3f} s/image\n")
    print(format_table(results, modes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
