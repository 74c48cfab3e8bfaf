"""The training loop the three phases share.

Per iteration: poly learning rate ``lr * (1 - it / total) ** power``, the phase's loss on one
batch, an SGD step over the phase's trainable modules; the frozen modules stay in eval mode (so
their BatchNorm statistics do not move) and get no gradients. After each epoch: validation (the
phase's metrics), then ``last.pth.tar`` and, when the phase's selection metric improved,
``best.pth.tar``, both in the official checkpoint layout ``{'epoch', 'best_value', 'best_key',
'state_dict', 'optimizer'}`` plus ``'iteration'``, ``'phase'`` and ``'preset'``, written to a temp file and
renamed into place. Logs go to ``train_log.jsonl`` and ``val_log.jsonl`` in the run folder.

Determinism: the model is built and initialised after ``torch.manual_seed(seed)``, every batch is
a function of (seed, epoch, position), and the torch generator is reseeded from (seed, iteration)
before each step (dropout, stochastic depth). A resumed run therefore repeats exactly what the
uninterrupted run would have done, without storing generator states.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from reference.checkpoint import (
    clean_state_dict,
    load_state_dict_strict,
    read_checkpoint,
)
from reference.config import get_config
from reference.errors import TruForError
from reference.model import TruFor
from reference.optimize import optimize_for_inference
from reference.outputs import atomic_write

from .config import TrainConfig, save_args
from .data.loader import SegmentationData

LAST, BEST = "last.pth.tar", "best.pth.tar"


class Phase:
    """What a phase gives the loop; subclasses fill in the hooks."""

    number: int
    trainable: tuple[str, ...]  # top-level TruFor modules the optimizer updates
    best_key: str
    best_mode: str = "max"

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config = config
        self.device = device

    def initialize(self, model: TruFor) -> list[str]:
        """Fresh runs only: initialise and load weights; returns lines for the log."""
        raise NotImplementedError

    def describe(self) -> list[str]:
        return []

    def iterations_per_epoch(self) -> int:
        raise NotImplementedError

    def batches(self, epoch: int, skip: int) -> Iterator:
        """The epoch's batches, from batch number ``skip`` on."""
        raise NotImplementedError

    def loss(self, model: TruFor, batch) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def validate(self, model: TruFor) -> dict[str, float]:
        raise NotImplementedError


class SegmentationPhase(Phase):
    """Phases 2 and 3: image/mask crops from the configured segmentation data."""

    def __init__(self, config: TrainConfig, device: torch.device):
        super().__init__(config, device)
        self.data = SegmentationData(config.segmentation_data())
        self._noiseprint: torch.nn.Module | None = None

    def describe(self) -> list[str]:
        return self.data.describe()

    def iterations_per_epoch(self) -> int:
        return self.data.iterations_per_epoch

    def batches(self, epoch: int, skip: int) -> Iterator:
        return self.data.batches(epoch, skip)

    def features(self, model: TruFor, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``model.forward_features``, with the Noiseprint++ residual from a BatchNorm-folded,
        channels-last copy of the extractor: it is frozen in phases 2 and 3, and the copy
        halves its cost on CPUs. The copy is made on first use, after the weights are loaded."""
        if self._noiseprint is None:
            self._noiseprint = optimize_for_inference(model.dncnn)
        with torch.no_grad():
            residual = self._noiseprint(image.contiguous(memory_format=torch.channels_last)).contiguous()
        return model.forward_features(image, residual)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    iteration: int
    best_value: float | None
    last_metrics: dict


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    return base * (1 - iteration / total) ** power


def step_seed(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration) % (2**63 - 1)


def freeze_except(model: TruFor, trainable: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """requires_grad only for the trainable modules' parameters, which are returned."""
    params = []
    for name, module in model.named_children():
        for parameter in module.parameters():
            parameter.requires_grad_(name in trainable)
            if name in trainable:
                params.append(parameter)
    return params


def set_modes(model: TruFor, trainable: tuple[str, ...]) -> None:
    """Train mode for the trainable modules, eval (BatchNorm frozen, no dropout) for the rest."""
    model.eval()
    for name in trainable:
        getattr(model, name).train()


def build_model(config: TrainConfig) -> TruFor:
    """The preset with the training-time confidence-decoder BN eps (1e-3, as the official training)."""
    return TruFor(get_config(config.preset, conf_bn_variant="train"))


def save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write(path, lambda file: torch.save(payload, file))


class JsonlLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def train(config: TrainConfig, phase_type: type[Phase]) -> TrainResult:
    run_dir = config.run_dir
    if not config.resume and (run_dir / LAST).exists():
        raise TruForError(f"{run_dir} already holds a run ({LAST}); pass --resume to continue it, or another --out")
    if config.resume and not (run_dir / LAST).exists():
        raise TruForError(f"--resume: {run_dir / LAST} does not exist; nothing to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_args(config, run_dir)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TruForError("--device cuda was given but CUDA is not available here; use --device cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True

    torch.manual_seed(config.seed)
    model = build_model(config)
    phase = phase_type(config, device)
    train_log, val_log = JsonlLog(run_dir / "train_log.jsonl"), JsonlLog(run_dir / "val_log.jsonl")
    messages = phase.describe()
    if not config.resume:
        messages += phase.initialize(model)
    model.to(device)
    params = freeze_except(model, phase.trainable)
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    iteration, best_value = 0, None
    if config.resume:
        checkpoint = read_checkpoint(run_dir / LAST)
        load_state_dict_strict(model, clean_state_dict(checkpoint), f"checkpoint {run_dir / LAST}")
        optimizer.load_state_dict(checkpoint["optimizer"])
        iteration, best_value = int(checkpoint["iteration"]), checkpoint.get("best_value")
        messages.append(f"resumed from {run_dir / LAST} at iteration {iteration}")
        train_log.write({"event": "resume", "iteration": iteration})
    best_key = config.best_key or phase.best_key
    per_epoch = phase.iterations_per_epoch()
    total = config.iterations or config.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    trainable_count = sum(p.numel() for p in params)
    messages.append(f"phase {phase.number}, preset {config.preset}: training {', '.join(phase.trainable)} "
                    f"({trainable_count:,} parameters) for {total} iterations ({epochs} epochs of {per_epoch}) on {device}")
    for line in messages:
        print(line, flush=True)

    def payload() -> dict:
        return {
            "epoch": iteration // per_epoch,
            "best_value": best_value,
            "best_key": best_key,
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "phase": phase.number,
            "preset": config.preset,
        }

    last_metrics: dict = {}
    window_start, window_iterations = time.perf_counter(), 0
    while iteration < total:
        epoch, start = iteration // per_epoch, iteration
        for batch in phase.batches(epoch, iteration - epoch * per_epoch):
            lr = poly_lr(config.lr, iteration, total, config.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(config.seed, iteration))
            set_modes(model, phase.trainable)
            loss, parts = phase.loss(model, batch)
            if not torch.isfinite(loss):
                raise TruForError(f"loss is {float(loss)} at iteration {iteration} (parts {parts}); lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            window_iterations += 1
            if iteration % config.log_every == 0 or iteration == total:
                elapsed = time.perf_counter() - window_start
                record = {"event": "train", "iteration": iteration, "epoch": iteration / per_epoch, "lr": lr,
                          "loss": float(loss.detach()), **parts, "it_per_s": window_iterations / elapsed}
                train_log.write(record)
                print(f"it {iteration}/{total} loss {record['loss']:.4f} "
                      + " ".join(f"{k} {v:.4f}" for k, v in parts.items()) + f" lr {lr:.2e} {record['it_per_s']:.2f} it/s", flush=True)
                window_start, window_iterations = time.perf_counter(), 0
            if config.save_every and iteration % config.save_every == 0:
                save_checkpoint(run_dir / LAST, payload())
            if iteration >= total or iteration % per_epoch == 0:
                break
        if iteration == start:
            raise TruForError(f"epoch {epoch} produced no batch (the phase's data is empty)")
        epoch_done = iteration // per_epoch
        if config.val_every and (epoch_done % config.val_every == 0 or iteration >= total):
            with torch.no_grad():
                model.eval()
                last_metrics = phase.validate(model)
            if best_key not in last_metrics:
                raise TruForError(f"validation gives no {best_key!r} to select on; it gives {', '.join(sorted(last_metrics))}")
            value = last_metrics[best_key]
            improved = _better(value, best_value, phase.best_mode)
            if improved:
                best_value = float(value)
            val_log.write({"event": "val", "iteration": iteration, "epoch": epoch_done, **last_metrics, "best": improved})
            shown = {k: v for k, v in last_metrics.items() if "/" not in k}  # per-dataset values: val_log.jsonl
            print(f"validation after epoch {epoch_done}: " + " ".join(f"{k} {v:.4f}" for k, v in shown.items())
                  + (" (best)" if improved else ""), flush=True)
            if improved:
                save_checkpoint(run_dir / BEST, payload())
        save_checkpoint(run_dir / LAST, payload())
        window_start, window_iterations = time.perf_counter(), 0
    print(f"done: {run_dir / LAST}" + (f", best {best_key} {best_value:.4f} in {run_dir / BEST}" if best_value is not None else ""))
    return TrainResult(run_dir, iteration, best_value, last_metrics)
