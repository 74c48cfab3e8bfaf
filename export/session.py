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
"""

from __future__ import annotations

import os

import onnxruntime as ort


def session_options(threads: int | None = None, *, arena: bool = True, profile_prefix: str | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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
    return ort.InferenceSession(os.fspath(path), session_options(threads, **kwargs), providers=["CPUExecutionProvider"])
