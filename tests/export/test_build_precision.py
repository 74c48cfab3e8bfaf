"""export.build --precision auto (the default): fp16 where an NVIDIA GPU is visible, fp32 on a CPU, said
at the start; int8 on a CPU comes with the note that it does not pay there."""

from __future__ import annotations

import pytest

from export import auto_precision, build
from export.auto_precision import INT8_CPU_NOTE, INT8_CPU_SPEEDUPS, INT8_WORTH_IT, for_export, visible_nvidia_gpus


def test_cuda_visible_devices_can_hide_every_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_nvidia_gpus() == 0
    assert for_export().precision == "fp32"


@pytest.mark.parametrize(("gpus", "precision", "said"), [(0, "fp32", "no NVIDIA GPU visible here"),
                                                         (2, "fp16", "2 NVIDIA GPUs visible here")])
def test_auto_is_the_default_and_says_what_it_picked(monkeypatch, capsys, gpus, precision, said):
    monkeypatch.setattr(auto_precision, "visible_nvidia_gpus", lambda: gpus)
    config = build.parse_args(["--random-weights", "--preset", "tiny", "--onnx-only"])
    assert config.precision == precision
    printed = capsys.readouterr().out
    assert printed.startswith(f"--precision auto: {precision} (") and said in printed


def test_int8_on_a_cpu_is_not_recommended_citing_the_measurement(monkeypatch, capsys):
    monkeypatch.setattr(build, "visible_nvidia_gpus", lambda: 0)
    assert build.parse_args(["--precision", "int8", "--random-weights", "--preset", "tiny"]).precision == "int8"
    assert f"note: {INT8_CPU_NOTE}" in capsys.readouterr().out
    assert all(speedup < INT8_WORTH_IT for speedup in INT8_CPU_SPEEDUPS.values())  # else auto should offer it
    assert "BENCHMARKS.md" in INT8_CPU_NOTE and "1.15x" in INT8_CPU_NOTE
    help_text = build._parser().format_help()
    assert "auto (default)" in " ".join(help_text.split()) and "int8 is not recommended on a CPU" in " ".join(help_text.split())
