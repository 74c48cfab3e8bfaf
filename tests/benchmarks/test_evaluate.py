"""``benchmarks.evaluate``: metrics of a predictor over folders of images and masks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from training_helpers import write_pairs

from benchmarks.evaluate import evaluate, format_table, main
from reference import build_trufor
from training.data.datasets import open_file_dataset


def oracle(dataset):
    """A predictor that knows the answer: the mask as map, 1 or 0 as score."""
    masks = {dataset.load(i).image.tobytes(): dataset.load(i).mask for i in range(len(dataset))}

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
                "benco_px_f1", "benco_px_iou", "benco_img_acc"):
        assert summary[key] == pytest.approx(1.0, abs=1e-6), key
    table = format_table(results)
    assert "px_f1_best" in table and "benco_px_f1" in table and dataset.name in table


def test_cli_with_the_torch_backend(tmp_path, capsys):
    data = write_pairs(tmp_path / "set", count=2, pristine=1)
    torch.manual_seed(0)
    torch.save({"epoch": 1, "state_dict": build_trufor("tiny").state_dict()}, tmp_path / "tiny.pth.tar")
    out = tmp_path / "results.json"
    code = main(["--data", str(data), "--backend", "torch", "--checkpoint", str(tmp_path / "tiny.pth.tar"),
                 "--preset", "tiny", "--json", str(out), "--threads", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| dataset" in printed and "torch (" in printed
    results = json.loads(out.read_text())
    summary = next(iter(results["datasets"].values()))
    assert summary["images"] == 3 and summary["forged"] == 2 and 0 <= summary["px_f1_best"] <= 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "onnxruntime"], "needs --artifacts"),
        (["--backend", "torch"], "needs --checkpoint"),
        (["--backend", "torch", "--checkpoint", "x", "--artifacts", "y"], "--artifacts is for --backend onnxruntime"),
    ],
)
def test_cli_usage_errors(tmp_path, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
