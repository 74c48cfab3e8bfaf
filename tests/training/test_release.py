"""Releasing a phase-3 checkpoint for the default (docker) BN eps keeps its outputs."""

from __future__ import annotations

import torch
from trufor_testing import randomize_

from reference import build_trufor
from reference.checkpoint import read_checkpoint
from training.loop import save_checkpoint
from training.release import CONF_BN_VAR, release


def trained_like_checkpoint(tmp_path, small_variances=True):
    """A tiny model with non-trivial weights, saved as phase 3 saves (trained with eps 1e-3)."""
    model = randomize_(build_trufor("tiny", conf_bn_variant="train"), seed=7)
    if small_variances:  # they make the eps matter
        with torch.no_grad():
            model.decode_head_conf.linear_fuse[1].running_var.uniform_(1e-3, 1e-2)
    path = tmp_path / "best.pth.tar"
    save_checkpoint(path, {"epoch": 3, "best_value": 0.9, "best_key": "avg_img_bacc", "state_dict": model.state_dict(),
                           "optimizer": {"state": {}, "param_groups": []}, "iteration": 30, "phase": 3, "preset": "tiny"})
    return path, model


def outputs(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    return out.conf_logits, out.det_logit, out.loc_logits


def test_released_file_reproduces_the_training_eps_under_the_docker_eps(tmp_path):
    path, _ = trained_like_checkpoint(tmp_path)
    release(path, tmp_path / "model.pth.tar", None, "train", "docker", "float32")
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    as_trained = outputs(build_trufor("tiny", path, conf_bn_variant="train"), x)
    released = outputs(build_trufor("tiny", tmp_path / "model.pth.tar"), x)  # default: docker eps
    unreleased = outputs(build_trufor("tiny", path), x)
    for a, b in zip(as_trained, released):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (as_trained[0] - unreleased[0]).abs().max() > 1e-3, "the eps must matter in this test"
    saved = read_checkpoint(tmp_path / "model.pth.tar")
    assert "optimizer" not in saved and saved["preset"] == "tiny" and saved["conf_bn_variant"] == "docker"
    original = read_checkpoint(path)["state_dict"][CONF_BN_VAR]
    torch.testing.assert_close(saved["state_dict"][CONF_BN_VAR], original + (1e-3 - 1e-5))


def test_float16_release_is_smaller_and_close(tmp_path):
    path, _ = trained_like_checkpoint(tmp_path, small_variances=False)
    release(path, tmp_path / "full.pth.tar", None, "train", "docker", "float32")
    release(path, tmp_path / "half.pth.tar", None, "train", "docker", "float16")
    assert (tmp_path / "half.pth.tar").stat().st_size < 0.6 * (tmp_path / "full.pth.tar").stat().st_size
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    full = outputs(build_trufor("tiny", tmp_path / "full.pth.tar"), x)
    half = outputs(build_trufor("tiny", tmp_path / "half.pth.tar"), x)
    assert all(p.dtype == torch.float32 for p in build_trufor("tiny", tmp_path / "half.pth.tar").parameters())
    for a, b in zip(full, half):
        assert float((a - b).abs().max()) < 1e-2 * max(1.0, float(a.abs().max()))
