"""Loaders and build_engines against a fake TensorRT builder: config, errors, timing cache, cache reuse."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from engines import _trt, build, loaders
from engines.artifacts import index_path, read_index, write_index
from engines.build import EngineBuildConfig, build_engines, profiles_for
from engines.cache import sidecar_path
from engines.cuda import DeviceInfo
from engines.errors import EngineBuildError, EngineCacheError
from reference.errors import TruForError
from export.contract import WholeImageRule, graph_specs
from trt_fakes import fake_tensorrt
from trufor_testing import assert_write_is_atomic

DEVICE = DeviceInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 80 << 30, "12.4", "12.4")


@pytest.fixture
def trt(monkeypatch):
    """Install a fake TensorRT 10 builder; tests may replace it with ``install``."""
    def install(**kwargs):
        module = fake_tensorrt(**kwargs)
        monkeypatch.setattr(loaders, "builder_module", lambda: module)
        monkeypatch.setattr(_trt, "builder_module", lambda: module)
        return module
    install.module = install()
    return install


def onnx_file(tmp_path, name="trufor_tile.fp16.onnx"):
    path = tmp_path / name
    path.write_bytes(b"onnx")
    return path


def test_parser_errors_are_all_listed(trt, tmp_path):
    trt(parse_errors=[(3, "/dncnn/Conv", "Conv", "kernel weights must be initializers"),
                      (17, "/head/Resize", "Resize", "unsupported mode")])
    with pytest.raises(EngineBuildError) as info:
        loaders.NetworkFromOnnxPath(onnx_file(tmp_path))()
    message = str(info.value)
    assert "could not parse" in message and "2 error(s)" in message
    assert "node 3, name /dncnn/Conv, op Conv: kernel weights must be initializers [UNSUPPORTED_NODE]" in message
    assert "node 17, name /head/Resize, op Resize: unsupported mode" in message


@pytest.mark.parametrize("version, flags", [("10.9.0.34", 1 << 5), ("11.0.0.1", 0)])
def test_the_network_is_strongly_typed_with_the_flag_of_its_version(trt, tmp_path, version, flags):
    """TensorRT 10 needs the STRONGLY_TYPED creation bit (the fake's enum value is 5); 11 takes no flag."""
    module = trt(version=version)
    loaders.network_from_onnx_path(onnx_file(tmp_path))
    assert module.calls.network_flags == [flags]


def test_builder_config_profiles_workspace_and_flags(trt, tmp_path, capsys):
    module = trt(plan=b"\x00serialized plan\xff")
    profile = {"image": ((1, 64, 64, 3), (4, 64, 64, 3), (8, 64, 64, 3))}
    options = loaders.BuildOptions([profile, profile], workspace_bytes=1 << 30)
    plan = loaders.engine_bytes_from_network(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options)
    assert plan == b"\x00serialized plan\xff"  # the builder's host memory, as bytes
    config = module.calls.configs[-1]
    assert config.pool_limits == {"WORKSPACE": 1 << 30}
    assert config.cleared == {"TF32"} and config.flags == set()  # no precision flags: strongly typed
    assert [p.shapes for p in config.profiles] == [profile, profile]
    log = capsys.readouterr().out
    assert "builder config:" in log and "workspace_bytes=1073741824" in log and "built trufor_tile.fp16.onnx" in log


def test_profile_for_the_wrong_inputs_is_an_error(trt, tmp_path):
    options = loaders.BuildOptions([{"pixels": ((1,), (1,), (1,))}])
    with pytest.raises(EngineBuildError, match=r"covers inputs \['pixels'\].*inputs are \['image'\]"):
        loaders.engine_bytes_from_network(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options)


def test_empty_engine_is_an_engine_build_error(trt, tmp_path):
    trt(plan=None)
    options = loaders.BuildOptions([{"image": ((1, 64, 64, 3),) * 3}])
    with pytest.raises(EngineBuildError, match="built no engine"):
        loaders.engine_bytes_from_network(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options)
    trt(plan=b"")
    with pytest.raises(EngineBuildError, match="built no engine"):
        loaders.engine_bytes_from_network(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options)


def test_timing_cache_is_merged_and_saved_under_a_lock(trt, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"from-earlier-build")
    trt(tactic="new-tactic")
    options = loaders.BuildOptions([{"image": ((1, 64, 64, 3),) * 3}])
    loaders.EngineBytesFromNetwork(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options, cache)()
    assert set(cache.read_bytes().decode().split(",")) == {"from-earlier-build", "new-tactic"}
    assert (tmp_path / "timing.cache.lock").exists()


def test_plans_indexes_and_timing_caches_are_written_atomically(trt, tmp_path, monkeypatch):
    plan = tmp_path / "x.engine"
    assert_write_is_atomic(monkeypatch, plan, lambda: loaders.save_engine(b"abc", plan))
    assert plan.read_bytes() == b"abc"
    index = index_path(tmp_path, "fp16")
    assert_write_is_atomic(monkeypatch, index, lambda: write_index(tmp_path, "fp16", {"tile": {}}, {}, "now"))
    assert read_index(tmp_path, "fp16")["engines"] == {"tile": {}}
    cache = tmp_path / "timing.cache"
    (tmp_path / "timing.cache.lock").touch()  # the build's lock file, which stays
    options = loaders.BuildOptions([{"image": ((1, 64, 64, 3),) * 3}])
    build = loaders.EngineBytesFromNetwork(loaders.NetworkFromOnnxPath(onnx_file(tmp_path)), options, cache)
    assert_write_is_atomic(monkeypatch, cache, build)


def test_profiles_from_manifest_shapes():
    specs, rule = graph_specs(512), WholeImageRule()
    config = EngineBuildConfig(opt_height=768, opt_width=1024, max_batch=2)
    whole = profiles_for(specs["whole"].inputs, config.dims("whole", rule), 2)
    assert whole == [{"image": ((1, 29, 29, 3), (1, 768, 1024, 3), (2, 2048, 2048, 3))}] * 2
    tile = profiles_for(specs["tile"].inputs, config.dims("tile", rule), 1)
    assert tile == [{"image": ((1, 512, 512, 3), (4, 512, 512, 3), (8, 512, 512, 3))}]
    score = profiles_for(specs["score"].inputs, EngineBuildConfig(max_score_side=2000).dims("score", rule), 1)
    assert score == [{name: ((1, c, 29, 29), (1, c, 2000, 2000), (1, c, 2000, 2000))
                      for name, c in (("loc_logits", 2), ("conf_logits", 1))}]


def test_the_whole_profile_is_the_rule_the_predictor_runs_whole():
    """One rule for both: every image the manifest's rule runs whole fits the engine's profile (so none
    falls back to ONNX Runtime), and an image beyond its side, like 3000x600, is tiled instead."""
    from runtime.predictor import Predictor

    rule = WholeImageRule(max_pixels=2048 * 1024, max_side=1536)
    dims = EngineBuildConfig().dims("whole", rule)
    assert dims["height"] == dims["width"] == (29, 1024, 1536)
    backend = SimpleNamespace(tile_size=512, whole_rule=rule, activate=lambda: None)
    predictor = Predictor(backend)
    for height, width in ((1536, 1365), (1024, 1536), (29, 1536), (3000, 600), (1537, 100), (1500, 1500)):
        fits = all(dims[side][0] <= size <= dims[side][2] for side, size in (("height", height), ("width", width)))
        assert (predictor.mode(height, width) == "whole") == (fits and height * width <= rule.max_pixels)
    assert Predictor(SimpleNamespace(tile_size=512, whole_rule=WholeImageRule(), activate=lambda: None)).mode(3000, 600) == "tiled"
    with pytest.raises(TruForError, match="whole-max-side"):
        EngineBuildConfig().dims("whole", WholeImageRule(max_side=16))


@pytest.mark.parametrize("settings, message", [
    ({"opt_height": 16}, "opt_height must be >= 29"),
    ({"opt_tile_batch": 16}, "opt_tile_batch 16 exceeds"), ({"streams": 0}, "streams must be >= 1"),
    ({"graphs": ("whole", "heads")}, "unknown graphs"),
])
def test_build_config_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        EngineBuildConfig(**settings)


def fake_manifest(tmp_path):
    entries = {kind: SimpleNamespace(path=onnx_file(tmp_path, f"trufor_{kind}.fp16.onnx"), sha256=kind * 8, spec=spec)
               for kind, spec in graph_specs(64).items()}
    return SimpleNamespace(directory=tmp_path, precision="fp16", graph=entries.__getitem__,
                           whole_rule=WholeImageRule(256 * 256, 256))


def test_build_engines_writes_plans_sidecars_and_index_then_reuses(trt, tmp_path, capsys):
    manifest = fake_manifest(tmp_path)
    config = EngineBuildConfig(graphs=("whole", "tile"), opt_height=64, opt_width=64)
    built = build_engines(manifest, config, device=DEVICE)
    assert sorted(built) == ["tile", "whole"]
    for plan in built.values():
        assert plan.read_bytes() == b"PLAN-BYTES"
        sidecar = json.loads(sidecar_path(plan).read_text())
        assert sidecar["key"]["gpu_name"] == DEVICE.name and sidecar["key"]["tensorrt_version"] == "10.9.0.34"
        assert len(sidecar["key"]["profiles"]) == 2 and "builder_config" in sidecar
    assert read_index(tmp_path, "fp16")["engines"]["tile"]["file"] == "trufor_tile.fp16.engine"
    capsys.readouterr()
    build_engines(manifest, config, device=DEVICE)  # same settings: reused, not rebuilt
    assert capsys.readouterr().out.count("is up to date") == 2


def test_build_refuses_a_mismatched_engine_unless_rebuild(trt, tmp_path):
    manifest = fake_manifest(tmp_path)
    build_engines(manifest, EngineBuildConfig(graphs=("tile",)), device=DEVICE)
    other_gpu = dataclasses.replace(DEVICE, name="NVIDIA L4", compute_capability="8.9")
    trt(plan=b"L4-PLAN")
    with pytest.raises(EngineCacheError, match="GPU: built for NVIDIA H100 80GB HBM3, wanted NVIDIA L4"):
        build_engines(manifest, EngineBuildConfig(graphs=("tile",)), device=other_gpu)
    built = build_engines(manifest, EngineBuildConfig(graphs=("tile",), rebuild=True), device=other_gpu)
    assert built["tile"].read_bytes() == b"L4-PLAN"


def test_failed_build_leaves_no_sidecar(trt, tmp_path):
    manifest = fake_manifest(tmp_path)
    build_engines(manifest, EngineBuildConfig(graphs=("tile",)), device=DEVICE)
    trt(plan=None)
    with pytest.raises(EngineBuildError):
        build_engines(manifest, EngineBuildConfig(graphs=("tile",), tf32=True, rebuild=True), device=DEVICE)
    assert not sidecar_path(tmp_path / "trufor_tile.fp16.engine").exists()  # the old plan is not trusted


def test_cli_without_tensorrt_exits_2(tmp_path, monkeypatch, capsys):
    from export.errors import BackendUnavailableError

    monkeypatch.setattr(build, "build_engines", lambda *a, **k: (_ for _ in ()).throw(BackendUnavailableError("no TRT")))
    monkeypatch.setattr("export.manifest.load_manifest", lambda *a, **k: None)
    assert build.main(["--precision", "fp16", "--artifacts", str(tmp_path)]) == 2
    assert "no engine can be built here: no TRT" in capsys.readouterr().err
    assert not index_path(tmp_path, "fp16").exists()
