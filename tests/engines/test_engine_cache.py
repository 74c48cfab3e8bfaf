"""The engine cache refuses, with a clear message, any plan it cannot vouch for; fake devices, no GPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from engines.artifacts import check_for_runtime, engine_path, environment_key
from engines.cache import check_engine, make_key, read_sidecar, sidecar_path, write_sidecar
from engines.errors import EngineCacheError
from trufor_testing import assert_write_is_atomic

H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
A100 = SimpleNamespace(name="NVIDIA A100-SXM4-40GB", compute_capability="8.0")
PROFILES = [{"image": [[1, 64, 64, 3], [4, 64, 64, 3], [8, 64, 64, 3]]}]
OPTIONS = {"workspace_bytes": None, "tf32": False, "version_compatible": False}
HINT = "python -m engines.build --artifacts A --precision fp16 --rebuild"


def key(**changes):
    values = dict(graph="tile", precision="fp16", onnx_sha256="a" * 64, tensorrt_version="10.13.2.6", device=H100,
                  profiles=PROFILES, options=OPTIONS)
    values.update(changes)
    return make_key(values["graph"], values["precision"], values["onnx_sha256"], values["tensorrt_version"],
                    values["device"], values["profiles"], values["options"])


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "trufor_tile.fp16.engine"
    path.write_bytes(b"serialized plan bytes")
    write_sidecar(path, key(), {"build_seconds": 1.0})
    return path


def test_matching_engine_is_accepted_and_key_round_trips_through_json(plan):
    data = check_engine(plan, key(), HINT)
    assert data["key"] == key()
    assert data["build_seconds"] == 1.0
    assert sidecar_path(plan).name == "trufor_tile.fp16.engine.json"
    assert plan.read_bytes() == b"serialized plan bytes"  # the plan stays a plain plan, JSON beside it


@pytest.mark.parametrize("change, expected", [
    ({"device": A100}, "GPU: built for NVIDIA H100 80GB HBM3, wanted NVIDIA A100-SXM4-40GB"),
    ({"device": SimpleNamespace(name=H100.name, compute_capability="9.1")}, "compute capability: built for 9.0, wanted 9.1"),
    ({"tensorrt_version": "10.14.1.48"}, "TensorRT version: built for 10.13.2.6, wanted 10.14.1.48"),
    ({"onnx_sha256": "b" * 64}, "ONNX graph sha256"),
    ({"precision": "int8"}, "precision: built for fp16, wanted int8"),
    ({"profiles": [{"image": [[1, 64, 64, 3], [4, 64, 64, 3], [16, 64, 64, 3]]}]}, "optimization profiles"),
    ({"options": {**OPTIONS, "tf32": True}}, "builder options"),
])
def test_mismatched_engine_is_refused_naming_the_difference(plan, change, expected):
    with pytest.raises(EngineCacheError) as info:
        check_engine(plan, key(**change), HINT)
    message = str(info.value)
    assert expected in message and "it is not used" in message and HINT in message


def test_several_differences_are_all_listed(plan):
    with pytest.raises(EngineCacheError) as info:
        check_engine(plan, key(device=A100, tensorrt_version="11.0.0.1"), HINT)
    assert "GPU:" in str(info.value) and "TensorRT version:" in str(info.value)


def test_corrupt_plan_is_refused(plan):
    plan.write_bytes(b"serialized plan bytez")  # same size, other bytes
    with pytest.raises(EngineCacheError, match="does not match the sha256 in its sidecar"):
        check_engine(plan, key(), HINT)
    check_engine(plan, key(), HINT, verify_plan=False)  # the cheap check only looks at size


def test_truncated_plan_is_refused_even_without_hashing(plan):
    plan.write_bytes(b"serialized")
    with pytest.raises(EngineCacheError, match="truncated or replaced"):
        check_engine(plan, key(), HINT, verify_plan=False)


def test_missing_plan_and_missing_sidecar_are_refused(plan):
    sidecar_path(plan).unlink()
    with pytest.raises(EngineCacheError, match="has no sidecar"):
        check_engine(plan, key(), HINT)
    plan.unlink()
    with pytest.raises(EngineCacheError, match="does not exist"):
        check_engine(plan, key(), HINT)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99}), json.dumps({"format": 1, "key": {}}),
                                     json.dumps({"format": 1, "key": {"graph": "tile"}, "plan_sha256": "x"})])
def test_corrupt_sidecar_is_refused(plan, content):
    sidecar_path(plan).write_text(content)
    with pytest.raises(EngineCacheError, match="sidecar .* is corrupt"):
        read_sidecar(plan, HINT)


def test_version_compatible_plan_runs_on_later_runtime_of_same_major(plan):
    write_sidecar(plan, key(options={**OPTIONS, "version_compatible": True}))
    later = key(tensorrt_version="10.14.1.48")
    check_engine(plan, later, HINT, tensorrt_match="major", compare=("tensorrt_version",))
    for runtime in ("10.12.0.1", "11.0.0.1"):  # older runtime, or another major: refused
        with pytest.raises(EngineCacheError, match="TensorRT version"):
            check_engine(plan, key(tensorrt_version=runtime), HINT, tensorrt_match="major", compare=("tensorrt_version",))


def fake_manifest(tmp_path):
    onnx = tmp_path / "trufor_tile.fp16.onnx"
    onnx.write_bytes(b"onnx")
    entry = SimpleNamespace(path=onnx, sha256="a" * 64, inputs={"image": {"dtype": "uint8", "shape": ["batch", 64, 64, 3]}})
    return SimpleNamespace(directory=tmp_path, precision="fp16", graph=lambda kind: entry)


def test_runtime_check_ignores_build_settings_but_not_the_environment(tmp_path):
    manifest = fake_manifest(tmp_path)
    plan = engine_path(manifest.graph("tile").path)
    plan.write_bytes(b"plan")
    write_sidecar(plan, key(profiles=[{"image": [[1, 64, 64, 3]] * 3}], options={"tf32": True}))
    data = check_for_runtime(manifest, "tile", H100, lambda compatible: "10.13.2.6")
    assert data["key"].graph == "tile"
    with pytest.raises(EngineCacheError, match="GPU: built for NVIDIA H100") as info:
        check_for_runtime(manifest, "tile", A100, lambda compatible: "10.13.2.6")
    assert "--rebuild" in str(info.value)
    assert environment_key(manifest, "tile", H100, "10.13.2.6").profiles == ()


def test_sidecars_are_written_atomically(plan, monkeypatch):
    assert_write_is_atomic(monkeypatch, sidecar_path(plan), lambda: write_sidecar(plan, key()))
    assert read_sidecar(plan, HINT)["key"] == key()
