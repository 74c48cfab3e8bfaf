"""The Triton backend: the three graphs served by a Triton Inference Server (an ``export.triton`` repository).

Tiling, stitching and the score decision stay here in the client (runtime.predictor), so a scan
through a server gives the rows a local scan gives. It speaks gRPC: a gRPC channel may be used from
any thread (the HTTP client's gevent connections may not), tensors travel as raw bytes, and model
configurations come back as Triton's ModelConfig protobuf, whose ``trufor.*`` parameters (written
by export.triton) give the tile size, the precision and the identity of the exported graphs. For
each graph the TensorRT-plan model is used when the server has it ready, else the ONNX one.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from export.auto_precision import PrecisionChoice, on_gpu
from export.contract import FORMAT_VERSION, GRAPH_NAMES, GraphSpec, graph_specs
from export.errors import ArtifactError, BackendUnavailableError
from export.triton import INSTALL, PARAMETER_PREFIX, model_name
from reference.errors import TruForError

from .base import DEFAULT_SERVER_URL, Backend, BackendRequest, BaseRunner, ModelIdentity

TIMEOUT_S = 10.0  # readiness and configuration calls; inference has no deadline (large images take time)
_FIX = "write the models with python -m export.build --triton REPO (or python -m export.triton) and serve REPO"


def _grpcclient():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as error:
        raise BackendUnavailableError(f"the triton backend needs tritonclient with gRPC ({error}); {INSTALL}") from error
    return grpcclient


def _server_error():
    from tritonclient.utils import InferenceServerException

    return InferenceServerException


def connect(url: str):
    """A gRPC client of a live server; BackendUnavailableError naming ``url`` otherwise."""
    client = _grpcclient().InferenceServerClient(url)
    try:
        live = client.is_server_live(client_timeout=TIMEOUT_S)
    except _server_error() as error:
        live, reason = False, error.message()
    else:
        reason = "it says it is not live"
    if not live:
        client.close()
        raise BackendUnavailableError(
            f"no Triton server answers gRPC at {url} ({reason}); start one (tritonserver --model-repository "
            "REPO) or pass --url HOST:PORT with its gRPC port (8001 by default)"
        )
    return client


class TritonRunner(BaseRunner):
    """One model on the server; the client (one gRPC channel) lives from activate to deactivate."""

    def __init__(self, spec: GraphSpec, url: str, model: str, max_batch: int,
                 item_shapes: dict[str, tuple[int, ...]] | None = None):
        super().__init__(spec)
        self.url = url
        self.model = model
        self.max_batch = max_batch  # the model's max_batch_size: larger batches go as several requests
        self.item_shapes = item_shapes or {}  # outputs the config reshapes (score: [1] -> []): per-item shape
        self.client = None

    def activate_impl(self) -> None:
        self.client = connect(self.url)
        try:
            ready = self.client.is_model_ready(self.model, client_timeout=TIMEOUT_S)
        except _server_error():
            ready = False
        if not ready:
            self.deactivate_impl()
            raise BackendUnavailableError(f"model {self.model} is not ready on the Triton server at {self.url}; {_FIX}")

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(feed.values())))
        step = self.max_batch or count
        parts = [self._request({name: array[start : start + step] for name, array in feed.items()})
                 for start in range(0, count, step)]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in self.spec.output_names}

    def request_inputs(self, feed: dict[str, np.ndarray]) -> list:
        from tritonclient.utils import np_to_triton_dtype

        grpcclient = _grpcclient()
        inputs = []
        for name, array in feed.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        return inputs

    def _request(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = [_grpcclient().InferRequestedOutput(name) for name in self.spec.output_names]
        try:
            result = self.client.infer(self.model, self.request_inputs(feed), outputs=outputs)
        except _server_error() as error:
            raise TruForError(f"Triton server {self.url}, model {self.model}: {error.message()}") from error
        outputs = {name: result.as_numpy(name) for name in self.spec.output_names}
        count = len(next(iter(feed.values())))
        for name, shape in self.item_shapes.items():
            outputs[name] = outputs[name].reshape((count, *shape))
        return outputs

    def deactivate_impl(self) -> None:
        self.client.close()
        self.client = None


def _parameters(config) -> dict[str, str]:
    return {key[len(PARAMETER_PREFIX):]: value.string_value
            for key, value in config.parameters.items() if key.startswith(PARAMETER_PREFIX)}


def _pick_model(client, url: str, graph: str, precision: str) -> str:
    candidates = [model_name(graph, precision, plan=True), model_name(graph, precision)]
    for name in candidates:
        try:
            if client.is_model_ready(name, client_timeout=TIMEOUT_S):
                return name
        except _server_error():  # an unknown model is an error on some servers, "not ready" on others
            continue
    index = client.get_model_repository_index(client_timeout=TIMEOUT_S).models
    held = ", ".join(f"{m.name} ({m.state or 'not loaded'})" for m in index) or "nothing"
    raise BackendUnavailableError(
        f"the Triton server at {url} has neither {' nor '.join(candidates)} ready (it holds {held}); "
        f"pick the --precision it serves, or {_FIX}"
    )


def _contract_problems(config, graph: GraphSpec) -> list[str]:
    batch = [-1] if config.max_batch_size else []
    problems = []
    inputs = {tensor.name: batch + list(tensor.dims) for tensor in config.input}
    if set(inputs) != set(graph.input_names):
        problems.append(f"inputs {sorted(inputs)}, expected {sorted(graph.input_names)}")
    for spec in graph.inputs:
        dims = inputs.get(spec.name)
        if dims is not None and (len(dims) != len(spec.shape) or any(
                isinstance(want, int) and got not in (want, -1) for got, want in zip(dims, spec.shape))):
            problems.append(f"input {spec.name!r} has dims {dims}, expected {list(spec.shape)}")
    outputs = sorted(tensor.name for tensor in config.output)
    if outputs != sorted(graph.output_names):
        problems.append(f"outputs {outputs}, expected {sorted(graph.output_names)}")
    return problems


class TritonBackend(Backend):
    name = "triton"
    summary = "a Triton Inference Server at --url (python -m export.build --triton)"
    flags = ("--url",)
    model_source = (
        "triton runs the models of the server at --url, not a local model (their threads and tile size are set "
        "when the repository is written: python -m export.build --triton REPO --triton-threads N)"
    )
    auto = False  # a server has to be named

    def __init__(self, url: str = DEFAULT_SERVER_URL, precision: str = "fp32"):
        client = connect(url)
        try:
            self.models = {graph: _pick_model(client, url, graph, precision) for graph in GRAPH_NAMES}
            configs = {graph: client.get_model_config(name, client_timeout=TIMEOUT_S).config
                       for graph, name in self.models.items()}
        except _server_error() as error:
            raise BackendUnavailableError(
                f"the Triton server at {url} failed to describe its models: {error.message()}"
            ) from error
        finally:
            client.close()
        self.url = url
        self.parameters = {graph: _parameters(config) for graph, config in configs.items()}
        self._check_identity(precision)
        tile = self.parameters["tile"]
        specs = graph_specs(int(tile["tile_size"]), int(tile["num_classes"]))
        problems = [f"{self.models[g]}: {p}" for g in GRAPH_NAMES for p in _contract_problems(configs[g], specs[g])]
        if problems:
            raise ArtifactError(f"the models on the Triton server at {url} do not match the graph contract "
                                f"({'; '.join(problems)}); {_FIX}")
        runners = {}
        for graph, config in configs.items():
            reshaped = {o.name: tuple(o.reshape.shape) for o in config.output if o.HasField("reshape")}
            runners[graph] = TritonRunner(specs[graph], url, self.models[graph], config.max_batch_size, reshaped)
        random = None if tile["checkpoint_sha256"] else (
            f"the models of the Triton server at {url} were exported without a checkpoint: they hold")
        super().__init__(precision, int(tile["tile_size"]), runners, device=f"server {url}",
                         identity=ModelIdentity(self.model_identity(), random))

    @classmethod
    def unavailable(cls, request: BackendRequest) -> str | None:
        if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("grpc") is None:
            return f"tritonclient with gRPC is not installed ({INSTALL})"
        return None  # the server and its models are checked when the backend is created, naming the URL

    @classmethod
    def create(cls, request: BackendRequest) -> TritonBackend:
        return cls(request.url, request.precision)

    @classmethod
    def pick_precision(cls, request: BackendRequest) -> PrecisionChoice:
        """What the server serves fastest: fp16 TensorRT plans (it has a GPU), else fp32, else what it has."""
        client = connect(request.url)
        try:
            def ready(precision: str, plan: bool) -> bool:
                try:
                    return client.is_model_ready(model_name("tile", precision, plan=plan), client_timeout=TIMEOUT_S)
                except _server_error():
                    return False

            if ready("fp16", plan=True):
                return on_gpu(f"the Triton server at {request.url} serves TensorRT fp16 plans")
            for precision in ("fp32", "fp16", "int8"):
                if ready(precision, plan=True) or ready(precision, plan=False):
                    return PrecisionChoice(precision, f"the Triton server at {request.url} serves {precision} "
                                           "and no TensorRT fp16 plans")
        finally:
            client.close()
        return PrecisionChoice("fp32", f"the Triton server at {request.url} serves no TruFor model yet")

    def _check_identity(self, precision: str) -> None:
        """Each model is the graph and precision its name says, and all three come from one export."""
        problems = []
        for graph, params in self.parameters.items():
            wanted = {"graph": graph, "precision": precision, "format_version": str(FORMAT_VERSION)}
            problems += [f"{self.models[graph]} has {PARAMETER_PREFIX}{key} {params.get(key)!r}, expected {value!r}"
                         for key, value in wanted.items() if params.get(key) != value]
        if not problems:
            for key in ("preset", "checkpoint_sha256", "tile_size", "num_classes"):
                values = {graph: params.get(key) for graph, params in self.parameters.items()}
                if len(set(values.values())) > 1:
                    problems.append(f"{PARAMETER_PREFIX}{key} differs between the models: {values}")
        if problems:
            raise ArtifactError(f"the Triton server at {self.url} does not serve one TruFor export "
                                f"({'; '.join(problems)}); {_FIX}")

    def model_identity(self) -> str:
        """Which exported graphs answer (not where): scan.json refuses to mix rows of another model."""
        tile = self.parameters["tile"]
        digests = {g: ("plan", p["plan_sha256"]) if "plan_sha256" in p else ("onnx", p.get("onnx_sha256"))
                   for g, p in self.parameters.items()}
        graphs = ", ".join(f"{self.models[g]} ({kind} sha256 {digest})" for g, (kind, digest) in digests.items())
        source = f"checkpoint sha256 {tile['checkpoint_sha256']}" if tile["checkpoint_sha256"] else "random weights"
        return f"triton models {graphs}; preset {tile['preset']}, {source}"

    def describe(self) -> str:
        return f"triton ({self.precision}, tile {self.tile_size}, {self.url}: {', '.join(self.models.values())})"
