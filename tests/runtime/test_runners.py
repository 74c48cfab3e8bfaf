"""Runners: the torch backend reproduces the reference model exactly, ONNX Runtime matches it to 1e-4.

Both backends go through one checker (``check_backend``) on the same images and sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from rt_helpers import TILE, noise_image, tiny_with_weights

from reference.errors import TruForError
from reference.model import probabilities, to_tensor
from runtime.predictor import Predictor
from runtime.runners.torch_runner import TorchBackend
from runtime.tiling import TilingConfig

SIZES = [(64, 64), (48, 80), (29, 29), (75, 100)]


def reference_outputs(model, rgb):
    with torch.inference_mode():
        probs = probabilities(model(to_tensor(rgb)))
    return probs.map[0].numpy(), probs.conf[0].numpy(), float(probs.score[0])


@pytest.mark.parametrize("shape", SIZES)
def test_torch_whole_graph_equals_the_reference_model_exactly(tiny_model, torch_backend, shape):
    rgb = noise_image(*shape, seed=sum(shape))
    with torch_backend:
        out = torch_backend.whole.infer({"image": rgb[None]})
    ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
    assert ref_map.std() > 1e-3
    np.testing.assert_array_equal(out["map"][0], ref_map)
    np.testing.assert_array_equal(out["conf"][0], ref_conf)
    assert float(out["score"][0]) == ref_score


def test_torch_batched_whole_graph_matches_one_by_one(tiny_model, torch_backend):
    images = np.stack([noise_image(48, 64, seed=s) for s in range(3)])
    with torch_backend:
        batched = torch_backend.whole.infer({"image": images})
    for i, rgb in enumerate(images):
        ref_map, ref_conf, ref_score = reference_outputs(tiny_model, rgb)
        np.testing.assert_allclose(batched["map"][i], ref_map, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched["conf"][i], ref_conf, rtol=0, atol=1e-5)
        assert abs(float(batched["score"][i]) - ref_score) < 1e-5


def test_runner_checks_names_dtypes_shapes_and_activation(torch_backend):
    rgb = noise_image(TILE, TILE)
    with pytest.raises(RuntimeError, match="activated"):
        torch_backend.tile.infer({"image": rgb[None]})
    with torch_backend:
        with pytest.raises(TruForError, match="missing \\['image'\\]"):
            torch_backend.whole.infer({"pixels": rgb[None]})
        with pytest.raises(TruForError, match="dtype float32, expected uint8"):
            torch_backend.whole.infer({"image": rgb[None].astype(np.float32)})
        with pytest.raises(TruForError, match="shape"):
            torch_backend.tile.infer({"image": rgb[None, :32]})
    assert not torch_backend.whole.is_active


# --- ONNX Runtime ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_artifacts(tmp_path_factory):
    """fp32 artifacts of the tiny model with perturbed weights, built by the real export CLI."""
    folder = tmp_path_factory.mktemp("ort")
    model = tiny_with_weights(seed=5)
    checkpoint = folder / "tiny.pth.tar"
    torch.save({"state_dict": model.state_dict(), "epoch": 0}, checkpoint)
    out = folder / "artifacts"
    command = [
        sys.executable, "-m", "export.build", "--preset", "tiny", "--checkpoint", str(checkpoint),
        "--precision", "fp32", "--onnx-only", "--tile", str(TILE), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return out, model


@pytest.fixture(scope="module")
def backend_pair(ort_artifacts):
    """The ONNX Runtime backend over the artifacts and the torch backend over the same weights, active."""
    from runtime.runners.ort_runner import OrtBackend

    out, model = ort_artifacts
    with OrtBackend(out, "fp32", threads=2) as ort_backend, TorchBackend(model, tile_size=TILE) as torch_backend:
        yield ort_backend, torch_backend


@pytest.mark.parametrize("threshold", [10**9, 0], ids=["whole", "tiled"])
@pytest.mark.parametrize("shape", [(64, 64), (29, 29), (75, 100), (150, 130)])
def test_onnxruntime_matches_torch(backend_pair, shape, threshold):
    ort_backend, torch_backend = backend_pair
    assert ort_backend.tile_size == TILE and ort_backend.name == "onnxruntime"
    rgb = noise_image(*shape, seed=7)
    tiling = TilingConfig(threshold_pixels=threshold)
    expected = Predictor(torch_backend, tiling).predict(rgb)
    got = Predictor(ort_backend, tiling).predict(rgb)
    for name in ("map", "conf"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-4, err_msg=name)
    assert abs(got.score - expected.score) <= 1e-4


def test_onnxruntime_batched_whole_graph(backend_pair):
    ort_backend, torch_backend = backend_pair
    images = [noise_image(48, 64, seed=s) for s in range(3)]
    tiling = TilingConfig(batch_size=3)
    got = Predictor(ort_backend, tiling).predict_batch(images)
    expected = Predictor(torch_backend, tiling).predict_batch(images)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.map, b.map, rtol=0, atol=1e-4)
        assert abs(a.score - b.score) <= 1e-4


def test_scan_with_onnxruntime_artifacts(ort_artifacts, tmp_path):
    from PIL import Image

    from runtime.scan import main

    out, _ = ort_artifacts
    Image.fromarray(noise_image(48, 64)).save(tmp_path / "a.png")
    assert main([str(tmp_path / "a.png"), "--out", str(tmp_path / "scan"), "--artifacts", str(out)]) == 0
    row = json.loads((tmp_path / "scan" / "results.jsonl").read_text())
    assert (row["status"], row["backend"], row["precision"]) == ("ok", "onnxruntime", "fp32")


def test_stale_artifacts_are_refused(ort_artifacts, tmp_path):
    import shutil

    from export.errors import ArtifactError
    from runtime.runners.ort_runner import OrtBackend

    out, _ = ort_artifacts
    copy = shutil.copytree(out, tmp_path / "artifacts")
    graph = next(copy.glob("*tile*.onnx"))
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="stale"):
        OrtBackend(copy, "fp32")


def test_auto_prefers_onnxruntime_only_for_the_same_model(ort_artifacts, tmp_path):
    from export.errors import BackendUnavailableError
    from runtime.backends import BackendRequest, choose_backend

    out, _ = ort_artifacts
    same = out.parent / "tiny.pth.tar"
    other = tmp_path / "other.pth.tar"
    torch.save({"state_dict": tiny_with_weights(seed=9).state_dict(), "epoch": 0}, other)
    assert choose_backend(BackendRequest(artifacts=out)).name == "onnxruntime"
    assert choose_backend(BackendRequest(artifacts=out, checkpoint=same, preset="tiny")).name == "onnxruntime"
    assert choose_backend(BackendRequest(artifacts=out, checkpoint=other, preset="tiny")).name == "torch"
    with pytest.raises(BackendUnavailableError, match=r"torch: runs fp32 \(and fp16 with --device cuda\), but --precision int8"):
        choose_backend(BackendRequest(artifacts=out, precision="int8", checkpoint=same, preset="tiny"))
    with pytest.raises(BackendUnavailableError, match=r"torch: runs .*but --precision fp16 was given without --device cuda"):
        choose_backend(BackendRequest(artifacts=out, precision="fp16", checkpoint=same, preset="tiny"))


def test_onnxruntime_release_memory_keeps_the_results(backend_pair):
    """The release run (arena shrinkage on a minimal input) leaves the session as it was."""
    ort_backend, _ = backend_pair
    rgb = noise_image(75, 100, seed=3)
    predictor = Predictor(ort_backend)
    before = predictor.predict(rgb)
    ort_backend.whole.release_memory()
    after = predictor.predict(rgb)
    np.testing.assert_array_equal(after.map, before.map)
    assert after.score == before.score


def test_cuda_provider_keeps_float32_without_tf32():
    from runtime.runners.ort_runner import session_providers

    assert session_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider",
    ]
    assert session_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
