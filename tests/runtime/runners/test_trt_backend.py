"""TensorRTBackend's setup from a manifest and an engine index, without a GPU: which graph
gets which runner, and why the backend is not picked here. Engines load only on activation."""

from __future__ import annotations

import pytest

from engines.artifacts import engines_unavailable_reason, write_index
from export.errors import ArtifactError
from engines.cuda import DeviceInfo

DEVICE = DeviceInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 80 << 30, "12.4", "12.4")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A manifest over placeholder graph files: enough for setup, which opens no graph or engine."""
    from export.contract import WholeImageRule, graph_specs
    from export.manifest import file_entry, manifest_data, manifest_path, write_manifest

    folder = tmp_path_factory.mktemp("trt-setup")
    graphs = {}
    for kind, spec in graph_specs(64).items():
        path = folder / spec.file_name("fp32")
        path.write_bytes(f"placeholder {kind} graph".encode())
        graphs[kind] = {**file_entry(path), **spec.io_json()}
    write_manifest(manifest_path(folder, "fp32"), manifest_data("fp32", "tiny", {"num_classes": 2}, None, 64, WholeImageRule(), graphs, {}, "now"))
    return folder


def test_missing_score_engine_runs_the_score_graph_on_onnxruntime(artifacts):
    from runtime.runners.ort_runner import OrtRunner
    from runtime.runners.trt_backend import TensorRTBackend
    from runtime.runners.trt_runner import TrtRunner

    write_index(artifacts, "fp32", {"whole": {}, "tile": {}}, {}, "now")
    backend = TensorRTBackend(artifacts, "fp32")
    assert isinstance(backend.whole, TrtRunner) and isinstance(backend.tile, TrtRunner)
    assert isinstance(backend.score, OrtRunner) and backend.tile.cuda_graphs and not backend.whole.cuda_graphs
    with pytest.raises(ArtifactError, match="lack the score engine"):
        TensorRTBackend(artifacts, "fp32", fallback=False)


def test_missing_tile_engine_is_refused(artifacts):
    from runtime.runners.trt_backend import TensorRTBackend

    write_index(artifacts, "fp32", {"whole": {}, "score": {}}, {}, "now")
    with pytest.raises(ArtifactError, match="lack the tile engine.*python -m engines.build"):
        TensorRTBackend(artifacts, "fp32")


def test_backend_selection_gets_the_reason(artifacts):
    write_index(artifacts, "fp32", {"whole": {}}, {}, "now")
    reason = engines_unavailable_reason(artifacts, "fp32", DEVICE, lambda compatible: "10.13.2.6")
    assert "trufor_whole.fp32.engine does not exist" in reason and "python -m engines.build" in reason
    assert "manifest.int8.json does not exist" in engines_unavailable_reason(artifacts, "int8", DEVICE, lambda c: "10")
    write_index(artifacts, "fp32", {}, {}, "now")
    (artifacts / "engines.fp32.json").write_text("{broken")
    assert "engines.fp32.json is corrupt" in engines_unavailable_reason(artifacts, "fp32", DEVICE, lambda c: "10")
