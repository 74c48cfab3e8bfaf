"""benchmarks.gpu_check without a GPU: a clear message and exit status 2; the report's format."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import gpu_check
from engines.cuda import gpu_unavailable_reason


def test_no_gpu_exits_2_with_the_reason(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check, "no_gpu_reason", lambda: "cudaGetDeviceCount failed with cudaErrorNoDevice")
    assert gpu_check.main(["--out", str(tmp_path / "r.md")]) == gpu_check.EXIT_NO_GPU == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU here (cudaGetDeviceCount failed with cudaErrorNoDevice); nothing was run" in err
    assert not (tmp_path / "r.md").exists()


def test_the_command_on_this_machine_when_it_has_no_gpu(tmp_path):
    if gpu_unavailable_reason() is None:
        pytest.skip("this machine has a CUDA GPU; gpu_check would run the full check")
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path / "r.md")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no CUDA GPU here" in done.stderr


def test_report_lists_environment_tests_and_rows():
    rows = [{"backend": "torch", "precision": "fp16", "size": "512x512", "mode": "whole", "latency_p50_ms": 5.1,
             "latency_p90_ms": 5.5, "latency_p99_ms": 6.0, "images_per_s": 190.0, "stages_ms": {"decode": 2.0}},
            {"backend": "tensorrt", "precision": "int8", "size": "1024x1024", "mode": "pipelined", "images_per_s": 400.0,
             "gpu_busy": 0.95},
            {"backend": "onnxruntime-cuda", "precision": "fp32", "error": "RuntimeError: boom"}]
    tests = {"command": "pytest -m gpu", "returncode": 0, "summary": "12 passed", "skips": []}
    text = gpu_check.report({"gpu": "NVIDIA H100", "command": "python -m benchmarks.gpu_check"}, tests, rows)
    assert "| gpu | `NVIDIA H100` |" in text and "**PASSED**, 12 passed" in text
    assert "| torch | fp16 | 512x512 | whole | 5.1 | 5.5 | 6.0 | 190.0 | decode 2.0 |  |" in text
    assert "GPU busy 95% of wall time" in text and "RuntimeError: boom" in text
