"""The tables everything else reads: precisions, the three graphs, their files and their I/O contract.

The CLI's help and validation, the exporter's dynamic axes, the manifest and its loader all come
from here, so the contract the runtime relies on is written down once.
"""

from __future__ import annotations

from dataclasses import dataclass

OPSET = 18
FORMAT_VERSION = 1
DEFAULT_TILE = 512


@dataclass(frozen=True)
class Precision:
    name: str
    description: str
    calibrated: bool  # needs calibration images (--calib)


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "float32 throughout; matches the PyTorch reference to float rounding", False),
        Precision(
            "fp16",
            "float16 weights and compute, float32 islands (LayerNorm, softmax, global pooling, "
            "score head, outputs) as explicit Casts",
            False,
        ),
        Precision(
            "int8",
            "explicit symmetric int8 Q/DQ (per-channel weights) on the full-resolution Noiseprint++ "
            "convs, float elsewhere; calibrated on the tile graph with --calib images (synthetic by default)",
            True,
        ),
    )
}


def check_precision(name: str) -> Precision:
    """The precision named ``name``; an unknown one is refused with the valid choices."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}") from None


def precision_help() -> str:
    return "; ".join(f"{p.name}: {p.description}" for p in PRECISIONS.values())


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy/ONNX name: "uint8", "float32"
    shape: tuple[int | str, ...]  # ints are fixed, strings are dynamic axes

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    kind: str  # "whole", "tile" or "score"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    always_fp32: bool = False  # the score graph is tiny and precision-critical: never reduced

    def file_name(self, precision: str) -> str:
        return f"trufor_{self.kind}.{precision}.onnx"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The exporter's ``dynamic_axes``: every string dimension of every input and output."""
        return {
            t.name: {axis: dim for axis, dim in enumerate(t.shape) if isinstance(dim, str)}
            for t in self.inputs + self.outputs
        }

    def io_json(self) -> dict:
        return {
            "inputs": {t.name: t.to_json() for t in self.inputs},
            "outputs": {t.name: t.to_json() for t in self.outputs},
        }


def graph_specs(tile_size: int = DEFAULT_TILE) -> dict[str, GraphSpec]:
    """The three graphs the runtime uses; I/O dtypes are the same for every precision."""
    t = tile_size
    maps = ("map", "conf")
    return {
        "whole": GraphSpec(
            "whole",
            (TensorSpec("image", "uint8", ("batch", "height", "width", 3)),),
            tuple(TensorSpec(n, "float32", ("batch", "height", "width")) for n in maps)
            + (TensorSpec("score", "float32", ("batch",)),),
        ),
        "tile": GraphSpec(
            "tile",
            (TensorSpec("image", "uint8", ("batch", t, t, 3)),),
            (
                TensorSpec("loc_logits", "float32", ("batch", 2, t, t)),
                TensorSpec("conf_logits", "float32", ("batch", 1, t, t)),
            ),
        ),
        "score": GraphSpec(
            "score",
            (
                TensorSpec("loc_logits", "float32", (1, 2, "height", "width")),
                TensorSpec("conf_logits", "float32", (1, 1, "height", "width")),
            ),
            tuple(TensorSpec(n, "float32", (1, "height", "width")) for n in maps)
            + (TensorSpec("score", "float32", (1,)),),
            always_fp32=True,
        ),
    }


def check_tile_size(tile: int) -> int:
    """Tiles must be a positive multiple of 32 (the encoder's stride), hence above the 29-pixel minimum."""
    if tile < 32 or tile % 32:
        raise ValueError(f"--tile must be a positive multiple of 32 (e.g. 512), got {tile}")
    return tile
