"""The graph contract: what every exported graph takes and gives, written once and read by every layer above.

Precisions, the three graphs (names, inputs and outputs with dtype and layout), the preprocessing
the graphs do inside (pixel scale and normalization, the reference model's own), the default tile
size and the smallest image side. ``export`` writes it into each manifest (``MANIFEST_FIELDS``, the
tile size and each graph's I/O), ``export.manifest.load_manifest`` refuses artifacts whose contract
differs from this one, and engines and runtime read the graph specs back from the manifest, or from here when no
manifest is involved (the torch backend). The CLI's help and validation, the exporter's names and
dynamic axes, the engines' profiles and every runner's input checks come from these tables.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from reference.config import IMAGENET_MEAN, IMAGENET_STD, PIXEL_SCALE
from reference.errors import TruForError
from reference.image import MIN_SIDE

OPSET = 18
# 3: graphs cast the uint8 image first (TensorRT's rule), int8 biases stay float, the whole-image rule
FORMAT_VERSION = 3
DEFAULT_TILE = 512
GRAPH_NAMES = ("whole", "tile", "score")
# What the graphs take and do before the network: decoded RGB as it comes, scaled and normalized inside.
PREPROCESSING = {
    "input": "uint8 RGB NHWC",
    "scale": PIXEL_SCALE,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "exif_transpose": False,
}
# What every manifest records besides its tile size and graphs' I/O; load_manifest refuses other values.
MANIFEST_FIELDS = {"min_side": MIN_SIDE, "preprocessing": PREPROCESSING}


@dataclass(frozen=True)
class WholeImageRule:
    """Which images run whole (the official path) and which run as blended tiles.

    One rule, recorded in the manifest: it sizes the TensorRT whole-image profile (``engines.build``)
    and decides the Predictor's mode, so every image the rule runs whole fits the engine and none
    falls back silently. The defaults: peak RSS of one whole-image run of the full model, torch fp32,
    measured on a CPU, grows about 1.8 GB per megapixel (0.79 MP 1.9 GB, 1.92 MP 4.0 GB, 3.15 MP 6.1 GB);
    2048 x 1024 pixels (so 1920x1080 and 1600x1200 run whole) stays near 4.3 GB. The side limit keeps
    the engine's profile (and its tactics) to 2048 x 2048: a 3000x600 image runs tiled.
    """

    max_pixels: int = 2048 * 1024
    max_side: int = 2048

    def __post_init__(self):
        if self.max_pixels < 0 or self.max_side < 0:
            raise ValueError(f"the whole-image limits must be >= 0, got {self.max_pixels} pixels and side {self.max_side}")

    def runs_whole(self, height: int, width: int) -> bool:
        return height * width <= self.max_pixels and max(height, width) <= self.max_side

    def to_json(self) -> dict:
        return {"max_pixels": self.max_pixels, "max_side": self.max_side}

    @classmethod
    def from_json(cls, data: dict) -> WholeImageRule:
        return cls(data["max_pixels"], data["max_side"])


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
            "float16 weights and compute, float32 islands (Noiseprint++, LayerNorm, softmax, global pooling, "
            "score head, outputs) as explicit Casts",
            False,
        ),
        Precision(
            "int8",
            "explicit symmetric int8 Q/DQ (per-channel weights) on the --int8-layers (encoder query and Mix-FFN "
            "input layers by default), float elsewhere; calibrated on the tile graph with --calib images "
            "(synthetic by default)",
            True,
        ),
    )
}
PRECISION_NAMES = tuple(PRECISIONS)


def precision_help() -> str:
    return "; ".join(f"{p.name}: {p.description}" for p in PRECISIONS.values())


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype, shape (ints fixed, strings dynamic) and its layout's letters."""

    name: str
    dtype: str  # numpy/ONNX name: "uint8", "float32"
    shape: tuple[int | str, ...]
    layout: str  # one letter per dimension: N batch, H height, W width, C channels

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "layout": self.layout}

    @classmethod
    def from_json(cls, name: str, data: dict) -> TensorSpec:
        return cls(name, data["dtype"], tuple(data["shape"]), data["layout"])

    def check(self, graph: str, array: np.ndarray) -> None:
        """Refuse an array this tensor cannot take, naming the graph, the tensor and what was expected."""
        if not isinstance(array, np.ndarray):
            raise TruForError(f"{graph} graph: input {self.name!r} must be a numpy array, got {type(array).__name__}")
        if array.dtype != self.dtype:
            raise TruForError(f"{graph} graph: input {self.name!r} has dtype {array.dtype}, expected {self.dtype}")
        if array.ndim != len(self.shape) or any(
            isinstance(want, int) and got != want for got, want in zip(array.shape, self.shape)
        ):
            raise TruForError(f"{graph} graph: input {self.name!r} has shape {array.shape}, expected {self.shape}")


@dataclass(frozen=True)
class GraphSpec:
    kind: str  # "whole", "tile" or "score"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    always_fp32: bool = False  # the score graph is tiny and precision-critical: never reduced

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def file_name(self, precision: str, variant: str = "") -> str:
        return f"trufor_{self.kind}.{precision}{variant}.onnx"

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
            "always_fp32": self.always_fp32,
        }

    @classmethod
    def from_json(cls, kind: str, data: dict) -> GraphSpec:
        """The spec a manifest entry records with ``io_json`` (its other fields are ignored)."""
        return cls(
            kind,
            tuple(TensorSpec.from_json(name, t) for name, t in data["inputs"].items()),
            tuple(TensorSpec.from_json(name, t) for name, t in data["outputs"].items()),
            data["always_fp32"],
        )


def graph_specs(tile_size: int = DEFAULT_TILE, num_classes: int = 2) -> dict[str, GraphSpec]:
    """The three graphs every backend runs; I/O dtypes are the same for every precision."""
    t = tile_size
    maps = ("map", "conf")
    return {
        "whole": GraphSpec(
            "whole",
            (TensorSpec("image", "uint8", ("batch", "height", "width", 3), "NHWC"),),
            tuple(TensorSpec(n, "float32", ("batch", "height", "width"), "NHW") for n in maps)
            + (TensorSpec("score", "float32", ("batch",), "N"),),
        ),
        "tile": GraphSpec(
            "tile",
            (TensorSpec("image", "uint8", ("batch", t, t, 3), "NHWC"),),
            (
                TensorSpec("loc_logits", "float32", ("batch", num_classes, t, t), "NCHW"),
                TensorSpec("conf_logits", "float32", ("batch", 1, t, t), "NCHW"),
            ),
        ),
        "score": GraphSpec(
            "score",
            (
                TensorSpec("loc_logits", "float32", (1, num_classes, "height", "width"), "NCHW"),
                TensorSpec("conf_logits", "float32", (1, 1, "height", "width"), "NCHW"),
            ),
            tuple(TensorSpec(n, "float32", (1, "height", "width"), "NHW") for n in maps)
            + (TensorSpec("score", "float32", (1,), "N"),),
            always_fp32=True,
        ),
    }


def check_tile_size(tile: int) -> int:
    """Tiles must be a positive multiple of 32 (the encoder's stride), hence above the minimum side."""
    if tile < 32 or tile % 32:
        raise ValueError(f"--tile must be a positive multiple of 32 (e.g. 512), got {tile}")
    return tile
