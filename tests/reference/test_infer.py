"""The official-compatible CLI: npz per image named by relative path, skip existing, bad files reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from trufor_testing import randomize_
from reference import build_trufor
from reference.infer import main
from reference.inputs import collect_inputs
from reference.errors import TruForError


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": randomize_(build_trufor("tiny"), seed=2).state_dict(), "epoch": 0}, path)
    return path


def write_image(path, size=(48, 40), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_writes_official_fields_per_relative_path_and_skips_existing(tmp_path, checkpoint, capsys):
    images = tmp_path / "images"
    write_image(images / "a.png")
    write_image(images / "sub" / "a.png", seed=1)
    (images / "sub" / "notes.txt").write_text("not an image, not picked up from a folder")
    out = tmp_path / "out"
    args = ["--weights", str(checkpoint), "--preset", "tiny", "--input", str(images), "--output", str(out), "--save-np"]
    assert main(args) == 0
    produced = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert produced == ["a.png.npz", "sub/a.png.npz"]
    with np.load(out / "sub" / "a.png.npz") as npz:
        assert set(npz.files) == {"map", "conf", "score", "imgsize", "np++"}
        assert npz["map"].shape == (40, 48) and npz["map"].dtype == np.float32
        assert npz["score"].shape == () and 0.0 <= float(npz["score"]) <= 1.0
        assert tuple(npz["imgsize"]) == (40, 48)
    stamp = (out / "a.png.npz").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "a.png.npz").stat().st_mtime_ns == stamp
    assert "2 skipped" in capsys.readouterr().out


def test_reference_cli_matches_the_python_api(tmp_path, checkpoint):
    pixels = write_image(tmp_path / "one.png")
    assert main(["--weights", str(checkpoint), "--preset", "tiny", "--input", str(tmp_path / "one.png"), "--output", str(tmp_path / "o")]) == 0
    model = build_trufor("tiny", checkpoint=checkpoint)
    from reference.predictor import ReferencePredictor

    expected = ReferencePredictor(model).predict(pixels)
    with np.load(tmp_path / "o" / "one.png.npz") as npz:
        np.testing.assert_array_equal(npz["map"], expected.map)
        assert float(npz["score"]) == pytest.approx(expected.score, abs=0)


def test_bad_files_are_reported_and_the_run_continues(tmp_path, checkpoint, capsys):
    images = tmp_path / "images"
    write_image(images / "good.png")
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.png").write_text("hello")
    Image.new("RGB", (20, 20)).save(images / "small.png")
    out = tmp_path / "out"
    status = main(["--weights", str(checkpoint), "--preset", "tiny", "--input", str(images), "--output", str(out)])
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.png.npz"]  # no temp files, nothing for bad inputs
    err = capsys.readouterr()
    assert "empty.jpg: decode_error" in err.err and "small.png: too_small" in err.err
    assert "FAILED" in err.out


def test_missing_input_and_model_choice_are_usage_errors(tmp_path, checkpoint, no_default_model, capsys):
    assert main(["--weights", str(checkpoint), "--preset", "tiny", "--input", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--random-weights", "--weights", str(checkpoint), "--input", str(tmp_path), "--output", str(tmp_path)])
    assert exit_info.value.code == 2 and "pick one" in capsys.readouterr().err
    write_image(tmp_path / "one.png")
    assert main(["--input", str(tmp_path / "one.png"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "default model is not in this installation" in err and "--weights official" in err


def test_without_weights_the_default_model_runs_and_says_so(tmp_path, default_model, capsys):
    pixels = write_image(tmp_path / "one.png", size=(40, 36))
    assert main(["--input", str(tmp_path / "one.png"), "--output", str(tmp_path / "o")]) == 0
    assert "using the project's default model trufor_lite" in capsys.readouterr().err
    from reference.predictor import ReferencePredictor

    expected = ReferencePredictor(build_trufor("trufor_lite", checkpoint=default_model)).predict(pixels)
    with np.load(tmp_path / "o" / "one.png.npz") as npz:
        np.testing.assert_array_equal(npz["map"], expected.map)
        assert npz["map"].shape == (36, 40)


def test_collect_inputs_globs_lists_and_collisions(tmp_path):
    for rel in ("x/a.jpg", "x/b.png", "y/a.jpg"):
        write_image(tmp_path / rel)
    found = collect_inputs([str(tmp_path / "x" / "*.jpg")])
    assert [(f.path.name, f.relpath) for f in found] == [("a.jpg", "a.jpg")]
    nested = collect_inputs([str(tmp_path / "**" / "a.jpg")])
    assert sorted(f.relpath for f in nested) == ["x/a.jpg", "y/a.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\n{tmp_path / 'x' / 'b.png'}\n\n")
    assert [f.path for f in collect_inputs([f"@{listing}"])] == [tmp_path / "x" / "b.png"]
    with pytest.raises(TruForError, match="common parent folder"):
        collect_inputs([str(tmp_path / "x" / "a.jpg"), str(tmp_path / "y" / "a.jpg")])
    same_twice = collect_inputs([str(tmp_path / "x" / "a.jpg"), str(tmp_path / "x" / "a.jpg")])
    assert len(same_twice) == 1
