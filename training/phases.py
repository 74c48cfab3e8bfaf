"""The phase registry: ``run(config)`` trains the phase ``config.phase`` names."""

from __future__ import annotations

from .config import TrainConfig
from .loop import Phase, TrainResult, train
from .phase1_noiseprint import NoiseprintPhase
from .phase2_localization import LocalizationPhase
from .phase3_detection import DetectionPhase

PHASE_TYPES: dict[int, type[Phase]] = {1: NoiseprintPhase, 2: LocalizationPhase, 3: DetectionPhase}


def run(config: TrainConfig) -> TrainResult:
    return train(config, PHASE_TYPES[config.phase])
