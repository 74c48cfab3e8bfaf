"""runtime.calibrate and --threshold-file: a threshold for a false-alarm rate, its bound, and its use in a scan."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rt_helpers import noise_image

from runtime.calibrate import calibrate, images_needed, upper_bound
from runtime.calibrate import main as calibrate_main
from runtime.scan import main as scan_main
from runtime.errors import UsageError


def test_threshold_flags_at_most_the_target_share_and_is_the_smallest_that_does():
    scores = np.random.default_rng(0).random(1000)
    found = calibrate(scores, target_fpr=0.01, confidence=0.95, conservative=False)
    assert found["false_alarms"] == np.count_nonzero(scores > found["threshold"]) == 10
    assert np.count_nonzero(scores >= found["threshold"]) == 11, "any lower threshold flags one more"
    assert found["fpr"] == 0.01 and not found["sample_too_small"] and found["images_needed"] == 299
    assert found["fpr_upper_bound"] == pytest.approx(0.01690, abs=1e-5)  # Clopper-Pearson, 10 of 1000, one-sided 95%


def test_ties_never_flag_more_than_allowed():
    scores = np.array([0.9, 0.9, 0.9, 0.2, 0.1] * 20)
    found = calibrate(scores, target_fpr=0.1, confidence=0.95, conservative=False)
    assert found["threshold"] == 0.9 and found["false_alarms"] == 0


def test_the_bound_is_the_exact_binomial_one():
    # With no false alarm in n images, P(0 of n | rate u) = (1 - u)^n = 1 - confidence.
    for n in (10, 299, 5000):
        assert upper_bound(0, n, 0.95) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert images_needed(0.01, 0.95) == 299 and upper_bound(0, 299, 0.95) <= 0.01 < upper_bound(0, 298, 0.95)


def test_a_sample_too_small_for_the_rate_is_said_and_conservative_refuses():
    scores = np.linspace(0.0, 1.0, 150)
    found = calibrate(scores, target_fpr=0.01, confidence=0.95, conservative=False)
    assert found["sample_too_small"] and found["false_alarms"] == 1 and found["fpr_upper_bound"] > 0.01
    with pytest.raises(UsageError, match="150 pristine images are too few for --conservative"):
        calibrate(scores, target_fpr=0.01, confidence=0.95, conservative=True)


def test_conservative_picks_a_higher_threshold_whose_bound_meets_the_target():
    scores = np.random.default_rng(1).random(2000)
    plain = calibrate(scores, 0.01, 0.95, conservative=False)
    safe = calibrate(scores, 0.01, 0.95, conservative=True)
    assert safe["threshold"] > plain["threshold"] and safe["fpr_upper_bound"] <= 0.01 < plain["fpr_upper_bound"]
    assert upper_bound(safe["false_alarms"] + 1, 2000, 0.95) > 0.01, "and it is the lowest such threshold"


def write_images(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(noise_image(48, 48 + 8 * (i % 2), seed=seed + i)).save(folder / f"{i:02d}.png")
    return folder


def model_flags(checkpoint: Path) -> list[str]:
    return ["--weights", str(checkpoint), "--preset", "tiny", "--threads", "1", "--workers", "2"]


def test_calibrate_then_scan_with_the_threshold_file(tmp_path, tiny_checkpoint, capsys):
    pristine = write_images(tmp_path / "pristine", 10, seed=0)
    (pristine / "broken.png").write_text("not an image")
    forged = write_images(tmp_path / "forged", 4, seed=100)
    threshold_file = tmp_path / "threshold.json"
    argv = [str(pristine), "--target-fpr", "0.2", "--out", str(threshold_file), "--forged", str(forged)]
    assert calibrate_main([*argv, *model_flags(tiny_checkpoint)]) == 0
    printed = capsys.readouterr()
    assert "too few for a false-alarm rate of 0.2" in printed.err and "at least 14 are needed" in printed.err
    record = json.loads(threshold_file.read_text())
    scores = np.array([json.loads(line)["score"] for line in (tmp_path / "threshold.scans/pristine/results.jsonl").open()
                       if json.loads(line)["status"] == "ok"])  # fmt: skip
    assert record["pristine"]["scored"] == 10 and record["pristine"]["failed"] == 1
    assert record["pristine"]["false_alarms"] == np.count_nonzero(scores > record["threshold"]) == 2
    assert record["pristine"]["sample_too_small"] and record["model"]["model"].startswith("checkpoint ")
    assert record["forged"]["scored"] == 4 and 0 <= record["forged"]["detection_rate"] <= 1

    out = tmp_path / "scan"
    scan_argv = [str(forged), "--out", str(out), "--threshold-file", str(threshold_file), "--report"]
    assert scan_main([*scan_argv, *model_flags(tiny_checkpoint)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    source = f"--threshold-file {threshold_file.resolve()}"
    for row in rows:
        assert row["threshold"] == record["threshold"] and row["threshold_source"] == source
        assert row["forged"] == (row["score"] > record["threshold"])
    assert sum(row["forged"] for row in rows) == record["forged"]["detected"]
    settings = json.loads((out / "scan.json").read_text())
    assert settings["threshold_source"] == source and settings["threshold_calibration"]["target_fpr"] == 0.2
    assert settings["threshold_calibration"]["false_alarms"] == 2
    page = (out / "report.html").read_text()
    assert re.search(r"calibrated by .*runtime.calibrate.* for a false-alarm rate of 20%", page)
    assert "Too few pristine images for this rate" in page

    again = tmp_path / "again.json"
    scans = ["--scans", str(tmp_path / "threshold.scans")]
    assert calibrate_main([*argv[:3], "--out", str(again), *scans, *model_flags(tiny_checkpoint)]) == 0
    assert "0 to scan" in capsys.readouterr().out, "a rerun reuses the calibration scans"


def test_a_threshold_from_another_model_or_a_bad_file_is_refused(tmp_path, tiny_checkpoint, capsys):
    image = write_images(tmp_path / "in", 1, seed=0)
    threshold_file = tmp_path / "threshold.json"
    argv = [str(image), "--target-fpr", "0.5", "--out", str(threshold_file)]
    assert calibrate_main([*argv, *model_flags(tiny_checkpoint)]) == 0
    random_weights = ["--random-weights", "--preset", "tiny", "--threshold-file", str(threshold_file)]
    assert scan_main([str(image), "--out", str(tmp_path / "scan"), *random_weights]) == 2
    assert "was calibrated on checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"threshold": 0.3}')
    for flags, message in (
        (["--threshold-file", str(tmp_path / "bad.json")], "is not a threshold file"),
        (["--threshold-file", str(threshold_file), "--threshold", "0.3"], "both set the threshold"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            scan_main([str(image), "--out", str(tmp_path / "x"), *flags])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--target-fpr", "0"], "--target-fpr must be within (0, 1)"),
        (["--target-fpr", "0.1", "--confidence", "1"], "--confidence must be within (0, 1)"),
    ],
)
def test_calibrate_usage_errors(tmp_path, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        calibrate_main(["x", "--out", str(tmp_path / "t.json"), *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_rows_carry_the_confident_forged_fraction_computed_from_the_maps(tmp_path, tiny_checkpoint):
    folder = write_images(tmp_path / "in", 3, seed=3)
    for confidence, out in ((0.5, tmp_path / "half"), (0.0, tmp_path / "zero")):
        flags = ["--save-maps", "--confidence-threshold", str(confidence), *model_flags(tiny_checkpoint)]
        assert scan_main([str(folder), "--out", str(out), *flags]) == 0
        for line in (out / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            with np.load(out / "maps" / f"{row['relpath']}.npz") as fields:
                forged, confident = fields["map"] > 0.5, fields["conf"] > confidence
            assert row["forged_fraction"] == forged.mean()
            assert row["forged_fraction_confident"] == (forged & confident).mean() <= row["forged_fraction"]
            if confidence == 0.0:  # every pixel is confident
                assert row["forged_fraction_confident"] == row["forged_fraction"]
        settings = json.loads((out / "scan.json").read_text())
        assert settings["confidence_threshold"] == confidence and settings["map_threshold"] == 0.5
