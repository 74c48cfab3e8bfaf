"""The runner interface every backend implements, and the graph I/O contract it must honour.

Polygraphy-style: the public ``activate`` / ``infer`` / ``deactivate`` of ``BaseRunner`` check
state and inputs; a backend implements only the ``*_impl`` hooks. A *backend* (``Backend``) is
three runners, one per exported graph, with exactly the I/O of the ONNX export:

- ``whole``: ``image`` uint8 [batch, height, width, 3] -> ``map``, ``conf`` float32 [batch, H, W],
  ``score`` float32 [batch];
- ``tile``: ``image`` uint8 [batch, T, T, 3] -> ``loc_logits`` float32 [batch, 2, T, T],
  ``conf_logits`` float32 [batch, 1, T, T];
- ``score``: ``loc_logits`` float32 [1, 2, H, W], ``conf_logits`` float32 [1, 1, H, W] -> ``map``,
  ``conf`` [1, H, W], ``score`` [1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.errors import TruForError

GRAPH_NAMES = ("whole", "tile", "score")


@dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of one graph input; a string in ``shape`` is a dynamic dimension."""

    dtype: np.dtype
    shape: tuple[int | str, ...]

    def check(self, graph: str, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TruForError(f"{graph} graph: input {name!r} must be a numpy array, got {type(array).__name__}")
        if array.dtype != self.dtype:
            raise TruForError(
                f"{graph} graph: input {name!r} has dtype {array.dtype}, expected {np.dtype(self.dtype)}"
            )
        if array.ndim != len(self.shape) or any(
            isinstance(want, int) and got != want for got, want in zip(array.shape, self.shape)
        ):
            raise TruForError(
                f"{graph} graph: input {name!r} has shape {array.shape}, expected {self.shape}"
            )


@dataclass(frozen=True)
class GraphIO:
    inputs: dict[str, TensorSpec]
    outputs: tuple[str, ...]


def graph_io(tile_size: int, num_classes: int = 2) -> dict[str, GraphIO]:
    """The export's I/O contract for the three graphs, for a tile graph of ``tile_size`` pixels."""
    uint8, float32 = np.dtype(np.uint8), np.dtype(np.float32)
    return {
        "whole": GraphIO(
            {"image": TensorSpec(uint8, ("batch", "height", "width", 3))}, ("map", "conf", "score")
        ),
        "tile": GraphIO(
            {"image": TensorSpec(uint8, ("batch", tile_size, tile_size, 3))}, ("loc_logits", "conf_logits")
        ),
        "score": GraphIO(
            {
                "loc_logits": TensorSpec(float32, (1, num_classes, "height", "width")),
                "conf_logits": TensorSpec(float32, (1, 1, "height", "width")),
            },
            ("map", "conf", "score"),
        ),
    }


class BaseRunner:
    """Runs one graph. Use as a context manager, or call ``activate`` / ``deactivate`` yourself."""

    def __init__(self, graph: str, io: GraphIO):
        self.graph = graph
        self.io = io
        self.is_active = False

    # Hooks a backend implements.
    def activate_impl(self) -> None:
        pass

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass

    def release_memory_impl(self) -> None:
        pass

    # Public API: checks here, work in the hooks.
    def activate(self) -> None:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__} ({self.graph}) must be activated before infer()")
        missing = sorted(set(self.io.inputs) - set(feed))
        extra = sorted(set(feed) - set(self.io.inputs))
        if missing or extra:
            raise TruForError(
                f"{self.graph} graph takes inputs {sorted(self.io.inputs)}; missing {missing}, unexpected {extra}"
            )
        for name, spec in self.io.inputs.items():
            spec.check(self.graph, name, feed[name])
        outputs = self.infer_impl(feed)
        missing = [name for name in self.io.outputs if name not in outputs]
        assert not missing, f"{type(self).__name__} ({self.graph}) did not return {missing}"
        return outputs

    def release_memory(self) -> None:
        """Give back the working memory kept from earlier calls (sized for the largest input so far).

        For when this graph will not run for a while: a Predictor calls it on ``whole`` before a
        tiled image, so the two graphs' buffers never add up. The next call allocates afresh.
        """
        if self.is_active:
            self.release_memory_impl()

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()


class Backend:
    """Three runners (``whole``, ``tile``, ``score``) plus what results are labelled with."""

    name: str = "base"

    def __init__(self, precision: str, tile_size: int, runners: dict[str, BaseRunner]):
        assert set(runners) == set(GRAPH_NAMES), sorted(runners)
        self.precision = precision
        self.tile_size = tile_size
        self.runners = runners

    @property
    def whole(self) -> BaseRunner:
        return self.runners["whole"]

    @property
    def tile(self) -> BaseRunner:
        return self.runners["tile"]

    @property
    def score(self) -> BaseRunner:
        return self.runners["score"]

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, tile {self.tile_size})"

    def activate(self) -> None:
        for runner in self.runners.values():
            runner.activate()

    def deactivate(self) -> None:
        for runner in self.runners.values():
            runner.deactivate()

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()
