"""The runner interface every backend implements, and the ``Backend`` that holds three runners.

Polygraphy-style: the public ``activate`` / ``infer`` / ``deactivate`` of ``BaseRunner`` check
state and inputs against the graph's contract (``export.contract.GraphSpec``: the export's I/O,
read back from the manifest); a backend implements only the ``*_impl`` hooks. A *backend* is three
runners, one per exported graph (``whole``, ``tile``, ``score``), plus what the rest of the runtime
needs to know about it: its identity (name, precision, the model it runs), its device and its
capabilities; the class attributes say which flags and precisions it takes, and ``unavailable`` /
``create`` are what the registry (``runtime.backends``) calls. Nothing else in the runtime names a
backend: adding one is one runner module plus one registry line (runtime/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from export.auto_precision import PrecisionChoice, on_cpu
from export.contract import GRAPH_NAMES, PRECISION_NAMES, GraphSpec, WholeImageRule
from reference.errors import TruForError
from reference.weights import ResolvedWeights

DEFAULT_ARTIFACTS = Path("artifacts")
DEFAULT_SERVER_URL = "localhost:8001"  # an inference server's gRPC port on this machine


def cpu_count() -> int:
    """The cores this process may use (its affinity mask), the default thread count of every backend."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class BackendRequest:
    """What the user asked for, built once at the CLI edge; each backend reads the fields of its ``flags``."""

    backend: str = "auto"
    precision: str = "fp32"
    artifacts: Path = DEFAULT_ARTIFACTS
    # None: no weights flag given (the torch backend runs the project's default model); else what
    # ``reference.weights.resolve_weights`` takes: "official", a zip or checkpoint path, or its result.
    weights: str | os.PathLike | ResolvedWeights | None = None
    preset: str | None = None
    random_weights: bool = False  # untrained weights of ``preset``: pipeline tests only
    device: str = "cpu"
    threads: int | None = None  # intra-op threads; None: all cores
    tile_size: int | None = None  # backends without artifacts; the others take it from the manifest
    url: str = DEFAULT_SERVER_URL  # the inference server's gRPC address


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the runner interface, for the code that schedules work around it."""

    async_submit: bool = False  # ``submit_batch`` returns before the outputs exist: tiles compute while the host blends
    gpu: bool = False  # computes on a GPU of this machine (a Ray actor then claims one)
    release_memory: bool = False  # the whole graph keeps working memory between calls and can give it back
    # The torch device ("cuda:0") whose tensors the tile and score runners' ``submit_tensors`` take and
    # give: tiles are then cut, blended and pooled there (runtime.device_tiling). None: numpy only.
    device_tensors: str | None = None


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a backend runs: ``description`` goes into scan.json, so rows of another model are never
    mixed in; ``random_weights`` is what holds random weights, said in the scan's warning (None: trained)."""

    description: str
    random_weights: str | None = None


class BaseRunner:
    """Runs one graph. Use as a context manager, or call ``activate`` / ``deactivate`` yourself."""

    runs_on = ""  # the backend name it computes with; its Backend fills in its own name when empty

    def __init__(self, spec: GraphSpec):
        self.graph = spec.kind
        self.spec = spec
        self.is_active = False

    @property
    def ran_on(self) -> str:
        """The backend that computed the latest submission: ``runs_on``, or the fallback's name after a
        runner handed an input it cannot take to a fallback (TensorRT to ONNX Runtime)."""
        return self.runs_on

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
        names = self.spec.input_names
        missing = sorted(set(names) - set(feed))
        extra = sorted(set(feed) - set(names))
        if missing or extra:
            raise TruForError(f"{self.graph} graph takes inputs {sorted(names)}; missing {missing}, unexpected {extra}")
        for spec in self.spec.inputs:
            spec.check(self.graph, feed[spec.name])
        outputs = self.infer_impl(feed)
        missing = [name for name in self.spec.output_names if name not in outputs]
        assert not missing, f"{type(self).__name__} ({self.graph}) did not return {missing}"
        return outputs

    def submit_batch(self, feed: dict[str, np.ndarray]) -> Callable[[], dict[str, np.ndarray]]:
        """Start ``feed`` and return the call that waits for its outputs. Here the work is done before
        returning; a backend with ``Capabilities.async_submit`` returns at once."""
        outputs = self.infer(feed)
        return lambda: outputs

    def submit_tensors(self, feed: dict) -> Callable[[], dict]:
        """Start ``feed`` given as torch tensors on ``Capabilities.device_tensors`` and return the call that
        gives the outputs as tensors there. Backends with ``device_tensors`` override it to stay on the
        device (the work may still be queued on its current stream when it returns); this one goes
        through the host, for a runner that stands in for another (a fallback, say)."""
        import torch

        device = next(iter(feed.values())).device
        outputs = self.infer({name: tensor.cpu().numpy() for name, tensor in feed.items()})
        result = {name: torch.from_numpy(array).to(device) for name, array in outputs.items()}
        return lambda: result

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
    """Three runners (``whole``, ``tile``, ``score``) with the identity, device and capabilities of what runs them."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for --backend's help
    precisions: ClassVar[tuple[str, ...]] = PRECISION_NAMES
    flags: ClassVar[tuple[str, ...]] = ()  # the model flags it reads (--artifacts, --weights, --url, ...)
    model_source: ClassVar[str]  # where it takes its model from: said when a flag it does not read is given
    auto: ClassVar[bool] = True  # --backend auto may pick it (in registry order, fastest first)
    precision_choice: PrecisionChoice | None = None  # what --precision auto chose, and why (runtime.backends sets it)

    def __init__(self, precision: str, tile_size: int, runners: dict[str, BaseRunner], *, device: str,
                 identity: ModelIdentity, capabilities: Capabilities = Capabilities(),
                 whole_rule: WholeImageRule | None = None):
        assert set(runners) == set(GRAPH_NAMES), sorted(runners)
        self.precision = precision
        self.tile_size = tile_size
        self.runners = runners
        for runner in runners.values():
            runner.runs_on = runner.runs_on or self.name
        # Which images its whole graph runs (the manifest's, which sized a TensorRT profile); None: the
        # contract's default, for backends that take any size.
        self.whole_rule = whole_rule
        self.device = device  # where it computes, in words: "cpu", "cuda:0", "NVIDIA H100 80GB HBM3", a server
        self.identity = identity
        self.capabilities = capabilities

    # What the registry calls.
    @classmethod
    def usage_problem(cls, request: BackendRequest) -> str | None:
        """Why ``request`` can never run on this backend whatever the machine, as a predicate of its name
        ("runs fp32, fp16 only, but ..."), or None."""
        if request.precision not in cls.precisions:
            return f"runs {', '.join(cls.precisions)} only, but --precision {request.precision} was given"
        return None

    @classmethod
    def unavailable(cls, request: BackendRequest) -> str | None:
        """Why this backend cannot run ``request`` on this machine (a package, a device, the model's files), or None."""
        return None

    @classmethod
    def pick_precision(cls, request: BackendRequest) -> PrecisionChoice:
        """What ``--precision auto`` means for this backend here: its fastest precision, and why."""
        return on_cpu()

    @classmethod
    def create(cls, request: BackendRequest) -> Backend:
        raise NotImplementedError

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

