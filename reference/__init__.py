"""Faithful PyTorch re-implementation of TruFor (Guillaro et al., CVPR 2023).

Everything else in the project (export, engines, runtime, training) is checked against it.
"""

from .build import build_trufor
from .config import PRESETS, TruForConfig, get_config
from .errors import TruForError
from .model import TruFor, TruForOutput, probabilities

__all__ = [
    "PRESETS",
    "TruFor",
    "TruForConfig",
    "TruForError",
    "TruForOutput",
    "build_trufor",
    "get_config",
    "probabilities",
]
