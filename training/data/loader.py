"""Batches for phases 2 and 3: balanced epochs of augmented crops, and the validation images.

Every crop is a pure function of (seed, epoch, position in the epoch): its random generator is
seeded with those numbers, so a run is reproducible with any number of workers, and a resumed
run skips the batches it already did without producing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reference.config import PIXEL_SCALE
from reference.errors import TruForError

from .augment import AugmentConfig, augment, validation_crop
from .datasets import SyntheticDataset, balanced_epoch, open_file_dataset, parse_spec
from .forgery import ForgeryConfig, ForgeryGenerator
from .sources import PhotoFolderSource, SimulatedCameraSource

VALIDATION_STREAM = 0x7A11D  # keeps validation draws apart from training ones


@dataclass(frozen=True)
class SegmentationDataConfig:
    train: tuple[str, ...]
    val: tuple[str, ...]
    augment: AugmentConfig
    forgery: ForgeryConfig
    pristine: str | None  # folder of photos for the synthetic generator; None: simulated cameras
    cameras: int
    synthetic_count: int
    synthetic_size: int
    val_count: int
    val_max_size: int
    batch_size: int
    seed: int
    workers: int


def make_generator(config: SegmentationDataConfig, photos: Path | None = None) -> ForgeryGenerator:
    """Forgeries from ``photos``, else from ``--pristine``, else from the simulated cameras."""
    photos = photos or config.pristine
    source = PhotoFolderSource(photos) if photos else SimulatedCameraSource(config.cameras)
    return ForgeryGenerator(source, config.forgery)


def open_datasets(specs: tuple[str, ...], config: SegmentationDataConfig, count: int) -> list:
    datasets = []
    for spec in specs:
        kind, root = parse_spec(spec)
        if kind == "coverage":
            raise TruForError(f"{spec}: COVERAGE is the evaluation set; training, tuning or validating on it "
                              "would make its figures meaningless (benchmarks.evaluate reads it)")
        if kind == "synthetic":
            datasets.append(SyntheticDataset(make_generator(config, root), count, config.synthetic_size, spec))
        else:
            datasets.append(open_file_dataset(spec))
    return datasets


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 (0..255) and HxW labels -> (3, H, W) float32 / 256 and (H, W) int64."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1) / PIXEL_SCALE
    return tensor, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


class _Crops(Dataset):
    def __init__(self, datasets: list, config: SegmentationDataConfig, epoch: int, items: list[tuple[int, int]]):
        self.datasets = datasets
        self.config = config
        self.epoch = epoch
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.config.seed, self.epoch, position])
        dataset, index = self.items[position]
        sample = self.datasets[dataset].load(index, rng)
        return to_tensors(*augment(sample.image, sample.mask, rng, self.config.augment))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class SegmentationData:
    def __init__(self, config: SegmentationDataConfig):
        self.config = config
        self.train = open_datasets(config.train, config, config.synthetic_count)
        self.val = open_datasets(config.val, config, config.val_count) if config.val else []

    def describe(self) -> list[str]:
        lines = [f"train {d.describe()}" for d in self.train] + [f"val {d.describe()}" for d in self.val]
        lines.append(f"{self.samples_per_epoch} samples per epoch (min over {len(self.train)} sub-datasets), "
                     f"{self.iterations_per_epoch} iterations of batch {self.config.batch_size}")
        return lines

    @property
    def samples_per_epoch(self) -> int:
        return min(len(d) for d in self.train) * len(self.train)

    @property
    def iterations_per_epoch(self) -> int:
        return max(1, self.samples_per_epoch // self.config.batch_size)

    def epoch_items(self, epoch: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.config.seed, epoch])
        return balanced_epoch([len(d) for d in self.train], rng)

    def batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from number ``skip`` on; the last incomplete batch is dropped
        (unless it is the only one)."""
        items = self.epoch_items(epoch)
        size = min(self.config.batch_size, len(items))
        positions = list(range(len(items)))
        batches = [positions[i : i + size] for i in range(0, self.iterations_per_epoch * size, size)][skip:]
        if not batches:
            return iter(())
        loader = DataLoader(
            _Crops(self.train, self.config, epoch, items),
            batch_sampler=batches,
            num_workers=self.config.workers,
            worker_init_fn=_worker_init if self.config.workers else None,
        )
        return iter(loader)

    def validation_samples(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(dataset name, uint8 image, mask) for every validation image, centre-cropped; the same
        images on every call."""
        for d, dataset in enumerate(self.val):
            for index in range(len(dataset)):
                rng = np.random.default_rng([self.config.seed, VALIDATION_STREAM, d, index])
                sample = dataset.load(index, rng)
                image, mask = validation_crop(sample.image, sample.mask, self.config.val_max_size)
                yield dataset.name, image, mask
