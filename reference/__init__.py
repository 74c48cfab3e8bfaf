"""Faithful PyTorch re-implementation of TruFor (Guillaro et al., CVPR 2023).

Everything else in the project (export, engines, runtime, training) is checked against it.
Names load lazily, so the ONNX Runtime path can use ``reference.errors``, ``reference.image``
and ``reference.inputs`` without importing torch.
"""

import importlib

_EXPORTS = {
    "PRESETS": "config",
    "TruForConfig": "config",
    "get_config": "config",
    "TruForError": "errors",
    "build_trufor": "build",
    "TruFor": "model",
    "TruForOutput": "model",
    "probabilities": "model",
    "to_tensor": "model",
    "ResolvedWeights": "weights",
    "resolve_weights": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reference' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
