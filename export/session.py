"""The ONNX Runtime session settings the exported graphs were measured with (the runtime should reuse them).

- ``graph_optimization_level = ORT_ENABLE_ALL``: constant folding, Conv+activation fusion, MatMul
  scale fusion and the NCHWc convolution layout on x86; DQ/Conv/Q becomes QLinearConv for INT8.
- ``intra_op_num_threads``: one per physical core is fastest; ``inter_op_num_threads = 1`` and
  the sequential executor (these graphs have little branch parallelism).
- CPU memory arena on (the default), memory pattern OFF. Measured, full model, whole graph at
  1024 x 768, 2 threads, three runs in one session: arena on + pattern off 0.99 GB peak RSS on every
  run; arena on + pattern on 1.09 GB on the first run, 1.69 GB from the second (the cached plan is
  one more block); arena off 3.5 GB after one run, 7.7 GB after three (every activation is a
  malloc/free of tens to hundreds of MB and glibc's heap fragments). Speed is the same.
  The arena keeps the largest image's buffers for the session's life: route big images to tiles.
- Disabling prepacking or the NCHWc layout (``ORT_ENABLE_EXTENDED``) saves < 0.7 GB and is 2x slower.
- ``session.intra_op.allow_spinning = 0`` when other processes share the cores (batch scanning with
  decode workers): spinning threads then steal CPU from the workers; on an idle machine leave it on.

Optimized once, at export (``write_optimized``): ONNX Runtime's own optimized graph (``ORT_ENABLE_ALL``,
CPU provider, ONNX format) is written beside each graph the CPU runs, and the runtime loads it with graph
optimizations off instead of optimizing 267 MB at every start. ``ORT_ENABLE_ALL`` includes the NCHWc
layout, whose block size follows the CPU's vector width, so the file is valid only for the ONNX Runtime
version and the CPU features (``cpu_signature``) that made it; the runtime falls back to the plain graph,
optimized at load, anywhere else. Its initializers go to a file of their own (``optimized_data_path``),
which ONNX Runtime memory-maps. Measured, full model, fp32, 2 threads, one fresh process each, alternated,
quiet AMD EPYC (``python -m export.bench A --precision fp32 --graph whole|tile --runs 0 [--optimized]``,
BENCHMARKS.md "CPU start-up"): creating the whole graph's session took 0.77 to 0.88 s from the plain
graph, 0.76 to 0.79 s from the optimized graph with its initializers inside and 0.27 to 0.34 s with
them outside (peak RSS 0.45 to 0.54, 0.48 and 0.27 GB); the tile graph's 0.71 to 0.82 and 0.26 to 0.31 s.
Outputs are the same bit for bit. The ORT format (flatbuffers) loaded slower than the optimized ONNX
file (0.81 to 0.85 CPU s against 0.55 to 0.62, under load).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path

import onnxruntime as ort

from reference.outputs import atomic_write

CPU_PROVIDER = "CPUExecutionProvider"
# The CPU features ONNX Runtime's kernels and layout choices depend on (x86 and Arm names as Linux spells
# them in /proc/cpuinfo); an optimized graph is reused only on a CPU with the same ones.
CPU_FEATURES = (
    "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
    "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "fphp", "i8mm", "bf16", "sve", "sve2",
)  # fmt: skip


def cpu_signature() -> str:
    """This CPU as an optimized graph depends on it: "x86_64:avx,avx2,...,avx512f,...". Where Linux's
    /proc/cpuinfo is not there, the machine and the processor string stand in for the feature list."""
    machine = platform.machine() or "unknown"
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    return f"{machine}:{','.join(f for f in CPU_FEATURES if f in have)}"
    except OSError:
        pass
    return f"{machine}:{platform.processor() or 'unknown'}"


def session_options(threads: int | None = None, *, arena: bool = True, profile_prefix: str | None = None,
                    optimize: bool = True) -> ort.SessionOptions:
    """``optimize=False`` for a graph ``write_optimized`` already optimized: ONNX Runtime runs it as it is."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (one per core)
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = False
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def cpu_session(path: str | os.PathLike, threads: int | None = None, **kwargs) -> ort.InferenceSession:
    """A CPU InferenceSession for one exported graph with the recommended options."""
    return ort.InferenceSession(os.fspath(path), session_options(threads, **kwargs), providers=[CPU_PROVIDER])


def optimized_data_path(path: str | os.PathLike) -> Path:
    """Where ``write_optimized`` puts the initializers of the optimized graph at ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def write_optimized(source: str | os.PathLike, path: str | os.PathLike) -> dict[str, str]:
    """ONNX Runtime's CPU-optimized form of the graph ``source``, written (atomically) at ``path`` with its
    initializers in ``optimized_data_path(path)``; returns what the runtime checks before loading it: the
    ONNX Runtime version, provider and CPU that made it.

    External initializers are memory-mapped at load instead of parsed out of the protobuf and copied: the
    full model's sessions start about 0.45 s sooner each (module docstring)."""
    path = Path(path)
    data = optimized_data_path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".optimize-") as folder:
        made = Path(folder) / path.name
        options = session_options()
        options.optimized_model_filepath = os.fspath(made)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data.name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        options.log_severity_level = 3  # ORT warns that NCHWc graphs are hardware-specific: recorded below
        ort.InferenceSession(os.fspath(source), options, providers=[CPU_PROVIDER])
        for written, final in ((made.with_name(data.name), data), (made, path)):  # the graph last: it names the data
            with open(written, "rb") as file:
                atomic_write(final, lambda out, file=file: shutil.copyfileobj(file, out, 1 << 24))
    return {"onnxruntime": ort.__version__, "provider": CPU_PROVIDER, "cpu": cpu_signature()}
