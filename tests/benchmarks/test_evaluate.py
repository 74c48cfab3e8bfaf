"""``benchmarks.evaluate``: metrics of a predictor over folders of images and masks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from training_helpers import write_pairs

from benchmarks.evaluate import evaluate, evaluate_backend, format_table, main
from benchmarks.perturb import parse_perturbations
from reference import build_trufor
from training.data.datasets import open_file_dataset


def oracle(*datasets):
    """A predictor that knows the answer: the mask as map, 1 or 0 as score."""
    masks = {d.load(i).image.tobytes(): d.load(i).mask for d in datasets for i in range(len(d))}

    def predict(image):
        mask = masks[image.tobytes()]
        return SimpleNamespace(map=mask.astype(np.float32), score=float(mask.any()))

    return predict


def test_perfect_predictor_scores_one(tmp_path):
    dataset = open_file_dataset(str(write_pairs(tmp_path / "set", count=3, pristine=2)))
    results = evaluate(oracle(dataset), [dataset])
    summary = results["datasets"][dataset.name]
    assert summary["images"] == 5 and summary["forged"] == 3
    for key in ("px_f1_best", "px_f1_05", "px_mcc_05", "px_iou_best", "px_auc", "img_auc", "img_bacc",
                "img_auc_map_max", "img_auc_forged_fraction", "benco_img_acc", "p-F1_smooth"):
        assert summary[key] == pytest.approx(1.0, abs=1e-6), key
    for key in ("benco_px_f1", "benco_px_iou", "benco_px_auc"):  # BenCo: the 2 pristine images count 0
        assert summary[key] == pytest.approx(3 / 5, abs=1e-6), key
    assert summary["img_scores_dropped"] == 0
    table = format_table(results)
    assert "px_f1_best" in table and "benco_px_f1" in table and "img_scores_dropped" in table and dataset.name in table


def test_mean_row_sums_counts_and_averages_metrics(tmp_path):
    first = open_file_dataset(str(write_pairs(tmp_path / "a", count=2, pristine=1)))
    second = open_file_dataset(str(write_pairs(tmp_path / "b", count=1, pristine=0, seed=1)))
    results = evaluate(oracle(first, second), [first, second])
    mean = results["mean"]
    assert mean["images"] == 4 and mean["forged"] == 3 and mean["img_scores_dropped"] == 0
    assert mean["benco_px_f1"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)  # per-dataset means, averaged


def bright_pixels(image):
    """A predictor that sees the forged square: write_pairs paints it at 250 on noise."""
    bright = (image >= 245).all(axis=2)
    return SimpleNamespace(map=bright.astype(np.float32), score=float(bright.mean() > 0.05))


def test_every_metric_under_each_perturbation_in_one_table(tmp_path):
    dataset = open_file_dataset(str(write_pairs(tmp_path / "set", count=3, size=64, pristine=2)))
    perturbations = parse_perturbations(["jpeg:90,30", "resize:0.5", "blur:1.5", "noise:2"])
    results = evaluate(bright_pixels, [dataset], perturbations=perturbations)
    clean = results["datasets"][dataset.name]
    assert clean["px_f1_05"] == pytest.approx(1.0) and clean["img_auc"] == 1.0
    runs = {label: run["datasets"][dataset.name] for label, run in results["perturbations"].items()}
    assert list(runs) == ["jpeg:90", "jpeg:30", "resize:0.5", "blur:1.5", "noise:2"]
    for label, summary in runs.items():
        assert summary["images"] == 5 and summary["forged"] == 3 and set(summary) == set(clean), label
    assert runs["jpeg:30"]["px_f1_05"] < runs["jpeg:90"]["px_f1_05"] <= 1.0, "stronger compression, worse map"
    assert runs["resize:0.5"]["px_f1_05"] == pytest.approx(1.0), "the half-size map, resized back, lies on the mask"
    # Blur smears only the square's edges: the official border band hides them, BenCo's metric counts them.
    # BenCo averages over all 5 images, the 2 pristine ones scoring 0: a perfect map gives 3/5.
    assert clean["benco_px_f1"] == pytest.approx(3 / 5)
    assert runs["blur:1.5"]["px_f1_05"] == pytest.approx(1.0) and runs["blur:1.5"]["benco_px_f1"] < 0.9 * 3 / 5
    assert runs["noise:2"]["benco_px_f1"] > 0.99 * 3 / 5
    lines = format_table(results).splitlines()
    assert lines[0].startswith("| perturbation | dataset") and len(lines) == 2 + 6
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["none", *runs]


def test_cli_with_the_torch_backend(tmp_path, capsys):
    data = write_pairs(tmp_path / "set", count=2, pristine=1)
    torch.manual_seed(0)
    torch.save({"epoch": 1, "state_dict": build_trufor("tiny").state_dict()}, tmp_path / "tiny.pth.tar")
    out = tmp_path / "results.json"
    code = main(["--data", str(data), "--backend", "torch", "--weights", str(tmp_path / "tiny.pth.tar"),
                 "--preset", "tiny", "--json", str(out), "--threads", "1", "--perturb", "jpeg:50", "resize:0.75"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| dataset" in printed and "torch (" in printed
    results = json.loads(out.read_text())
    summary = next(iter(results["datasets"].values()))
    assert summary["images"] == 3 and summary["forged"] == 2 and 0 <= summary["px_f1_best"] <= 1
    assert list(results["perturbations"]) == ["jpeg:50", "resize:0.75"] and "| resize:0.75 " in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "onnxruntime"], "needs --artifacts"),
        (["--backend", "onnxruntime", "--artifacts", "y", "--weights", "x"], "pass --artifacts DIR, not --weights"),
        (["--backend", "torch", "--weights", "x", "--random-weights"], "--random-weights and --weights x"),
        (["--backend", "torch", "--weights", "x", "--artifacts", "y"], "--artifacts is for --backend onnxruntime"),
        (["--backend", "torch", "--random-weights", "--perturb", "jpeg:0"], "--perturb: jpeg value '0'"),
        (["--backend", "onnxruntime", "--artifacts", "y", "--noiseprint-storage", "float16"], "is for --backend torch"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_without_weights_the_torch_backend_evaluates_the_default_model(tmp_path, no_default_model, capsys):
    data = write_pairs(tmp_path / "set", count=1, pristine=0)
    assert main(["--data", str(data), "--backend", "torch", "--threads", "1"]) == 1
    assert "evaluation failed: no --weights given, and the project's default model" in capsys.readouterr().err


def test_the_python_api_takes_the_weights(tmp_path, default_model):
    from benchmarks.evaluate import evaluate_backend

    data = write_pairs(tmp_path / "set", count=1, pristine=1)
    results = evaluate_backend([str(data)], "torch", random_weights=True, preset="tiny", threads=1)
    assert results["backend"].startswith("torch (random weights of preset tiny, preset tiny,")
    results = evaluate_backend([str(data)], "torch", threads=1)
    assert results["backend"].startswith(f"torch (the project's default model trufor_lite ({default_model}), preset trufor_lite")


def test_noiseprint_storage_rounds_only_the_dncnn_and_says_so(tmp_path):
    data = write_pairs(tmp_path / "set", count=2, pristine=1)
    runs = {storage: evaluate_backend([str(data)], "torch", random_weights=True, preset="tiny", threads=1,
                                      noiseprint_storage=storage)
            for storage in (None, "float16")}
    assert "Noiseprint++ in float16 storage (NOT FAITHFUL" in runs["float16"]["backend"]
    assert "storage" not in runs[None]["backend"]
    clean, rounded = (next(iter(r["datasets"].values())) for r in (runs[None], runs["float16"]))
    assert clean["images"] == rounded["images"] == 3
