"""export.triton: every config.pbtxt parses strictly against Triton's ModelConfig and says what the manifest says.

The schema is the ModelConfig protobuf tritonclient ships; ``read_config`` parses with
``text_format.Parse``, which raises on any field Triton does not know. Serving the repository is
tested in tests/runtime/test_triton_backend.py.
"""

from __future__ import annotations

import os
import shutil

import pytest

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is not installed "
                         "(pip install -e '.[triton]')")

from trt_fakes import GPU, fake_engines  # noqa: E402

from engines.build import EngineBuildConfig  # noqa: E402
from export.build import EXIT_OK, main, parse_args  # noqa: E402
from export.contract import FORMAT_VERSION  # noqa: E402
from export.errors import ArtifactError  # noqa: E402
from export.manifest import load_manifest  # noqa: E402
from export.triton import README_NAME, TritonOptions, read_config, write_repository  # noqa: E402
from export.triton import main as triton_main  # noqa: E402

DTYPES = {"uint8": pb.TYPE_UINT8, "float32": pb.TYPE_FP32}


def parameters(config) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def expected_dims(shape: list, batched: bool) -> list[int]:
    dims = [size if isinstance(size, int) else -1 for size in shape][1 if batched else 0 :]
    return dims or [1]


def test_configs_match_the_manifest(artifacts_dir, tmp_path):
    manifest = load_manifest(artifacts_dir("fp32"), "fp32")
    names = write_repository(manifest, tmp_path / "repo", TritonOptions(device="cpu", instances=2, tile_batch=6, threads=3))
    assert names == ["trufor_whole_fp32", "trufor_tile_fp32", "trufor_score_fp32"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == sorted([*names, README_NAME])
    for graph, name in zip(("whole", "tile", "score"), names):
        entry = manifest.graph(graph)
        config = read_config(tmp_path / "repo" / name / "config.pbtxt")
        model_file = tmp_path / "repo" / name / "1" / "model.onnx"
        assert os.path.samefile(model_file, entry.path), "hard link to the exported graph"
        assert (config.name, config.platform) == (name, "onnxruntime_onnx")
        assert config.max_batch_size == {"whole": 4, "tile": 6, "score": 0}[graph]
        batched = config.max_batch_size > 0
        for tensors, specs in ((config.input, entry.spec.inputs), (config.output, entry.spec.outputs)):
            assert [t.name for t in tensors] == [spec.name for spec in specs]
            for tensor, spec in zip(tensors, specs):
                assert tensor.data_type == DTYPES[spec.dtype]
                assert list(tensor.dims) == expected_dims(spec.shape, batched)
                assert tensor.HasField("reshape") == (batched and len(spec.shape) == 1)  # whole's score
        assert [(g.kind, g.count) for g in config.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 2)]
        params = parameters(config)
        assert params["intra_op_thread_count"] == "3"
        assert ("memory.enable_memory_arena_shrinkage" in params) == (graph != "tile")
        assert {k: v for k, v in params.items() if k.startswith("trufor.")} == {
            "trufor.format_version": str(FORMAT_VERSION), "trufor.graph": graph, "trufor.precision": "fp32", "trufor.preset": "tiny",
            "trufor.tile_size": "64", "trufor.num_classes": "2", "trufor.checkpoint_sha256": "",
            "trufor.onnx_sha256": entry.sha256,
        }  # fmt: skip
    tile = read_config(tmp_path / "repo" / "trufor_tile_fp32" / "config.pbtxt")
    assert list(tile.dynamic_batching.preferred_batch_size) == [3, 6]
    assert 0 < tile.dynamic_batching.max_queue_delay_microseconds <= 10_000
    assert read_config(tmp_path / "repo" / "trufor_whole_fp32" / "config.pbtxt").HasField("dynamic_batching")
    assert not read_config(tmp_path / "repo" / "trufor_score_fp32" / "config.pbtxt").HasField("dynamic_batching")


def test_unknown_fields_fail_the_schema(tmp_path):
    from google.protobuf import text_format

    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch: 8\n')
    with pytest.raises(text_format.ParseError, match="max_batch"):
        read_config(path)


def test_plans_are_gpu_models_with_one_instance_group_per_profile(artifacts_dir, tmp_path, capsys):
    """python -m export.triton writes the ONNX models and has python -m engines.triton add the plans."""
    folder = shutil.copytree(artifacts_dir("fp32"), tmp_path / "artifacts")
    fake_engines(folder, "fp32")
    assert triton_main(["--artifacts", str(folder), "--precision", "fp32", "--out", str(tmp_path / "repo")]) == 0
    plans = ["trufor_whole_fp32_trt", "trufor_tile_fp32_trt", "trufor_score_fp32_trt"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir() if p.is_dir()) == sorted(
        [*plans, "trufor_whole_fp32", "trufor_tile_fp32", "trufor_score_fp32"])
    configs = {name: read_config(tmp_path / "repo" / name / "config.pbtxt") for name in plans}
    for name, config in configs.items():
        assert config.platform == "tensorrt_plan"
        assert (tmp_path / "repo" / name / "1" / "model.plan").read_bytes().startswith(b"not a real plan")
        params = parameters(config)
        assert (params["trufor.gpu_name"], params["trufor.tensorrt_version"]) == (GPU.name, "10.13.2.6")
        assert len(params["trufor.plan_sha256"]) == 64
        assert "GPU model and TensorRT version" in (tmp_path / "repo" / name / "config.pbtxt").read_text()
    settings = EngineBuildConfig()
    whole, tile, score = configs.values()
    assert [(g.kind, list(g.profile)) for g in tile.instance_group] == [(pb.ModelInstanceGroup.KIND_GPU, ["0"]),
                                                                        (pb.ModelInstanceGroup.KIND_GPU, ["1"])]
    batches = (whole.max_batch_size, tile.max_batch_size, score.max_batch_size)
    assert batches == (settings.max_batch, settings.max_tile_batch, 0)
    assert list(tile.dynamic_batching.preferred_batch_size) == [settings.opt_tile_batch, settings.max_tile_batch]
    assert [list(g.profile) for g in score.instance_group] == [["0"]]
    assert "`trufor_tile_fp32_trt` (tensorrt_plan)" in (tmp_path / "repo" / README_NAME).read_text()


def test_precisions_share_a_repository_and_rewrites_replace_only_their_models(artifacts_dir, tmp_path):
    repo = tmp_path / "repo"
    write_repository(load_manifest(artifacts_dir("fp32"), "fp32"), repo)
    write_repository(load_manifest(artifacts_dir("fp16"), "fp16"), repo, TritonOptions(tile_batch=4))
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == sorted(f"trufor_{g}_{p}" for g in ("whole", "tile", "score") for p in ("fp32", "fp16"))
    assert read_config(repo / "trufor_tile_fp32" / "config.pbtxt").max_batch_size == 8
    write_repository(load_manifest(artifacts_dir("fp32"), "fp32"), repo, TritonOptions(tile_batch=2))
    assert read_config(repo / "trufor_tile_fp32" / "config.pbtxt").max_batch_size == 2
    assert read_config(repo / "trufor_tile_fp16" / "config.pbtxt").max_batch_size == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"], "no staging folder left behind"


def test_a_folder_not_written_here_is_never_replaced(artifacts_dir, tmp_path):
    foreign = tmp_path / "repo" / "trufor_score_fp32"
    (foreign / "1").mkdir(parents=True)
    (foreign / "config.pbtxt").write_text('name: "trufor_score_fp32"\nbackend: "python"\n')
    with pytest.raises(ArtifactError, match="trufor_score_fp32 exists and was not written by python -m export.build"):
        write_repository(load_manifest(artifacts_dir("fp32"), "fp32"), tmp_path / "repo")
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["trufor_score_fp32"]


def test_triton_flags_need_triton_and_valid_values(capsys):
    for argv, message in (
        (["--triton-instances", "2"], "pass --triton REPO too"),
        (["--triton", "r", "--triton-tile-batch", "0"], "tile batch must be >= 1, got 0"),
        (["--triton", "r", "--triton-device", "tpu"], "invalid choice: 'tpu'"),
    ):
        with pytest.raises(SystemExit) as error:
            parse_args(["--precision", "fp32", *argv])
        assert error.value.code == 2 and message in capsys.readouterr().err
    config = parse_args(["--precision", "fp32", "--random-weights", "--triton", "r", "--triton-device", "gpu",
                         "--triton-threads", "4"])
    assert config.triton_options == TritonOptions(device="gpu", threads=4)


def test_build_writes_the_repository_and_prints_the_commands(artifacts_dir, tmp_path, monkeypatch, capsys):
    import export.pipeline

    folder = artifacts_dir("fp32")
    monkeypatch.setattr(export.pipeline, "export_artifacts", lambda config, step: folder / "manifest.fp32.json")
    argv = ["--random-weights", "--preset", "tiny", "--precision", "fp32", "--onnx-only", "--out", str(folder), "--tile", "64",
            "--triton", str(tmp_path / "repo")]
    assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    assert "Triton models in" in printed and "trufor_score_fp32" in printed
    assert f"tritonserver --model-repository {(tmp_path / 'repo').resolve()}" in printed
    assert "python -m runtime.scan INPUT --out results --backend triton --url localhost:8001 --precision fp32" in printed
    assert (tmp_path / "repo" / "trufor_whole_fp32" / "1" / "model.onnx").is_file()
