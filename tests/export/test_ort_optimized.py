"""ONNX Runtime's optimized graphs, written at export: same outputs as the plain graphs they come from.

The export optimizes the file the CPU provider loads (``GraphEntry.cpu_file``: the uint8 form of an int8
graph) once; the runtime loads the result with graph optimizations off. Both must give the same numbers:
the same kernels run, so the bound is float rounding of any reordered reduction (measured: 0 here).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from export_helpers import TILE, random_image

from export.manifest import load_manifest, sha256_file
from export.session import cpu_signature, session_options

PRECISIONS = ["fp32", "fp16", "int8"]
FEEDS = {
    "whole": lambda: {"image": random_image((1, 70, 45, 3), seed=2)},
    "tile": lambda: {"image": random_image((2, TILE, TILE, 3), seed=3)},
    "score": lambda: {"loc_logits": np.random.default_rng(4).normal(size=(1, 2, 40, 56)).astype(np.float32),
                      "conf_logits": np.random.default_rng(5).normal(size=(1, 1, 40, 56)).astype(np.float32)},
}


def _session(path, optimize: bool) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(1, optimize=optimize), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_optimized_graphs_match_the_plain_ones(artifacts_dir, precision):
    manifest = load_manifest(artifacts_dir(precision), precision)
    for graph, feed in FEEDS.items():
        entry = manifest.graph(graph)
        optimized = entry.ort_optimized
        plain_path, _ = entry.cpu_file
        assert optimized.path.name == plain_path.name.replace(".onnx", "-ortcpu.onnx")
        assert optimized.sha256 == sha256_file(optimized.path)
        assert optimized.data.name == optimized.path.name + ".data"  # initializers memory-mapped at load
        assert optimized.data_sha256 == sha256_file(optimized.data)
        assert (optimized.onnxruntime, optimized.provider, optimized.cpu) == (
            ort.__version__, "CPUExecutionProvider", cpu_signature())
        inputs = feed()
        want = _session(plain_path, optimize=True).run(None, inputs)
        got = _session(optimized.path, optimize=False).run(None, inputs)
        for name, a, b in zip(entry.spec.output_names, got, want):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=f"{precision} {graph} {name}")


def test_cpu_signature_names_the_machine_and_its_vector_features():
    signature = cpu_signature()
    machine, _, features = signature.partition(":")
    assert machine and features
    assert signature == cpu_signature()  # stable: it keys the optimized graphs
