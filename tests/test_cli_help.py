"""Every command's ``--help`` prints (argparse formats help strings with %, so one stray % breaks it)."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = (
    "reference.infer", "export.build", "runtime.scan", "runtime.calibrate", "runtime.report",
    "training.__main__", "training.recipe", "training.release",
    "benchmarks.evaluate", "benchmarks.cpu_backends", "benchmarks.int8_layers", "benchmarks.gpu_check",
    "benchmarks.tiling_vs_whole", "benchmarks.noiseprint_precision", "benchmarks.ray_scan",
)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_prints(module, capsys):
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--help"])
    assert exited.value.code == 0
    assert "usage: python -m" in capsys.readouterr().out
