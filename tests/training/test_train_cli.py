"""``python -m training``: settings from defaults, a YAML file and flags; refusals name the problem."""

from __future__ import annotations

import json

import pytest
import yaml

from training.__main__ import main
from training.config import TrainConfig, resolve

TINY = ["--preset", "tiny", "--crop", "48", "--synthetic-count", "4", "--val-count", "1", "--threads", "1"]


def test_yaml_gives_defaults_and_flags_override_them(tmp_path, capsys):
    config_file = tmp_path / "p2.yaml"
    config_file.write_text(yaml.safe_dump({"lr": 0.01, "batch_size": 8, "iterations": 1, "noiseprint": "random",
                                           "jpeg-quality": [50, 90]}))
    out = tmp_path / "run"
    assert main(["--phase", "2", "--config", str(config_file), "--batch-size", "2", "--out", str(out), *TINY]) == 0
    saved = yaml.safe_load((out / "args.yaml").read_text())
    assert saved["lr"] == 0.01 and saved["batch_size"] == 2 and saved["jpeg_quality"] == [50, 90]
    assert saved["momentum"] == 0.9 and saved["weight_decay"] == 5e-4 and saved["poly_power"] == 0.9
    assert json.loads((out / "args.json").read_text()) == saved
    assert "it 1/1" in capsys.readouterr().out


def test_official_defaults():
    config = TrainConfig(phase=2, noiseprint="random")
    assert (config.lr, config.momentum, config.weight_decay, config.poly_power) == (0.005, 0.9, 5e-4, 0.9)
    assert (config.epochs, config.batch_size, config.crop) == (100, 18, 512)
    assert (config.scale_p, config.scale_limit, config.jpeg_p, tuple(config.jpeg_quality)) == (0.5, 0.5, 0.5, (30, 100))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--phase", "3"], "phase 3 starts from the phase-2 checkpoint"),
        (["--phase", "2"], "phase 2 needs Noiseprint++ weights"),
        (["--phase", "1", "--mit", "x.pth"], "phase-2 option"),
        (["--phase", "2", "--noiseprint", "random", "--preset", "huge"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_setting_is_refused(tmp_path):
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        resolve({"phase": 2, "config": str(config_file)})


def test_resume_refuses_changed_settings(tmp_path):
    out = tmp_path / "run"
    assert main(["--phase", "2", "--noiseprint", "random", "--iterations", "1", "--out", str(out), *TINY]) == 0
    with pytest.raises(ValueError, match="lr: 0.005 \\(saved\\) vs 0.1 \\(now\\)"):
        resolve({"phase": 2, "out": str(out), "resume": True, "lr": 0.1})
    resumed = resolve({"phase": 2, "out": str(out), "resume": True, "workers": 1})
    assert resumed.crop == 48 and resumed.workers == 1 and resumed.resume


def test_missing_data_folder_fails_with_exit_1(tmp_path, capsys):
    code = main(["--phase", "2", "--noiseprint", "random", "--data", f"pairs:{tmp_path / 'nothing'}", "--out", str(tmp_path / "r"), *TINY])
    assert code == 1
    assert "nothing does not exist" in capsys.readouterr().err
