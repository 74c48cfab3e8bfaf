"""``python -m export.build``: exit codes, files written, messages."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reference.weights
from export.build import EXIT_NO_ENGINE, EXIT_OK, main
from export.manifest import load_manifest
from reference import build_trufor

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "export.build", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_unknown_precision_lists_valid_ones():
    result = _run("--precision", "fp8", "--preset", "tiny")
    assert result.returncode == 2
    assert "invalid choice: 'fp8'" in result.stderr
    assert all(name in result.stderr.split("choose from")[1] for name in ("fp32", "fp16", "int8"))


def test_bad_tile_and_misplaced_calib_are_refused():
    result = _run("--precision", "fp32", "--tile", "100")
    assert result.returncode == 2 and "multiple of 32" in result.stderr
    result = _run("--precision", "fp32", "--calib", "somewhere")
    assert result.returncode == 2 and "only used by int8" in result.stderr
    result = _run("--precision", "fp16", "--int8-layers", "dncnn")
    assert result.returncode == 2 and "--int8-layers is only used by int8" in result.stderr
    result = _run("--precision", "int8", "--int8-layers", "decoder")
    assert result.returncode == 2 and "invalid choice: 'decoder'" in result.stderr


def test_int8_layers_default_and_order():
    from export.build import parse_args

    assert parse_args(["--precision", "int8", "--random-weights"]).int8_layers == ("encoder_q", "encoder_fc1")
    chosen = parse_args(["--precision", "int8", "--random-weights", "--int8-layers", "encoder_fc1", "dncnn", "encoder_fc1"])
    assert chosen.int8_layers == ("encoder_fc1", "dncnn")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed: engines would be built")
def test_without_tensorrt_exits_2_and_says_why(tmp_path):
    """End to end in a subprocess: real export, files and manifest written, exit 2 and the reason."""
    out = tmp_path / "art"
    weights = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": build_trufor("tiny").state_dict(), "preset": "tiny"}, weights)
    result = _run("--weights", str(weights), "--precision", "fp32", "--out", str(out), "--tile", "32")
    assert result.returncode == EXIT_NO_ENGINE, result.stdout + result.stderr
    assert "No TensorRT engine was built" in result.stdout and "TensorRT is not installed" in result.stdout
    assert f"ONNX artifacts ready in {out}" in result.stdout
    assert f"python -m runtime.scan INPUT --out results --artifacts {out} --precision fp32" in result.stdout
    assert "write whole graph: done in" in result.stdout and "MB)" in result.stdout
    manifest = load_manifest(out, "fp32")  # the artifacts are complete and valid anyway
    assert manifest.preset == "tiny" and manifest.tile_size == 32
    assert manifest.config["conf_bn_variant"] == "docker"
    assert manifest.checkpoint == {"path": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                   "description": f"checkpoint {weights}"}
    assert f"python -m export.build --precision fp32 --out {out} --weights {weights}" in result.stdout


def test_weights_flags_choose_the_weights_and_their_preset(tmp_path, monkeypatch, default_model, capsys):
    from export.build import parse_args

    config = parse_args(["--precision", "fp32"])
    assert config.weights.path == default_model and config.preset == "trufor_lite"
    assert "no --weights given, using the project's default model trufor_lite" in capsys.readouterr().err
    official = tmp_path / "trufor.pth.tar"
    official.write_bytes(b"stands in for the authors' file")
    monkeypatch.setattr(reference.weights, "official_weights", lambda source: official)
    config = parse_args(["--precision", "fp32", "--weights", "official"])
    assert config.weights.path == official and config.preset == "trufor"
    config = parse_args(["--precision", "fp32", "--random-weights", "--preset", "tiny"])
    assert config.weights.random and config.preset == "tiny"
    with pytest.raises(SystemExit) as error:
        parse_args(["--precision", "fp32", "--weights", "official", "--preset", "tiny"])
    assert error.value.code == 2 and "--preset tiny was asked for, but the authors' release is a trufor model" in capsys.readouterr().err


def test_onnx_only_exits_0(artifacts_dir, monkeypatch, capsys):
    """The exit logic with --onnx-only; the export itself is the session's fp32 one (exported once)."""
    import export.pipeline

    folder = artifacts_dir("fp32")
    monkeypatch.setattr(export.pipeline, "export_artifacts", lambda config, step: folder / "manifest.fp32.json")
    argv = ["--random-weights", "--preset", "tiny", "--precision", "fp32", "--onnx-only", "--out", str(folder), "--tile", "64"]
    assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    assert "No TensorRT engine" not in printed
    assert f"python -m runtime.scan INPUT --out results --artifacts {folder} --precision fp32" in printed
    names = sorted(p.name for p in folder.glob("*fp32*"))
    graphs = [f"trufor_{graph}.fp32{variant}" for graph in ("score", "tile", "whole")
              for variant in ("-ortcpu.onnx", "-ortcpu.onnx.data", ".onnx")]
    assert names == ["manifest.fp32.json", *graphs]  # each graph, ONNX Runtime's optimized form and its initializers


def test_bench_reports_latency_and_memory(artifacts_dir, capsys):
    import json

    from export.bench import main as bench_main

    assert bench_main([str(artifacts_dir("fp32")), "--precision", "fp32", "--size", "48x40", "--runs", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input"] == [1, 48, 40, 3] and result["peak_rss_gb"] > 0 and len(result["wall_s"]) == 1
    assert bench_main([str(artifacts_dir("fp32")), "--precision", "fp32", "--runs", "0", "--optimized"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["graph"] == "trufor_whole.fp32-ortcpu.onnx" and result["load_cpu_s"] > 0 and result["wall_s"] == []


def test_bench_profile_sums_kernel_time_by_scope_and_runs_the_cpu_int8_form(artifacts_dir, tmp_path, capsys):
    import json

    from export.bench import main as bench_main

    folder = artifacts_dir("int8")
    capsys.readouterr()  # the export's own log, when this test made the artifacts
    argv = [str(folder), "--precision", "int8", "--size", "48x40", "--runs", "1", "--threads", "1",
            "--unsigned-int8", "--profile", str(tmp_path / "prof")]
    assert bench_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unsigned_int8"] is True
    by_scope, by_op = result["kernel_s_by_scope"], result["kernel_s_by_op"]
    assert {"dncnn", "backbone"} <= set(by_scope)
    assert "QLinearMatMul" in by_op, "the uint8 form runs fused int8 matmuls"
    assert sum(by_scope.values()) == pytest.approx(sum(by_op.values()), abs=1e-2)
    with pytest.raises(SystemExit):
        bench_main([str(artifacts_dir("fp32")), "--precision", "fp32", "--unsigned-int8"])
