"""The plain-export baseline of ``benchmarks.cpu_backends`` computes the same model as the exported graphs."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch
from export_helpers import export_copy, random_image, reference_outputs

from benchmarks.cpu_backends import _plain_predict, export_plain, main, measure


def test_plain_baseline_runs_the_reference_model(tmp_path, reference_model):
    graph = tmp_path / "plain.onnx"
    export_plain(export_copy(reference_model), graph)
    rgb = random_image((1, 45, 70, 3), seed=3)
    loc_logits, conf_logits, det_logit, _ = _plain_predict(graph, threads=1)(rgb[0])
    ref = reference_outputs(reference_model, rgb)
    np.testing.assert_allclose(loc_logits, ref["loc_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(conf_logits, ref["conf_logits"], rtol=0, atol=1e-4)
    assert det_logit.shape == (1, 1)
    row = measure("plain", "40x56", argparse.Namespace(plain_graph=str(graph), threads=1, repeats=1))
    assert row["run"] == "plain" and row["mode"] == "whole" and row["median_s"] > 0


def test_the_torch_run_takes_the_weights_flags_and_names_its_model(tmp_path, tiny_model, capsys):
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": tiny_model.state_dict(), "preset": "tiny"}, path)
    args = argparse.Namespace(artifacts=str(tmp_path), weights=str(path), weights_url=None, weights_md5=None, preset=None,
                              random_weights=False, threads=1, repeats=1)
    row = measure("torch", "40x56", args)
    assert row["run"] == "torch" and row["model"].startswith(f"checkpoint {path}, sha256 ")
    with pytest.raises(SystemExit) as error:
        main(["--weights", str(path), "--random-weights"])
    assert error.value.code == 2 and "pick one" in capsys.readouterr().err


@pytest.fixture
def ort_artifacts_for_bench(artifacts_dir):
    return artifacts_dir("fp32")


def test_whole_process_and_throughput_rows(ort_artifacts_for_bench, tmp_path):
    """The scan rows run ``python -m runtime.scan`` for real: a whole-process row per size, and forward-only
    against scan rates on the same mixed images."""
    from benchmarks.scan_process import throughput_rows, whole_process_row, write_images

    args = argparse.Namespace(artifacts=str(ort_artifacts_for_bench), preset="tiny", threads=1, repeats=1, mixed_images=3)
    row = whole_process_row("scan:onnxruntime:fp32", "40x56", args, tmp_path)
    assert "error" not in row, row
    assert row["mode"] == "whole process" and row["median_s"] > 0 and row["peak_rss_gb"] > 0
    forwarded = [sys.executable, "-m", "benchmarks.cpu_backends", "--artifacts", args.artifacts, "--threads", "1"]
    write_images(tmp_path / "mixed", 3, [(40, 56), (64, 48)])
    forward, single, scan = throughput_rows("throughput:onnxruntime:fp32", args, tmp_path, forwarded)
    assert (forward["mode"], single["mode"], scan["mode"]) == (
        "forward only", "forward only, one image per call", "runtime.scan"), (forward, single, scan)
    assert forward["images_per_s"] > 0 and scan["ratio_to_forward"] == round(scan["images_per_s"] / forward["images_per_s"], 3)
