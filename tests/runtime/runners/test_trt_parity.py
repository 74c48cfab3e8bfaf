"""TensorRT engines against the PyTorch reference and ONNX Runtime on the same graphs (GPU + TensorRT only).

A tiny TruFor is exported per precision and built with small profiles. Tolerances:
- fp32 (TF32 off): float rounding only, 1e-3.
- fp16: the graph keeps LayerNorm, softmax, pooling and the score head in float32, so map/conf
  differ mostly by float16 rounding of convolutions and matmuls: 99th percentile of |diff| <= 2e-2
  (a quantile: a few pixels on a decision edge may move more), score <= 2e-2.
- int8: vs ONNX Runtime on the same Q/DQ graph, both quantize identically but TensorRT fuses Q/DQ
  into int8 kernels with its own requantization rounding, so values may differ by about one
  quantization step: p99 <= 5e-2, score <= 5e-2. vs the fp32 reference, the quantization error
  itself adds up (random weights calibrated on 4 synthetic tiles): p99 <= 0.15, score <= 0.1.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from trufor_testing import randomize_

TOLERANCES = {  # precision -> (vs ONNX Runtime, vs reference): (map/conf p99, score)
    "fp32": ((1e-3, 1e-3), (1e-3, 1e-3)),
    "fp16": ((2e-2, 2e-2), (2e-2, 2e-2)),
    "int8": ((5e-2, 5e-2), (0.15, 0.1)),
}
TILE = 64


def _skip_reason() -> str | None:
    from engines._trt import tensorrt
    from engines.cuda import gpu_unavailable_reason

    if not tensorrt.is_importable:
        return f"needs the full TensorRT package (builder): {tensorrt.import_error}"
    return gpu_unavailable_reason()


REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@contextlib.contextmanager
def _quiet(label, path=None):
    yield


@pytest.fixture(scope="module")
def model():
    from reference import build_trufor
    from export.pipeline import EXPORT_OVERRIDES

    return randomize_(build_trufor("tiny", **EXPORT_OVERRIDES), seed=3).eval()


@pytest.fixture(scope="module", params=["fp32", "fp16", "int8"])
def built(request, model, tmp_path_factory):
    from engines.build import build_engines
    from export.build import BuildConfig
    from export.contract import WholeImageRule
    from export.manifest import load_manifest
    from export.pipeline import export_artifacts

    precision = request.param
    folder = tmp_path_factory.mktemp(f"trt-{precision}")
    config = BuildConfig(precision=precision, preset="tiny", out=folder, tile=TILE, calib_count=4,
                         whole_rule=WholeImageRule(256 * 256, 256))
    export_artifacts(config, _quiet, model=model)
    build_engines(load_manifest(folder, precision), opt_height=128, opt_width=128,
                  max_batch=2, max_tile_batch=4, opt_tile_batch=2, max_score_side=512)
    return precision, folder


def image(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    base = 128 + 60 * np.sin(6 * xx[None, ..., None] + 4 * yy[None, ..., None] + rng.uniform(0, 6, (batch, 1, 1, 3)))
    return np.clip(base + rng.normal(0, 20, (batch, height, width, 3)), 0, 255).astype(np.uint8)


def reference(model, rgb):
    from reference.model import images_to_input, probabilities

    with torch.inference_mode():
        probs = probabilities(model(images_to_input(torch.from_numpy(rgb))))
    return {"map": probs.map.numpy(), "conf": probs.conf.numpy(), "score": probs.score.numpy()}


def compare(got, want, tolerance, label):
    maps, score = tolerance
    for name in ("map", "conf"):
        p99 = float(np.percentile(np.abs(got[name] - want[name]), 99))
        assert p99 <= maps, f"{label}: {name} 99th percentile |diff| {p99:.2e} > {maps:.0e}"
    worst = float(np.abs(got["score"] - want["score"]).max())
    assert worst <= score, f"{label}: score |diff| {worst:.2e} > {score:.0e}"


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 96, 128), (1, 29, 61)])
def test_whole_engine_matches_onnxruntime_and_reference(built, model, shape):
    from runtime.runners.ort_runner import OrtBackend
    from runtime.runners.trt_backend import TensorRTBackend

    precision, folder = built
    rgb = image(*shape, seed=shape[1])
    with TensorRTBackend(folder, precision, fallback=False) as trt, OrtBackend(folder, precision, ["CPUExecutionProvider"]) as ort:
        got = trt.whole.infer({"image": rgb})
        compare(got, ort.whole.infer({"image": rgb}), TOLERANCES[precision][0], f"{precision} TensorRT vs ORT")
    compare(got, reference(model, rgb), TOLERANCES[precision][1], f"{precision} TensorRT vs reference")


def test_tile_and_score_engines_match_onnxruntime(built):
    from runtime.runners.ort_runner import OrtBackend
    from runtime.runners.trt_backend import TensorRTBackend

    precision, folder = built
    tiles = image(3, TILE, TILE, seed=7)  # batch 3 > opt 2: exercises the CUDA graph at two batch sizes
    with TensorRTBackend(folder, precision, fallback=False) as trt, OrtBackend(folder, precision, ["CPUExecutionProvider"]) as ort:
        for _ in range(3):  # plain run, capture, replay
            got = trt.tile.infer({"image": tiles})
        want = ort.tile.infer({"image": tiles})
        limit = TOLERANCES[precision][0][0] * 10  # logits, not probabilities: ~10x the spread
        for name in ("loc_logits", "conf_logits"):
            assert float(np.percentile(np.abs(got[name] - want[name]), 99)) <= limit, name
        feed = {"loc_logits": want["loc_logits"][:1], "conf_logits": want["conf_logits"][:1]}
        compare(trt.score.infer(feed), ort.score.infer(feed), TOLERANCES["fp32"][0], "score engine vs ORT")


def test_stale_engine_is_refused_at_load(built, tmp_path):
    import shutil

    from engines.cache import sidecar_path
    from engines.errors import EngineCacheError
    from runtime.runners.trt_backend import TensorRTBackend

    precision, folder = built
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    plan = next(copy.glob("trufor_whole.*.engine"))
    plan.write_bytes(plan.read_bytes()[:-1] + b"\x00")
    with pytest.raises(EngineCacheError, match="sha256"):
        TensorRTBackend(copy, precision).activate()
    sidecar_path(plan).unlink()
    with pytest.raises(EngineCacheError, match="no sidecar"):
        TensorRTBackend(copy, precision).activate()
