"""The result type every backend returns; torch-free, so the ONNX Runtime and TensorRT paths use it too."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TruForResult:
    """One image's outputs, as numpy arrays at the input's full resolution."""

    map: np.ndarray  # (H, W) float32, P(forged) per pixel
    conf: np.ndarray  # (H, W) float32, reliability of the map
    score: float  # P(image forged), in [0, 1]
    noiseprint: np.ndarray | None = None  # (H, W) float32, raw Noiseprint++ residual
    loc_logits: np.ndarray | None = None  # (num_classes, H, W) float32
    conf_logits: np.ndarray | None = None  # (1, H, W) float32
    det_logit: float | None = None
    backend: str | None = None  # the runtime backend that computed it (after a fallback, the one that ran)

    @property
    def imgsize(self) -> tuple[int, int]:
        return self.map.shape

    def npz_fields(self) -> dict[str, np.ndarray]:
        """The official ``.npz`` fields (``np++`` only when the Noiseprint was kept)."""
        fields = {
            "map": self.map.astype(np.float32, copy=False),
            "conf": self.conf.astype(np.float32, copy=False),
            "score": np.asarray(self.score, dtype=np.float64),
            "imgsize": np.asarray(self.imgsize, dtype=np.int64),
        }
        if self.noiseprint is not None:
            fields["np++"] = self.noiseprint.astype(np.float32, copy=False)
        return fields
