"""The registry: ``auto`` picks the fastest backend that runs the asked-for model, and a new backend is one
``Backend`` class plus one registry entry, with nothing else in the runtime to change."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from rt_helpers import noise_image, tiny_with_weights

from export.contract import graph_specs
from export.errors import BackendUnavailableError
from runtime.backends import BACKENDS, BackendRequest, choose_backend
from runtime.runners.base import Backend, BaseRunner, ModelIdentity
from runtime.scan import main


def test_auto_prefers_onnxruntime_only_for_the_same_model(ort_artifacts, tmp_path, default_model):
    out, _ = ort_artifacts
    same = out.parent / "tiny.pth.tar"
    other = tmp_path / "other.pth.tar"
    torch.save({"state_dict": tiny_with_weights(seed=9).state_dict(), "epoch": 0}, other)
    assert choose_backend(BackendRequest(artifacts=out)).name == "onnxruntime"  # no weights flag: what they hold
    assert choose_backend(BackendRequest(artifacts=out, weights=same, preset="tiny")).name == "onnxruntime"
    assert choose_backend(BackendRequest(artifacts=out, weights=other, preset="tiny")).name == "torch"
    assert choose_backend(BackendRequest(artifacts=out, random_weights=True, preset="tiny")).name == "torch"
    assert choose_backend(BackendRequest(artifacts=out, weights=default_model)).name == "torch"
    assert choose_backend(BackendRequest(artifacts=out, preset="trufor_lite")).name == "torch"  # the default model
    with pytest.raises(BackendUnavailableError, match=r"torch: runs fp32 \(and fp16 with --device cuda\), but --precision int8"):
        choose_backend(BackendRequest(artifacts=out, precision="int8", weights=same, preset="tiny"))
    with pytest.raises(BackendUnavailableError, match=r"torch: runs .*but --precision fp16 was given without --device cuda"):
        choose_backend(BackendRequest(artifacts=out, precision="fp16", weights=same, preset="tiny"))


def test_the_artifacts_name_the_weights_they_were_exported_from(ort_artifacts):
    from runtime.runners.ort_runner import OrtBackend

    out, _ = ort_artifacts
    same = (out.parent / "tiny.pth.tar").resolve()
    sha256 = hashlib.sha256(same.read_bytes()).hexdigest()
    description = OrtBackend(out, "fp32").identity.description
    assert description == f"artifacts {out.resolve()} (checkpoint {same}, sha256 {sha256})"


class BrightnessRunner(BaseRunner):
    """A stand-in model: the map is each pixel's brightness (the tile graph passes it on as its second
    class, which stitching blends back to the same values), and the score is its mean."""

    def infer_impl(self, feed):
        if self.graph == "score":
            brightness = feed["loc_logits"][:, 1]
        else:
            brightness = feed["image"].mean(axis=3, dtype=np.float32) / 255
        if self.graph == "tile":
            return {"loc_logits": np.stack([1 - brightness, brightness], axis=1), "conf_logits": brightness[:, None]}
        return {"map": brightness, "conf": 1 - brightness, "score": brightness.mean(axis=(1, 2))}


class BrightnessBackend(Backend):
    """The whole of a new backend: what it is, which flags it reads, and how it is made."""

    name = "brightness"
    summary = "image brightness (a test stand-in)"
    precisions = ("fp32",)
    flags = ("--threads",)
    model_source = "brightness needs no model"
    auto = False

    @classmethod
    def create(cls, request):
        runners = {graph: BrightnessRunner(spec) for graph, spec in graph_specs(32).items()}
        return cls("fp32", 32, runners, device="cpu", identity=ModelIdentity("brightness of the pixels"))


def test_a_new_backend_is_one_class_and_one_registry_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, BrightnessBackend.name, BrightnessBackend)
    for i, (height, width) in enumerate(((48, 64), (80, 120))):
        Image.fromarray(noise_image(height, width, seed=i)).save(tmp_path / f"{i}.png")
    out = tmp_path / "scan"
    argv = [str(tmp_path / "0.png"), str(tmp_path / "1.png"), "--out", str(out), "--backend", "brightness",
            "--threads", "1", "--tile-threshold-pixels", "4000", "--save-maps"]  # the second image runs tiled
    assert main(argv) == 0
    rows = sorted((json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()),
                  key=lambda row: row["relpath"])  # decoding threads finish in any order
    assert [(row["backend"], row["mode"]) for row in rows] == [("brightness", "whole"), ("brightness", "tiled")]
    for row in rows:
        rgb = np.asarray(Image.open(tmp_path / row["relpath"]))
        assert row["score"] == pytest.approx(rgb.mean() / 255, abs=1e-3)
    assert json.loads((out / "scan.json").read_text())["model"] == "brightness of the pixels"
    assert "RANDOM WEIGHTS" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "0.png"), "--out", str(out), "--backend", "brightness", "--weights", "w.pth"])
    assert ("--weights is read by --backend torch only, but --backend brightness was given; brightness needs no "
            "model") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "or brightness (image brightness (a test stand-in)), never chosen by auto" in " ".join(capsys.readouterr().out.split())
