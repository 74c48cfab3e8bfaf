"""The TensorRT plans as Triton models: ``trufor_<graph>_<precision>_trt`` beside the ONNX ones of ``export.triton``.

    python -m engines.triton --artifacts DIR --precision P --out REPO [--device D --instances N ...]

``python -m export.build --triton REPO`` and ``python -m export.triton`` run it after writing the ONNX
models: it adds one model per plan that ``engines.<precision>.json`` lists (none when no engine was
built), refuses plans built from another graph than the manifest's, and needs no TensorRT. A plan's
batch limits come from its optimization profiles, with one instance group per profile.
"""

from __future__ import annotations

import sys

from export.contract import GRAPH_NAMES
from export.errors import ArtifactError
from export.manifest import Manifest, load_manifest
from export.triton import (
    QUEUE_DELAY_US,
    TritonModel,
    TritonOptions,
    base_config,
    identity_parameters,
    model_config_pb2,
    parse_repository_args,
    write_models,
)
from reference.errors import TruForError

from .artifacts import engine_path, index_path, read_index, rebuild_command
from .cache import read_sidecar

PLAN_NOTE = (
    "# A TensorRT plan runs only on the GPU model and TensorRT version that built it (parameters\n"
    "# trufor.gpu_name, trufor.tensorrt_version): the server's TensorRT must match, else rebuild\n"
    "# the engines there (python -m engines.build) and rewrite this repository.\n"
)


def plan_model(manifest: Manifest, graph: str, sidecar: dict, options: TritonOptions) -> TritonModel:
    """A plan's batch limits come from its optimization profiles; one instance group per profile."""
    pb = model_config_pb2()
    key = sidecar["key"]
    profiles = key.to_json()["profiles"]
    first_input = manifest.graph(graph).spec.input_names[0]
    _, opt, high = profiles[0][first_input]
    max_batch = 0 if graph == "score" else high[0]
    identity = {**identity_parameters(manifest, graph), "plan_sha256": sidecar["plan_sha256"],
                "tensorrt_version": key.tensorrt_version, "gpu_name": key.gpu_name,
                "compute_capability": key.compute_capability}
    config = base_config(manifest, graph, "tensorrt_plan", max_batch, identity)
    if graph == "tile":
        config.dynamic_batching.preferred_batch_size.extend(sorted({opt[0], high[0]}))
        config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    elif max_batch > 1:
        config.dynamic_batching.SetInParent()
    for index in range(len(profiles)):  # engines.build makes identical profiles, one per context
        config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=options.instances, profile=[str(index)])
    return TritonModel(config.name, config, sidecar["path"], "model.plan", PLAN_NOTE)


def plan_sidecars(manifest: Manifest) -> dict[str, dict]:
    """graph -> sidecar (plus ``path``) of each plan ``engines.build`` recorded; {} when none was built."""
    if not index_path(manifest.directory, manifest.precision).is_file():
        return {}
    hint = rebuild_command(manifest.directory, manifest.precision)
    sidecars = {}
    for graph in read_index(manifest.directory, manifest.precision)["engines"]:
        plan = engine_path(manifest.graph(graph).path)
        data = read_sidecar(plan, hint)
        if data["key"].onnx_sha256 != manifest.graph(graph).sha256:
            raise ArtifactError(f"engine {plan} was built from another {graph} graph than "
                                f"{manifest.graph(graph).path} (stale); rebuild it with: {hint}")
        sidecars[graph] = {**data, "path": plan}
    return sidecars


def plan_models(manifest: Manifest, options: TritonOptions = TritonOptions()) -> list[TritonModel]:
    """The models of every plan built for ``manifest``, all checked before any is written."""
    plans = plan_sidecars(manifest)
    return [plan_model(manifest, graph, plans[graph], options) for graph in GRAPH_NAMES if graph in plans]


def main(argv: list[str] | None = None) -> int:
    args, options = parse_repository_args("python -m engines.triton", __doc__.split("\n\n")[0], argv)
    try:
        manifest = load_manifest(args.artifacts, args.precision)
        models = plan_models(manifest, options)
        if not models:
            print(f"No TensorRT engines for {args.precision} in {args.artifacts}: no plan model added to {args.out}")
            return 0
        names = write_models(models, args.out, args.precision)
    except TruForError as error:
        print(f"[E] {error}", file=sys.stderr)
        return 1
    print(f"Triton plan models in {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
