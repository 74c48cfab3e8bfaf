"""Safe checkpoint reading: ``weights_only`` unpickling with the smallest allow-list the official file needs.

Accepted layouts: the official training checkpoint (``{'state_dict', 'epoch', ...}``), a bare
state_dict, ``{'model': ...}``, DataParallel ``module.`` prefixes, and the released Noiseprint++
file (``{'network': <dncnn state>, 'global_step'}``).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError

# The official trufor.pth.tar stores NumPy scalars (e.g. best_value) next to its tensors. Pickles
# written under NumPy 1.x name the scalar constructor numpy.core.multiarray.scalar, under 2.x
# numpy._core.multiarray.scalar: admit both names, the dtype constructors NumPy 1.x (np.dtype) and
# 2.x (numpy.dtypes.Float64DType and kin) pickle, and nothing else.
_NUMPY_SCALAR = np._core.multiarray.scalar  # noqa: SLF001 - the constructor pickles refer to
_NUMPY_SCALAR_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
SAFE_GLOBALS = [
    *((_NUMPY_SCALAR, name) for name in _NUMPY_SCALAR_NAMES),
    np.dtype,
    *(type(np.dtype(code)) for code in "?bhilqBHILQefdg"),
]


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """Unpickle a checkpoint with ``weights_only=True``; refuse, naming the globals, anything else.

    ``mmap``: map the tensors instead of reading them (for a look at the other entries), where the
    file's format allows it (torch's zip format; older files are read whole)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a torch zip file at all: report the original error
            unsafe = []
        allowed = {*_NUMPY_SCALAR_NAMES, *(f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS[2:])}
        blocking = [name for name in unsafe if name not in allowed]
        if blocking:
            raise CheckpointError(
                f"refusing to load {path!r}: it needs pickle globals that could run code "
                f"({', '.join(blocking)}). Only tensors, plain containers and NumPy scalars are "
                "accepted, and there is no unsafe fallback; re-save the state_dict from a trusted "
                "environment with torch.save({'state_dict': model.state_dict()}, path)."
            ) from error
        raise CheckpointError(f"cannot read checkpoint {path!r}: {error}") from error
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {error}") from error


def clean_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model state inside any accepted layout, with ``module.`` prefixes removed."""
    state = checkpoint
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("checkpoint holds no state_dict (expected a 'state_dict' entry or a bare state_dict)")
    cleaned = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        cleaned[name.removeprefix("module.")] = value
    return cleaned


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` that reports every missing, unexpected or mis-shaped key at once."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model ({type(module).__name__}, {len(expected)} entries); "
            + "; ".join(problems)
            + ". Check that the preset matches the checkpoint (e.g. --preset trufor for the official weights)."
        )
    module.load_state_dict(state, strict=True)


def load_noiseprint(dncnn: nn.Module, path: str | os.PathLike) -> None:
    """Load Noiseprint++ weights into the DnCNN alone: the released file or a full TruFor checkpoint."""
    checkpoint = read_checkpoint(path)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("network"), Mapping):
        state = clean_state_dict(checkpoint["network"])
    else:
        state = {
            name.removeprefix("dncnn."): tensor
            for name, tensor in clean_state_dict(checkpoint).items()
            if name.startswith("dncnn.")
        }
    load_state_dict_strict(dncnn, state, f"Noiseprint++ weights {os.fspath(path)!r}")
