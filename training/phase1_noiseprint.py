"""Phase 1, Noiseprint++: the DnCNN alone, trained contrastively on pristine patches.

The authors never released this phase. Following the paper's description, patches are positives
when they share camera model, position on the sampling grid and editing history (see
``data/contrastive.py``), and the loss is a distance-based InfoNCE over the batch
(``losses.contrastive_loss``). The DnCNN trains in train mode (its BatchNorm statistics move),
with PyTorch's default initialisation. Model selection on the validation nearest-neighbour
accuracy (``nn_acc``: how often a patch's closest residual belongs to its own class).

The checkpoint holds the whole TruFor state (the other modules untrained), so it loads strictly
with ``build_trufor`` and, through ``reference.checkpoint.load_noiseprint``, into phase 2.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reference.errors import TruForError

from .data.contrastive import CameraFolderPatches, SimulatedCameraPatches
from .loop import Phase
from .losses import contrastive_loss, nearest_neighbour_accuracy
from .weights import load_matching

VALIDATION_STREAM = 0x9A11D
# Validation uses cameras the training batches never see, so nn_acc measures generalisation.
VALIDATION_FIRST_CAMERA = 100_000


def open_sources(specs, config, first_camera: int = 0) -> list:
    sources = []
    for spec in specs:
        if spec == "synthetic":
            sources.append(SimulatedCameraPatches(config, first_camera))
        elif spec.startswith("cameras:"):
            sources.append(CameraFolderPatches(spec.removeprefix("cameras:"), config))
        else:
            raise TruForError(f"phase 1 data is 'synthetic' (simulated cameras) or cameras:DIR (one subfolder per camera), not {spec!r}")
    return sources


class _Batches(Dataset):
    def __init__(self, sources, seed, epoch, start, count):
        self.sources, self.seed, self.epoch, self.start, self.count = sources, seed, epoch, start, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, self.start + index])
        source = self.sources[int(rng.integers(len(self.sources)))]
        images, labels = source.batch(rng)
        return torch.from_numpy(images), torch.from_numpy(labels)


class NoiseprintPhase(Phase):
    number = 1
    trainable = ("dncnn",)
    best_key = "nn_acc"

    def __init__(self, config, device):
        super().__init__(config, device)
        contrastive = config.contrastive()
        self.sources = open_sources(config.data, contrastive)
        val_specs = [s for s in config.val_data if s == "synthetic" or s.startswith("cameras:")] or ["synthetic"]
        self.val_sources = open_sources(val_specs, contrastive, VALIDATION_FIRST_CAMERA)

    def describe(self) -> list[str]:
        c = self.config
        return [f"train {s}" for s in self.sources] + [f"val {s}" for s in self.val_sources] + [
            f"batches of {c.groups} classes x {c.per_group} patches of {c.patch}x{c.patch}, {c.epoch_iterations} per epoch"
        ]

    def initialize(self, model) -> list[str]:
        if not self.config.init:
            return ["Noiseprint++: PyTorch default initialisation"]
        loaded, _ = load_matching(model, self.config.init)
        return [f"loaded {', '.join(loaded)} from {self.config.init}"]

    def iterations_per_epoch(self) -> int:
        return self.config.epoch_iterations

    def batches(self, epoch, skip):
        count = self.config.epoch_iterations - skip
        dataset = _Batches(self.sources, self.config.seed, epoch, skip, count)
        return iter(DataLoader(dataset, batch_size=None, num_workers=self.config.workers))

    def loss(self, model, batch):
        images, labels = (t.to(self.device) for t in batch)
        residuals = model.dncnn(images)
        loss = contrastive_loss(residuals, labels, self.config.temperature)
        return loss, {"nn_acc": nearest_neighbour_accuracy(residuals.detach(), labels)}

    def validate(self, model):
        losses, accuracies = [], []
        for index in range(self.config.val_batches):
            rng = np.random.default_rng([self.config.seed, VALIDATION_STREAM, index])
            source = self.val_sources[int(rng.integers(len(self.val_sources)))]
            images, labels = (torch.from_numpy(a).to(self.device) for a in source.batch(rng))
            residuals = model.dncnn(images)
            losses.append(float(contrastive_loss(residuals, labels, self.config.temperature)))
            accuracies.append(nearest_neighbour_accuracy(residuals, labels))
        return {"val_loss": float(np.mean(losses)), "nn_acc": float(np.mean(accuracies))}
