"""``runtime.scan --ray``: the same scan as a Ray Data job, for collections that outgrow one machine.

    python -m runtime.scan photos/ --out scan/ --artifacts artifacts/ --ray                 # a local cluster for this job
    python -m runtime.scan photos/ --out scan/ --artifacts artifacts/ --ray=head-node:6379  # a running cluster
    RAY_ADDRESS=head-node:6379 python -m runtime.scan photos/ --out scan/ --artifacts artifacts/ --ray

The driver does what the local scan does around the model: it lists the inputs still to do (resume,
the ``scan.json`` settings guard and the folder lock are the local scan's), and it alone appends
rows to ``results.jsonl``, each fsynced. Ray tasks read each input's bytes; an actor pool decodes
them and runs the project's ``Scanner`` (one model per actor: one actor per GPU when the backend
runs on a GPU, else CPU actors of ``--threads`` threads; one CPU of the cluster stays free for the
reading tasks' work, and they claim no CPU slot, so the pool can never starve its own input). The actors write the maps and overlays, so
on a multi-node cluster the inputs and ``--out`` must be on a filesystem that every node mounts at
the same path, and every node needs this project and its model artifacts installed the same way.

Crashes: a worker that dies (segfault, out-of-memory kill) is restarted and its batch retried
``TASK_RETRIES`` times. A batch that still fails is dropped by Ray Data (``max_errored_blocks``) and
its inputs are rerun one per task in a second pass; an input that kills its worker there too gets a
``worker_crash`` row. Good inputs of a dropped batch get their rows in the second pass, once.

A local cluster started for the job serves on 127.0.0.1 only, without a dashboard.

Token authentication: a local cluster started here uses Ray's own default (Ray 2.59 turned token
authentication on for local clusters; the token lives in ``~/.ray/auth_token``). To join a cluster
started with ``RAY_AUTH_MODE=token ray start --head``, export ``RAY_AUTH_MODE=token`` and the token
(``RAY_AUTH_TOKEN``, or a file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) before the
scan: Ray reads them itself, and nothing here handles the token.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from export.errors import BackendUnavailableError
from reference.errors import ImageDecodeError, TruForError
from reference.inputs import InputFile
from reference.weights import resolve_weights

from .backends import BackendRequest, cpu_count, create_backend
from .decode import Decoded, ImageOptions, decode, read_failure
from .errors import UsageError
from .predictor import Predictor
from .runners.base import Backend
from .scanner import OutputOptions, Scanner, error_row
from .tiling import TilingConfig

INSTALL = 'pip install -e ".[ray]"'
WORKER_CRASH = "worker_crash"
TASK_RETRIES = 2  # a batch runs at most 1 + TASK_RETRIES times per pass
# Reading bytes is I/O, and a read task that waits for a CPU slot can deadlock the job: actors hold
# their CPUs while they wait for input, and an actor that a crash restarted can outlive its pass
# (the CI run of the crash test hung so). Reads claim no slot, so nothing can starve them.
READ_TASK_CPUS = 0
RESERVED_CPUS = 1  # left free for the reading tasks' work and the second pass's actor
DEFAULT_ACTOR_THREADS = 4
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a single-machine cluster on 127.0.0.1


@dataclass(frozen=True)
class RayOptions:
    address: str  # "local": start a cluster for this job; else what ray.init(address=...) takes
    actors: int | None  # None: as many as fit the cluster


class RayArgs:
    """``--ray [ADDRESS]`` and ``--ray-actors``."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(f"Ray cluster (needs the ray extra: {INSTALL})")
        group.add_argument(
            "--ray",
            nargs="?",
            const="",
            default=None,
            metavar="ADDRESS",
            help="run the scan as a Ray Data job on the cluster at ADDRESS (host:port of `ray start --head`, or "
            "auto), else on $RAY_ADDRESS, else on a local cluster started for the job (on 127.0.0.1 only). "
            "Inputs and --out must be on a filesystem every node mounts at the same path. Write --ray=ADDRESS "
            "or put --ray after the inputs",
        )
        group.add_argument(
            "--ray-actors",
            type=int,
            default=None,
            metavar="N",
            help="model actors (default: one per GPU for GPU backends, else as many --threads-thread CPU "
            f"actors as fit, leaving {RESERVED_CPUS} CPU for reading)",
        )

    def parse(self, args: argparse.Namespace) -> RayOptions | None:
        if args.ray is None:
            if args.ray_actors is not None:
                raise UsageError("--ray-actors is read with --ray only; add --ray [ADDRESS]")
            return None
        if args.ray and os.path.exists(args.ray):
            raise UsageError(
                f"--ray took {args.ray!r}, an existing path, as the cluster address; write --ray=ADDRESS, "
                "or put --ray after the inputs"
            )
        if args.ray_actors is not None and args.ray_actors < 1:
            raise UsageError(f"--ray-actors must be >= 1, got {args.ray_actors}")
        return RayOptions(args.ray or os.environ.get("RAY_ADDRESS") or "local", args.ray_actors)


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise BackendUnavailableError(f"--ray needs Ray Data, which cannot be imported ({error}); install it: {INSTALL}")
    return ray


@contextmanager
def connect(options: RayOptions) -> Iterator[None]:
    """Joins (or starts) the cluster for the scan, and leaves it afterwards; a process that already
    called ``ray.init`` keeps its own connection."""
    local = options.address == "local"
    if local:
        # On Linux Ray serves a local cluster on the machine's network address; its single-machine
        # mode (the macOS and Windows default) binds every server to loopback. Read when ray is imported.
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(
            address=options.address,
            num_cpus=cpu_count() if local else None,
            include_dashboard=False if local else None,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, ray.exceptions.RayError, RuntimeError, ValueError) as error:
        where = "start a local Ray cluster" if local else f"connect to the Ray cluster at {options.address!r}"
        raise TruForError(
            f"cannot {where}: {type(error).__name__}: {error}. Check the address (ray status on the head node "
            "prints it); for a cluster with token authentication export RAY_AUTH_MODE=token and its token "
            "(RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
        ) from error
    try:
        yield
    finally:
        ray.shutdown()


def _read(row: dict) -> dict:
    """Ray task: an input's bytes, or why they cannot be read (never raises, so one bad file costs one row).
    No nulls: Ray Data hands a missing string to numpy batches as NaN."""
    start = time.perf_counter()
    try:
        data, error = Path(row["read_from"]).read_bytes(), ""
    except OSError as caught:
        data, error = b"", str(read_failure(row["path"], caught))
    return {**row, "data": data, "read_error": error, "read_seconds": time.perf_counter() - start}


class ScanActor:
    """One model per actor: decodes the bytes its batch carries and runs the shared ``Scanner``."""

    def __init__(self, request: BackendRequest, tiling: TilingConfig, image_options: ImageOptions, options: OutputOptions):
        backend = create_backend(request)
        self.predictor = Predictor(
            backend, tiling, exif_transpose=image_options.exif_transpose, max_pixels=image_options.max_pixels
        )
        self.scanner = Scanner(self.predictor, options)
        self.image_options = image_options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = []
        for path, relpath, data, read_error, seconds in zip(
            batch["path"], batch["relpath"], batch["data"], batch["read_error"], batch["read_seconds"]
        ):
            item = InputFile(Path(path), str(relpath))
            if read_error:
                images.append(Decoded(item, None, ImageDecodeError(read_error), float(seconds)))
            else:
                image = decode(item, self.image_options, bytes(data))
                images.append(replace(image, seconds=image.seconds + float(seconds)))
        try:
            rows = self.scanner.scan(images)
        except OSError as error:  # outputs cannot be written: the driver stops, as the local scan does
            return {"row": np.array([json.dumps({"fatal": f"{type(error).__name__}: {error}"})], dtype=object)}
        return {"row": np.array([json.dumps(row) for row in rows], dtype=object)}


class RayScan:
    """The Ray Data pipeline for one scan; ``rows`` yields one row per input for the driver to append."""

    def __init__(
        self,
        options: RayOptions,
        request: BackendRequest,
        backend: Backend,
        tiling: TilingConfig,
        image_options: ImageOptions,
        output_options: OutputOptions,
        actor_class: type = ScanActor,
    ):
        ray = _import_ray()
        self.backend = backend
        self.actor_class = actor_class
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), int(resources.get("GPU", 0))
        free_cpus = cpus - RESERVED_CPUS
        if backend.capabilities.gpu:
            self.threads, self.per_actor = request.threads, {"num_cpus": 1, "num_gpus": 1}
            fits = min(gpus, math.floor(free_cpus))
            self.each = "1 GPU and 1 CPU each"
        else:
            self.threads = request.threads or max(1, min(DEFAULT_ACTOR_THREADS, math.floor(free_cpus)))
            self.per_actor = {"num_cpus": self.threads}
            fits = math.floor(free_cpus / self.threads)
            self.each = f"{self.threads} CPU{'s' if self.threads > 1 else ''} each"
        self.actors = options.actors or fits
        if self.actors < 1 or self.actors > fits:
            asked = f"--ray-actors {options.actors}" if options.actors else "one actor"
            raise TruForError(
                f"{asked} cannot run: {fits} actors of {self.each} fit the Ray cluster ({gpus} GPUs, {cpus:g} "
                f"CPUs, {RESERVED_CPUS} kept for reading). Lower --ray-actors or --threads, or add nodes"
            )
        self.where = options.address
        # Actors open the model from absolute paths: workers do not share the driver's working directory.
        self.request = replace(
            request,
            backend=backend.name,
            threads=self.threads,
            artifacts=request.artifacts.resolve(),
            # resolved here, to absolute paths: the default model (None) resolves to one on each node
            weights=(resolve_weights(request.weights, request.preset, request.random_weights)
                     if request.weights is not None else None),
        )
        self.tiling = tiling
        self.image_options = image_options
        self.output_options = replace(output_options, out=output_options.out.resolve())

    def describe(self) -> str:
        return f"{self.actors} Ray actor{'s' if self.actors > 1 else ''} ({self.each}) on the cluster at {self.where}"

    def rows(self, todo: list[InputFile]) -> Iterator[dict]:
        """Every input's row exactly once: a first pass in batches, then the inputs of failed batches
        one per task, then ``worker_crash`` rows for those that failed alone too."""
        left = {item.relpath: item for item in todo}
        for batch_size in (self.tiling.batch_size, 1):
            if not left:
                return
            for row in self._run(list(left.values()), batch_size):
                if left.pop(row["relpath"], None) is not None:
                    yield row
            # Ray Data releases a finished pass's actors by dropping its references to them; errors
            # of crashed tasks can keep some in reference cycles, holding CPUs the next pass needs.
            gc.collect()
        attempts = 2 * (1 + TASK_RETRIES)
        for item in left.values():
            message = (
                f"the Ray worker scanning {item.path} failed each of the {attempts} times it tried (a crash or an "
                "out-of-memory kill in the decoder or the model; see the Ray logs, /tmp/ray/session_latest/logs "
                "on each node); rerun with --retry-errors to try again"
            )
            yield error_row(item, WORKER_CRASH, message, self.backend, None)

    def _run(self, items: list[InputFile], batch_size: int) -> Iterator[dict]:
        ray = _import_ray()
        from ray.util.annotations import RayDeprecationWarning

        records = [{"path": str(i.path), "relpath": i.relpath, "read_from": str(i.path.resolve())} for i in items]
        read = ray.data.from_items(records, override_num_blocks=math.ceil(len(records) / batch_size))
        read = read.map(_read, num_cpus=READ_TASK_CPUS)
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args but has no named parameter for these two yet.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
            dataset = read.map_batches(
                self.actor_class,
                fn_constructor_kwargs={
                    "request": self.request,
                    "tiling": self.tiling,
                    "image_options": self.image_options,
                    "options": self.output_options,
                },
                batch_size=batch_size,
                batch_format="numpy",
                # One batch in flight per actor: a crash then fails only the batch that caused it.
                compute=ray.data.ActorPoolStrategy(size=self.actors, max_tasks_in_flight_per_actor=1),
                max_restarts=-1,  # a crashed actor comes back: a crash costs a retry of its batch, not the actor
                max_task_retries=TASK_RETRIES,
                **self.per_actor,
            )
        context = dataset.context
        context.max_errored_blocks = -1  # a batch that kept crashing its worker is rerun by ``rows``
        context.enable_progress_bars = False  # the scan's own bar counts rows
        context.print_on_execution_start = False
        try:
            for record in dataset.iter_rows():
                row = json.loads(record["row"])
                if "fatal" in row:
                    raise OSError(f"a Ray worker cannot write the outputs: {row['fatal']}")
                yield row
        except ray.exceptions.RayError as error:  # e.g. actors that cannot start: nothing would run
            cause = [line for line in str(error).splitlines() if line.strip()][-1].strip()  # a traceback's last line
            raise TruForError(
                f"the Ray job stopped: {cause} (the full error is in the log above). Every node needs this "
                "project installed and the model files at the same paths as here"
            ) from error
