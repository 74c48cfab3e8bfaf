"""Training configuration: one frozen dataclass, filled from defaults < YAML file < command-line flags.

The defaults are the official recipe (ARCHITECTURE.md 6): SGD lr 0.005, momentum 0.9, weight decay
5e-4, poly schedule with power 0.9 per iteration, 100 epochs, batch 18, 512-pixel crops, random
scale (p 0.5, +-0.5) and JPEG (p 0.5, quality 30..100). Phase 1 has no official recipe; its
defaults (48-pixel patches, 16 classes of 4 per batch) are this project's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reference.config import PRESETS

from .data.augment import AugmentConfig
from .data.contrastive import ContrastiveConfig
from .data.forgery import FORGERY_KINDS, ForgeryConfig
from .data.loader import SegmentationDataConfig

PHASES = (1, 2, 3)
# Fields that may change when a run is resumed: they do not change what is computed.
RESUME_MUTABLE = frozenset({"resume", "out", "device", "threads", "workers", "log_every", "config"})


@dataclass(frozen=True)
class TrainConfig:
    phase: int
    out: str = ""  # run folder; default runs/phase<N>
    config: str | None = None  # the YAML file the values came from (informational)
    resume: bool = False
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    workers: int = 0
    log_every: int = 10
    save_every: int = 0  # also save "last" every N iterations (0: at epoch ends only)
    val_every: int = 1  # validate every N epochs (0: never)
    best_key: str | None = None  # validation metric that picks best.pth.tar; default: the phase's official one
    # model
    preset: str = "trufor"
    init: str | None = None  # weights to start from (phase 3: the phase-2 checkpoint)
    noiseprint: str | None = None  # phase 2: Noiseprint++ weights, or "random"
    mit: str | None = None  # phase 2: a MiT (SegFormer encoder) checkpoint for both streams
    # data
    data: tuple[str, ...] = ("synthetic",)
    val_data: tuple[str, ...] = ("synthetic",)
    pristine: str | None = None  # photos for the synthetic generator; default: simulated cameras
    cameras: int = 64  # simulated camera models
    histories: int = 16  # phase 1 editing histories (0 = none included)
    synthetic_count: int = 2000  # generated samples per epoch
    synthetic_size: int | None = None  # side of generated images; default: the crop
    val_count: int = 64  # generated validation samples
    val_max_size: int = 2048
    kinds: tuple[str, ...] = FORGERY_KINDS
    pristine_fraction: float = 0.3
    # optimisation
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    epochs: int = 100
    iterations: int | None = None  # total; overrides epochs
    batch_size: int = 18
    # augmentation (phases 2 and 3)
    crop: int = 512
    scale_p: float = 0.5
    scale_limit: float = 0.5
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    # phase 1
    patch: int = 48
    groups: int = 16
    per_group: int = 4
    temperature: float = 1.0
    epoch_iterations: int = 1000  # phase 1 has no dataset size: iterations per epoch
    val_batches: int = 4

    def __post_init__(self):
        problems = []
        if self.phase not in PHASES:
            problems.append(f"phase must be one of {PHASES}, got {self.phase}")
        if self.preset not in PRESETS:
            problems.append(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            problems.append(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        positive = ("epochs", "batch_size", "crop", "patch", "groups", "per_group", "epoch_iterations",
                    "synthetic_count", "val_count", "cameras", "histories", "log_every")
        problems += [f"{name} must be >= 1, got {getattr(self, name)}" for name in positive if getattr(self, name) < 1]
        if self.iterations is not None and self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if self.crop < 29:
            problems.append(f"crop must be >= 29 (the model's minimum input), got {self.crop}")
        if not self.data:
            problems.append("at least one --data source is needed")
        if self.phase == 3 and not self.init:
            problems.append("phase 3 starts from the phase-2 checkpoint: pass --init RUN/best.pth.tar")
        if self.phase == 2 and not self.noiseprint and not self.init:
            problems.append("phase 2 needs Noiseprint++ weights: --noiseprint PHASE1_RUN/best.pth.tar "
                            "(or --noiseprint random to train on an untrained extractor)")
        if self.mit and self.phase != 2:
            problems.append("--mit initialises the encoder and is a phase-2 option")
        unknown = sorted(set(self.kinds) - set(FORGERY_KINDS))
        if unknown:
            problems.append(f"unknown forgery kinds {unknown}; choose from {list(FORGERY_KINDS)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/phase{self.phase}")

    def augment(self) -> AugmentConfig:
        return AugmentConfig(self.crop, self.scale_p, self.scale_limit, self.jpeg_p, tuple(self.jpeg_quality))

    def forgery(self) -> ForgeryConfig:
        return ForgeryConfig(kinds=tuple(self.kinds), pristine_fraction=self.pristine_fraction)

    def contrastive(self) -> ContrastiveConfig:
        return ContrastiveConfig(self.patch, self.groups, self.per_group, self.cameras, self.histories)

    def segmentation_data(self) -> SegmentationDataConfig:
        return SegmentationDataConfig(
            train=tuple(self.data),
            val=tuple(self.val_data),
            augment=self.augment(),
            forgery=self.forgery(),
            pristine=self.pristine,
            cameras=self.cameras,
            synthetic_count=self.synthetic_count,
            synthetic_size=self.synthetic_size or self.crop,
            val_count=self.val_count,
            val_max_size=self.val_max_size,
            batch_size=self.batch_size,
            seed=self.seed,
            workers=self.workers,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TUPLE_FIELDS = {"data", "val_data", "kinds", "jpeg_quality"}


def normalize(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Keys with dashes or underscores, lists as tuples; unknown keys are refused by name."""
    result = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ValueError(f"{source}: unknown setting {key!r}; valid ones: {', '.join(sorted(FIELDS))}")
        if name in _TUPLE_FIELDS and value is not None:
            value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        result[name] = value
    return result


def load_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML (or JSON) file: a flat mapping of TrainConfig fields."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        values = json.loads(text)
    else:
        try:
            import yaml
        except ImportError as error:
            raise ValueError(f"reading {path} needs PyYAML (pip install pyyaml), or give a .json file") from error
        values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of settings, not {type(values).__name__}")
    return normalize(values, str(path))


def resolve(cli: dict[str, Any]) -> TrainConfig:
    """Defaults < the ``--config`` file < explicit flags; with ``--resume``, the run's saved
    settings replace the defaults and the file, and flags may only change RESUME_MUTABLE ones."""
    cli = normalize(cli, "command line")
    values: dict[str, Any] = {}
    if cli.get("config"):
        values.update(load_file(cli["config"]))
    values.update(cli)
    if values.get("resume"):
        run_dir = Path(values.get("out") or f"runs/phase{values['phase']}")
        saved_path = run_dir / "args.json"
        if not saved_path.is_file():
            raise ValueError(f"--resume: {saved_path} not found; is {run_dir} a run folder?")
        saved = normalize(json.loads(saved_path.read_text()), str(saved_path))
        changed = [f"{k}: {saved.get(k)!r} (saved) vs {v!r} (now)" for k, v in values.items()
                   if k not in RESUME_MUTABLE and k in saved and saved[k] != v]
        if changed:
            raise ValueError("--resume continues a run with its saved settings; these differ: " + "; ".join(changed)
                             + ". Start a new run (another --out) to change them")
        values = {**saved, **{k: v for k, v in values.items() if k in RESUME_MUTABLE or k not in saved}}
    return TrainConfig(**values)


def save_args(config: TrainConfig, run_dir: Path) -> None:
    """The resolved settings as args.json (read back by --resume) and args.yaml (for people)."""
    from reference.outputs import atomic_write

    values = config.to_dict()
    atomic_write(run_dir / "args.json", lambda f: f.write((json.dumps(values, indent=2) + "\n").encode()))
    try:
        import yaml
    except ImportError:
        return
    atomic_write(run_dir / "args.yaml", lambda f: f.write(yaml.safe_dump(values, sort_keys=False).encode()))
