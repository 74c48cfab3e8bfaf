"""Each phase learns on a tiny preset, freezes what it must, and writes checkpoints the reference loads."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import tiny_config

from reference import build_trufor
from reference.checkpoint import read_checkpoint
from reference.errors import TruForError
from training.loop import (
    BEST,
    LAST,
    build_model,
    freeze_except,
    save_checkpoint,
    set_modes,
)
from training.phase1_noiseprint import NoiseprintPhase
from training.phase2_localization import LocalizationPhase
from training.phase3_detection import DetectionPhase
from training.phases import run as train

DEVICE = torch.device("cpu")


def overfit(phase, model, batch, steps: int, lr: float) -> list[float]:
    """SGD on one fixed batch, as the loop does it (frozen modules in eval mode, seeded steps)."""
    params = freeze_except(model, phase.trainable)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        torch.manual_seed(step)
        set_modes(model, phase.trainable)
        loss, _ = phase.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


def unchanged(before: dict, module: torch.nn.Module) -> bool:
    return all(torch.equal(before[name], tensor) for name, tensor in module.state_dict().items())


def fresh(phase_type, config):
    torch.set_num_threads(1)
    torch.manual_seed(config.seed)
    model = build_model(config)
    phase = phase_type(config, DEVICE)
    phase.initialize(model)
    return model, phase


def phase2_checkpoint(tmp_path) -> str:
    model, _ = fresh(LocalizationPhase, tiny_config(tmp_path / "p2init", 2))
    path = tmp_path / "phase2.pth.tar"
    save_checkpoint(path, {"epoch": 1, "best_value": None, "best_key": "avg_p-F1_smooth", "state_dict": model.state_dict(), "optimizer": {}})
    return str(path)


def test_phase1_contrastive_loss_falls_and_only_noiseprint_moves(tmp_path):
    model, phase = fresh(NoiseprintPhase, tiny_config(tmp_path, 1))
    batch = next(phase.batches(0, 0))
    others = snapshot(model.backbone)
    losses = overfit(phase, model, batch, steps=25, lr=0.05)
    assert min(losses[-3:]) < losses[0] - 0.05, losses
    assert unchanged(others, model.backbone)


def test_phase2_loss_falls_with_noiseprint_frozen(tmp_path):
    model, phase = fresh(LocalizationPhase, tiny_config(tmp_path, 2))
    batch = next(phase.batches(0, 0))
    noiseprint, conf_head = snapshot(model.dncnn), snapshot(model.decode_head_conf)
    losses = overfit(phase, model, batch, steps=20, lr=0.02)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.05, losses
    assert unchanged(noiseprint, model.dncnn), "Noiseprint++ (weights or BN statistics) changed in phase 2"
    assert unchanged(conf_head, model.decode_head_conf)


def test_phase3_loss_falls_with_everything_else_frozen(tmp_path):
    config = tiny_config(tmp_path, 3, init=phase2_checkpoint(tmp_path))
    model, phase = fresh(DetectionPhase, config)
    batch = next(phase.batches(0, 0))
    frozen = {name: snapshot(getattr(model, name)) for name in ("dncnn", "backbone", "decode_head")}
    conf_head = snapshot(model.decode_head_conf)
    losses = overfit(phase, model, batch, steps=30, lr=0.05)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.02, losses
    for name, before in frozen.items():
        assert unchanged(before, getattr(model, name)), f"{name} changed in phase 3"
    assert not unchanged(conf_head, model.decode_head_conf)


def test_phase3_starts_from_the_phase2_weights(tmp_path):
    path = phase2_checkpoint(tmp_path)
    model, _ = fresh(DetectionPhase, tiny_config(tmp_path, 3, init=path, seed=5))
    source = read_checkpoint(path)["state_dict"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, source[name]), name


def test_the_three_phases_chain_and_their_checkpoints_load_in_the_reference(tmp_path):
    train(tiny_config(tmp_path / "p1", 1, iterations=2))
    p1 = tmp_path / "p1" / BEST
    train(tiny_config(tmp_path / "p2", 2, iterations=2, noiseprint=str(p1)))
    p2 = tmp_path / "p2" / LAST
    train(tiny_config(tmp_path / "p3", 3, iterations=2, init=str(p2)))
    for path in (p1, p2, tmp_path / "p3" / LAST):
        checkpoint = read_checkpoint(path)
        assert {"epoch", "best_value", "best_key", "state_dict", "optimizer"} <= set(checkpoint)
        build_trufor("tiny", checkpoint=path)  # strict
    phase2 = read_checkpoint(p2)["state_dict"]
    phase1 = read_checkpoint(p1)["state_dict"]
    assert all(torch.equal(phase2[k], v) for k, v in phase1.items() if k.startswith("dncnn."))
    assert (tmp_path / "p3" / "args.yaml").is_file() and (tmp_path / "p3" / "args.json").is_file()
    logs = [json.loads(line) for line in (tmp_path / "p3" / "train_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in logs] == [1, 2]
    assert logs[-1]["lr"] < logs[0]["lr"]
    val = [json.loads(line) for line in (tmp_path / "p3" / "val_log.jsonl").read_text().splitlines()]
    assert "avg_img_bacc" in val[-1] and "avg_px_f1_best" in val[-1]


def test_poly_schedule_per_iteration(tmp_path):
    train(tiny_config(tmp_path, 2, iterations=4, lr=0.01))
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    expected = [0.01 * (1 - i / 4) ** 0.9 for i in range(4)]
    assert [row["lr"] for row in rows] == pytest.approx(expected)


def test_best_key_picks_the_selection_metric_and_must_exist(tmp_path):
    result = train(tiny_config(tmp_path / "ok", 2, best_key="avg_px_f1_05"))
    assert read_checkpoint(tmp_path / "ok" / BEST)["best_key"] == "avg_px_f1_05"
    logged = [json.loads(line)["avg_px_f1_05"] for line in open(tmp_path / "ok" / "val_log.jsonl")]
    assert result.best_value == pytest.approx(max(logged))
    with pytest.raises(TruForError, match="no 'no_such_metric' to select on; it gives .*nn_acc"):
        train(tiny_config(tmp_path / "bad", 1, best_key="no_such_metric"))
