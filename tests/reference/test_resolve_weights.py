"""``resolve_weights`` and the shared weights flags: the default model (announced once), ``official``, a zip,
a checkpoint path, the preset a file records, contradictions, random weights, a tree without the default model."""

from __future__ import annotations

import argparse
import hashlib
import zipfile

import pytest
import torch

import reference.weights
from reference import build_trufor
from reference.errors import CheckpointError, UsageError
from reference.weights import CHECKPOINT_NAME, ResolvedWeights, WeightsSource, resolve_weights
from reference.weights_args import FLAGS, WeightsArgs

NOTICE = ("trufor: no --weights given, using the project's default model trufor_lite (see "
          "reference/default_model/MODEL_CARD.md); for casework use --weights official")


def save(path, preset=None):
    payload = {"state_dict": build_trufor("tiny").state_dict(), "epoch": 0}
    torch.save(payload if preset is None else {**payload, "preset": preset}, path)
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    WeightsArgs().add_to(parser)
    return parser.parse_args(argv)


def test_no_weights_is_the_default_model_announced_once(default_model, capsys):
    first, second = resolve_weights(), resolve_weights()
    assert first == second and first.path == default_model and first.preset == "trufor_lite" and first.argv == ()
    assert first.description == f"the project's default model trufor_lite ({default_model})"
    assert capsys.readouterr().err.splitlines() == [NOTICE]
    assert first.sha256 == hashlib.sha256(default_model.read_bytes()).hexdigest()
    model = first.build()
    assert model.config == build_trufor("trufor_lite").config and not model.training


def test_a_tree_without_the_default_model_says_what_to_pass(no_default_model):
    with pytest.raises(CheckpointError) as error:
        resolve_weights()
    message = str(error.value)
    assert str(no_default_model) in message and "--weights official" in message and "--random-weights" in message


def test_official_is_fetched_and_is_the_trufor_preset(tmp_path, monkeypatch):
    fetched = []
    official = tmp_path / CHECKPOINT_NAME
    official.write_bytes(b"stands in for the authors' file: never read to resolve it")
    monkeypatch.setattr(reference.weights, "official_weights", lambda source: fetched.append(source) or official)
    weights = resolve_weights("official")
    assert (weights.path, weights.preset, weights.argv) == (official, "trufor", ("--weights", "official"))
    assert "the authors' TruFor weights" in weights.description
    args = parse("--weights", "official", "--weights-url", "http://127.0.0.1:9/w.zip", "--weights-md5", "ABC")
    assert WeightsArgs().parse(args).path == official
    assert fetched[-1] == WeightsSource("http://127.0.0.1:9/w.zip", "abc")
    with pytest.raises(CheckpointError, match="--preset tiny was asked for, but the authors' release is a trufor model"):
        resolve_weights("official", preset="tiny")


def test_a_zip_is_the_authors_release(tmp_path, monkeypatch):
    checkpoint = save(tmp_path / "inner.pth.tar")
    archive = tmp_path / "TruFor_weights.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(checkpoint, f"weights/{CHECKPOINT_NAME}")
    monkeypatch.setenv("TRUFOR_WEIGHTS_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    weights = resolve_weights(archive)
    assert weights.path.read_bytes() == checkpoint.read_bytes() and weights.preset == "trufor"
    assert weights.argv == ("--weights", str(archive))


def test_a_checkpoint_path_brings_its_recorded_preset(tmp_path):
    recorded = resolve_weights(save(tmp_path / "rec.pth.tar", preset="tiny"))
    assert recorded.preset == "tiny" and recorded.argv == ("--weights", str(tmp_path / "rec.pth.tar"))
    assert resolve_weights(tmp_path / "rec.pth.tar", preset="tiny") == recorded
    bare = save(tmp_path / "bare.pth.tar")
    assert resolve_weights(bare).preset == "trufor"  # records none: the default preset
    asked = resolve_weights(bare, preset="tiny")
    assert asked.preset == "tiny" and asked.argv == ("--weights", str(bare), "--preset", "tiny")
    assert asked.build().config == build_trufor("tiny").config  # strict load into the preset asked for
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(tmp_path / "missing.pth.tar")
    torch.save({"state_dict": {}, "preset": "huge"}, tmp_path / "odd.pth.tar")
    with pytest.raises(CheckpointError, match="records preset 'huge'"):
        resolve_weights(tmp_path / "odd.pth.tar")


def test_a_preset_that_contradicts_the_recorded_one_is_refused(tmp_path, default_model):
    with pytest.raises(CheckpointError) as error:
        resolve_weights(save(tmp_path / "rec.pth.tar", preset="tiny"), preset="trufor")
    assert "--preset trufor was asked for" in str(error.value) and "drop --preset or pass --preset tiny" in str(error.value)
    with pytest.raises(CheckpointError, match="the project's default model is a trufor_lite model"):
        resolve_weights(preset="tiny")
    assert resolve_weights(preset="trufor_lite").path == default_model
    with pytest.raises(CheckpointError, match="unknown preset 'huge'"):
        resolve_weights(preset="huge")


def test_random_weights_only_when_asked_for(default_model):
    weights = resolve_weights(preset="tiny", random_weights=True)
    assert weights.random and weights.path is None and weights.sha256 is None
    assert (weights.preset, weights.description) == ("tiny", "random weights of preset tiny")
    assert resolve_weights(random_weights=True).preset == "trufor"
    assert resolve_weights(weights) is weights  # already resolved
    with pytest.raises(CheckpointError, match="pick one"):
        resolve_weights("official", random_weights=True)
    with pytest.raises(CheckpointError, match="random weights were asked for"):
        resolve_weights(resolve_weights(), random_weights=True)
    assert not resolve_weights().random  # nothing else gives random weights


def test_weights_flags_parse_check_and_forward(tmp_path, default_model, capsys):
    flags = WeightsArgs()
    assert flags.parse(parse()).path == default_model
    assert flags.parse(parse(), defer_default=True) is None
    assert flags.parse(parse("--random-weights", "--preset", "tiny")) == resolve_weights(preset="tiny", random_weights=True)
    path = save(tmp_path / "w.pth.tar", preset="tiny")
    args = parse("--weights", str(path), "--preset", "tiny")
    assert flags.given(args) == ["--weights", "--preset"] and flags.argv(args) == ["--weights", str(path), "--preset", "tiny"]
    assert flags.parse(parse(*flags.argv(args))) == flags.parse(args)
    for argv, message in (
        (("--weights", str(path), "--random-weights"), "--random-weights and --weights"),
        (("--weights", str(path), "--weights-url", "http://127.0.0.1:9/w.zip"), "--weights-url is where --weights official"),
        (("--weights-md5", "abc"), "--weights-md5 checks the archive"),
    ):
        with pytest.raises(UsageError, match=message):
            flags.parse(parse(*argv))
    parser = argparse.ArgumentParser(prog="cli")
    flags.add_to(parser, note=lambda flag: f" [{flag}]")
    assert all(f"[{flag}]" in parser.format_help() for flag in FLAGS)
    with pytest.raises(SystemExit) as error:
        flags.parse_or_exit(parser.parse_args(["--weights", str(tmp_path / "nope.pth.tar")]), parser)
    assert error.value.code == 2 and "cli: error: weights file" in capsys.readouterr().err


def test_resolved_weights_of_the_python_api(default_model):
    from reference.predictor import ReferencePredictor

    predictor = ReferencePredictor.from_weights(random_weights=True, preset="tiny")
    assert predictor.weights.random and predictor.weights.preset == "tiny"
    assert ReferencePredictor.from_weights().weights.path == default_model
    assert isinstance(predictor.weights, ResolvedWeights)
