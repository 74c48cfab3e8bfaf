"""A trained checkpoint exports to ONNX and runs on the ONNX Runtime backend like the reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from training_helpers import tiny_config, write_pairs

from benchmarks.evaluate import evaluate, onnxruntime_predictor, torch_predictor
from training.data.datasets import open_file_dataset
from training.loop import LAST
from training.phases import run
from training.release import release

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the ONNX export alone takes ~20 s of CPU


def test_trained_checkpoint_exports_and_matches_on_onnxruntime(tmp_path):
    run(tiny_config(tmp_path / "p2", 2, iterations=2))
    run(tiny_config(tmp_path / "p3", 3, iterations=2, init=str(tmp_path / "p2" / LAST)))
    model = tmp_path / "model.pth.tar"
    release(tmp_path / "p3" / LAST, model, None, "train", "docker", "float32")
    artifacts = tmp_path / "artifacts"
    done = subprocess.run(
        [sys.executable, "-m", "export.build", "--preset", "tiny", "--weights", str(model), "--precision", "fp32",
         "--onnx-only", "--out", str(artifacts), "--tile", "64"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    dataset = open_file_dataset(str(write_pairs(tmp_path / "set", count=2, pristine=1)))
    torch_predict, _ = torch_predictor(model, "tiny", "cpu", "docker")
    ort_predict, _, close = onnxruntime_predictor(artifacts, "fp32", 1)
    try:
        for index in range(len(dataset)):
            image = dataset.load(index).image
            a, b = torch_predict(image), ort_predict(image)
            np.testing.assert_allclose(b.map, a.map, atol=1e-4, err_msg="map")
            np.testing.assert_allclose(b.conf, a.conf, atol=1e-4, err_msg="conf")
            assert abs(b.score - a.score) < 1e-4
        via_ort = evaluate(ort_predict, [dataset])["mean"]
    finally:
        close()
    via_torch = evaluate(torch_predict, [dataset])["mean"]
    for key in ("px_f1_best", "px_auc", "img_auc"):
        assert via_ort[key] == pytest.approx(via_torch[key], abs=1e-3), key
