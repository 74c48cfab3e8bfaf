"""The project's default model (reference/default_model/trufor_lite.pth.tar): it loads, detects a
forgery it never saw, and goes through export and scan unchanged.

The forgery is an inpainting on a scene of a simulated camera the model never trained on (training
used cameras 0 to 63; this is camera 1000 and up). One sample is an existence check; the held-out
and COVERAGE figures are in BENCHMARKS.md (``python -m benchmarks.evaluate``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from reference.model import probabilities, to_tensor
from reference.weights import DEFAULT_MODEL, resolve_weights
from training.data.forgery import ForgeryGenerator
from training.data.sources import SimulatedCameraSource

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"{DEFAULT_MODEL} is not in this checkout")


@pytest.fixture(scope="module")
def default_model():
    weights = resolve_weights()
    assert weights.path == DEFAULT_MODEL and weights.preset == "trufor_lite"
    return weights.build()


@pytest.fixture(scope="module")
def unseen_forgery():
    generator = ForgeryGenerator(SimulatedCameraSource(8, first_camera=1000))
    return generator.sample(np.random.default_rng([2026, 2]), 256, 256, "inpaint")


def predict(model, rgb: np.ndarray):
    with torch.no_grad():
        result = probabilities(model(to_tensor(rgb)))
    return result.map[0].numpy(), float(result.score[0])


def best_iou(prob_map: np.ndarray, mask: np.ndarray) -> float:
    truth = mask > 0
    ious = []
    for threshold in np.linspace(0.05, 0.95, 19):
        predicted = prob_map > threshold
        ious.append((predicted & truth).sum() / max((predicted | truth).sum(), 1))
    return float(max(ious))


def test_it_localizes_a_forgery_it_never_saw_and_scores_it_above_the_original(default_model, unseen_forgery):
    prob_map, score = predict(default_model, unseen_forgery.image)
    _, original_score = predict(default_model, unseen_forgery.base)
    assert best_iou(prob_map, unseen_forgery.mask) > 0.5
    assert score > original_score


def test_export_and_scan_give_the_reference_outputs(default_model, unseen_forgery, tmp_path):
    """No --weights anywhere: export and scan both take the default model, and say so."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(unseen_forgery.image).save(images / "forged.png")
    artifacts, results = tmp_path / "artifacts", tmp_path / "results"
    export = subprocess.run([sys.executable, "-m", "export.build", "--precision", "fp32", "--onnx-only",
                             "--out", str(artifacts)], capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr
    assert "the project's default model trufor_lite" in export.stderr
    scan = subprocess.run([sys.executable, "-m", "runtime.scan", str(images), "--out", str(results),
                           "--artifacts", str(artifacts), "--backend", "onnxruntime", "--save-maps"],
                          capture_output=True, text=True, timeout=600)
    assert scan.returncode == 0, scan.stderr
    row = json.loads((results / "results.jsonl").read_text().splitlines()[-1])
    prob_map, score = predict(default_model, unseen_forgery.image)
    assert row["score"] == pytest.approx(score, abs=1e-4)
    with np.load(results / "maps" / "forged.png.npz") as saved:
        assert np.abs(saved["map"] - prob_map).max() < 1e-4
