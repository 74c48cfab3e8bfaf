"""The ONNX Runtime session settings the exported graphs were measured with (the runtime should reuse them).

- ``graph_optimization_level = ORT_ENABLE_ALL``: constant folding, Conv+activation fusion, MatMul
  scale fusion and the NCHWc convolution layout on x86; DQ/Conv/Q becomes QLinearConv for INT8.
- ``intra_op_num_threads``: one per physical core is fastest; ``inter_op_num_threads = 1`` and
  the sequential executor (these graphs have little branch parallelism).
- ``enable_cpu_mem_arena = False``: the arena keeps the largest buffers of the biggest image seen
  for the life of the session; without it, freed activations go back to the system, which keeps
  the peak close to the live tensors of one image (the FP32/INT8 numbers in the report).
- ``enable_mem_pattern = False``: with dynamic H/W a pattern is only valid for one size, and it
  pre-allocates one block for the whole run.
"""

from __future__ import annotations

import os

import onnxruntime as ort


def session_options(threads: int | None = None, *, low_memory: bool = True, profile_prefix: str | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (one per core)
    options.inter_op_num_threads = 1
    if low_memory:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def cpu_session(path: str | os.PathLike, threads: int | None = None, **kwargs) -> ort.InferenceSession:
    """A CPU InferenceSession for one exported graph with the recommended options."""
    return ort.InferenceSession(os.fspath(path), session_options(threads, **kwargs), providers=["CPUExecutionProvider"])
