"""Which file each ONNX Runtime session loads: the export's optimized graph where it was made for this
ONNX Runtime and CPU, the plain graph (optimized at load) otherwise, and only loaded files are hashed."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from rt_helpers import noise_image

from export.errors import ArtifactError
from runtime.predictor import Predictor
from runtime.runners.ort_runner import OrtBackend


def copy_artifacts(ort_artifacts, tmp_path, edit=None):
    """A copy of the fp32 artifacts; ``edit(graph_entry)`` changes every graph's manifest entry."""
    folder = shutil.copytree(ort_artifacts[0], tmp_path / "artifacts")
    path = folder / "manifest.fp32.json"
    data = json.loads(path.read_text())
    for entry in data["graphs"].values():
        if edit is not None:
            edit(entry)
    path.write_text(json.dumps(data))
    return folder


def loaded(backend: OrtBackend) -> list[tuple[str, bool]]:
    return [(runner.path.name, runner.optimize) for runner in backend.runners.values()]


def test_sessions_load_the_optimized_graphs(ort_artifacts):
    backend = OrtBackend(ort_artifacts[0], "fp32", providers=["CPUExecutionProvider"], threads=1)
    assert loaded(backend) == [(f"trufor_{g}.fp32-ortcpu.onnx", False) for g in ("whole", "tile", "score")]
    assert "graphs optimized at export" in backend.describe()


def test_optimized_graphs_listed_without_their_data_file_still_load(ort_artifacts, tmp_path):
    """Manifests written before the initializers moved out of the optimized graphs have no ``data`` entry."""
    folder = copy_artifacts(ort_artifacts, tmp_path, lambda entry: entry["ort_optimized"].pop("data"))
    with OrtBackend(folder, "fp32", providers=["CPUExecutionProvider"], threads=1) as backend:
        assert loaded(backend) == [(f"trufor_{g}.fp32-ortcpu.onnx", False) for g in ("whole", "tile", "score")]
        assert backend.loaded_files == [(folder / f"trufor_{g}.fp32-ortcpu.onnx", backend.manifest.graph(g).ort_optimized.sha256)
                                        for g in ("whole", "tile", "score")]


def _set(key, value):
    return lambda entry: entry["ort_optimized"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_set("onnxruntime", "1.0.0"), "for onnxruntime 1.0.0, this is"),
        (_set("cpu", "x86_64:avx2"), r"for another CPU \(x86_64:avx2\)"),
        (lambda entry: entry.pop("ort_optimized"), "no optimized graphs"),
    ],
    ids=["other-onnxruntime", "other-cpu", "older-export"],
)
def test_plain_graphs_optimized_at_load_elsewhere(ort_artifacts, tmp_path, edit, why):
    folder = copy_artifacts(ort_artifacts, tmp_path, edit)
    backend = OrtBackend(folder, "fp32", providers=["CPUExecutionProvider"], threads=1)
    assert loaded(backend) == [(f"trufor_{g}.fp32.onnx", True) for g in ("whole", "tile", "score")]
    assert re.search(why, backend.describe()), backend.describe()


@pytest.mark.parametrize("missing", ["trufor_tile.fp32-ortcpu.onnx", "trufor_tile.fp32-ortcpu.onnx.data"])
def test_missing_optimized_graph_falls_back(ort_artifacts, tmp_path, missing):
    folder = copy_artifacts(ort_artifacts, tmp_path)
    (folder / missing).unlink()
    backend = OrtBackend(folder, "fp32", providers=["CPUExecutionProvider"], threads=1)
    assert loaded(backend)[:2] == [("trufor_whole.fp32-ortcpu.onnx", False), ("trufor_tile.fp32.onnx", True)]
    assert f"{missing} is missing" in backend.describe()
    rgb = noise_image(75, 100, seed=1)
    with backend, OrtBackend(ort_artifacts[0], "fp32", threads=1) as optimized:
        want, got = Predictor(optimized).predict(rgb), Predictor(backend).predict(rgb)
    np.testing.assert_allclose(got.map, want.map, rtol=0, atol=1e-6)


@pytest.mark.parametrize("stale", ["trufor_tile.fp32-ortcpu.onnx", "trufor_whole.fp32-ortcpu.onnx.data"])
def test_a_stale_loaded_file_is_refused_before_any_image(ort_artifacts, tmp_path, stale):
    """Files are hashed while the sessions load; the tile graph's too, though its session waits for a tiled image."""
    folder = copy_artifacts(ort_artifacts, tmp_path)
    (folder / stale).write_bytes((folder / stale).read_bytes() + b"\0")
    backend = OrtBackend(folder, "fp32", providers=["CPUExecutionProvider"])
    with pytest.raises(ArtifactError, match=rf"{re.escape(stale)} does not match the sha256.*stale"):
        Predictor(backend)
    assert all(runner.session is None and not runner.is_active for runner in backend.runners.values())


def test_only_loaded_files_are_hashed(ort_artifacts, monkeypatch):
    import export.manifest

    hashed, real = [], export.manifest.sha256_file
    monkeypatch.setattr(export.manifest, "sha256_file", lambda path, *a: hashed.append(path.name) or real(path, *a))
    backend = OrtBackend(ort_artifacts[0], "fp32", providers=["CPUExecutionProvider"])
    assert hashed == []  # on activation, beside the sessions' loading
    with backend:
        pass
    assert sorted(hashed) == sorted(f"trufor_{g}.fp32-ortcpu.onnx{data}" for g in ("whole", "tile", "score") for data in ("", ".data"))


def test_the_tile_session_loads_on_the_first_tiled_image(ort_artifacts):
    from runtime.tiling import TilingConfig

    with OrtBackend(ort_artifacts[0], "fp32", threads=1) as backend:
        assert backend.whole.session is not None and backend.tile.session is None
        Predictor(backend).predict(noise_image(40, 48))  # whole: no tile session
        assert backend.tile.session is None
        backend.whole.release_memory()
        Predictor(backend, TilingConfig(threshold_pixels=0)).predict(noise_image(75, 100))
        assert backend.tile.session is not None
