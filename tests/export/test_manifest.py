"""load_manifest: round trip, and every refusal the runtime relies on (fake graph files, no export needed)."""

from __future__ import annotations

import json
import shutil

import pytest

from export.contract import FORMAT_VERSION, MIN_SIDE, PREPROCESSING, WholeImageRule, graph_specs
from export.errors import ArtifactError
from export.manifest import file_entry, load_manifest, manifest_data, manifest_path, write_manifest
from trufor_testing import assert_write_is_atomic


def _fake_artifacts(folder, precision="fp32"):
    """A manifest whose graphs are small files (the loader only hashes them)."""
    graphs = {}
    for kind, spec in graph_specs(64).items():
        path = folder / spec.file_name(precision)
        path.write_bytes(f"{kind} graph bytes".encode())
        graphs[kind] = {**file_entry(path), **spec.io_json()}
    data = manifest_data(precision, "tiny", {"decoder_dim": 32}, None, 64, WholeImageRule(), graphs, {"torch": "x"},
                         "2026-01-01T00:00:00+00:00")
    write_manifest(manifest_path(folder, precision), data)
    return data


def test_round_trip(tmp_path):
    data = _fake_artifacts(tmp_path)
    assert data["format_version"] == FORMAT_VERSION
    assert data["preprocessing"] == PREPROCESSING and data["preprocessing"]["scale"] == 256.0
    assert data["min_side"] == MIN_SIDE == 29
    manifest = load_manifest(tmp_path, "fp32")
    assert manifest.precision == "fp32" and manifest.tile_size == 64 and manifest.opset == 18
    assert data["whole_image"] == {"max_pixels": 2048 * 1024, "max_side": 2048}
    assert manifest.whole_rule == WholeImageRule(2048 * 1024, 2048)
    assert manifest.checkpoint is None
    assert set(manifest.graphs) == {"whole", "tile", "score"}
    whole = manifest.graph("whole")
    assert whole.path == tmp_path / "trufor_whole.fp32.onnx" and whole.sha256 == data["graphs"]["whole"]["sha256"]
    assert [entry.spec for entry in manifest.graphs.values()] == list(graph_specs(64).values())
    image = whole.spec.inputs[0]
    assert (image.name, image.dtype, image.shape, image.layout) == ("image", "uint8", ("batch", "height", "width", 3), "NHWC")
    assert manifest.graph("tile").spec.outputs[0].shape == ("batch", 2, 64, 64)
    assert load_manifest(tmp_path).precision == "fp32"  # the only one there: found without asking
    with pytest.raises(AttributeError):
        manifest.precision = "fp16"  # frozen


def test_several_precisions_coexist(tmp_path):
    _fake_artifacts(tmp_path, "fp32")
    _fake_artifacts(tmp_path, "int8")
    assert load_manifest(tmp_path, "int8").graph("whole").path.name == "trufor_whole.int8.onnx"
    with pytest.raises(ArtifactError, match="several.*fp32, int8"):
        load_manifest(tmp_path)


def test_stale_graph_is_refused(tmp_path):
    _fake_artifacts(tmp_path)
    (tmp_path / "trufor_tile.fp32.onnx").write_bytes(b"re-exported without the manifest")
    with pytest.raises(ArtifactError, match=r"trufor_tile\.fp32\.onnx.*sha256.*stale.*python -m export.build --precision fp32"):
        load_manifest(tmp_path, "fp32")


def test_missing_manifest_lists_available_precisions(tmp_path):
    _fake_artifacts(tmp_path, "fp32")
    _fake_artifacts(tmp_path, "fp16")
    with pytest.raises(ArtifactError, match=r"manifest\.int8\.json does not exist \(available here: fp32, fp16\).*--precision int8"):
        load_manifest(tmp_path, "int8")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="no precision is exported there"):
        load_manifest(empty, "fp32")
    with pytest.raises(ArtifactError, match="found none"):
        load_manifest(empty)


def test_wrong_precision_is_refused(tmp_path):
    _fake_artifacts(tmp_path, "fp32")
    shutil.copy(manifest_path(tmp_path, "fp32"), manifest_path(tmp_path, "fp16"))
    with pytest.raises(ArtifactError, match="describes precision 'fp32', not 'fp16'"):
        load_manifest(tmp_path, "fp16")
    with pytest.raises(ArtifactError, match="unknown precision 'fp8'.*fp32, fp16, int8"):
        load_manifest(tmp_path, "fp8")


def test_unknown_format_version_and_missing_graph(tmp_path):
    data = _fake_artifacts(tmp_path)
    path = manifest_path(tmp_path, "fp32")
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_manifest(tmp_path, "fp32")
    _fake_artifacts(tmp_path)
    (tmp_path / "trufor_score.fp32.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"trufor_score\.fp32\.onnx listed in manifest\.fp32\.json is missing"):
        load_manifest(tmp_path, "fp32")


@pytest.mark.parametrize("key, value", [("preprocessing", {**PREPROCESSING, "scale": 255.0}), ("min_side", 32)])
def test_another_contract_is_refused(tmp_path, key, value):
    """What the graphs expect of their input is read back: a runtime never feeds a graph another contract."""
    data = _fake_artifacts(tmp_path)
    manifest_path(tmp_path, "fp32").write_text(json.dumps({**data, key: value}))
    with pytest.raises(ArtifactError, match=f"another graph contract \\({key} .*this code.*re-export"):
        load_manifest(tmp_path, "fp32")


def test_manifests_and_graphs_are_written_atomically(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from export.onnx_export import save_model

    data = _fake_artifacts(tmp_path)
    path = manifest_path(tmp_path, "fp32")
    assert_write_is_atomic(monkeypatch, path, lambda: write_manifest(path, data))
    assert load_manifest(tmp_path, "fp32").created == data["created"]
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    graph_path = tmp_path / "g.onnx"
    assert_write_is_atomic(monkeypatch, graph_path, lambda: save_model(graph, graph_path))
    assert onnx.load(str(graph_path)) == graph
