"""engines.triton: the TensorRT plans as Triton models, refused when a plan was built from another graph.

The plan models' configs are checked end to end, through python -m export.triton, in
tests/export/test_triton_repository.py.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] is not installed "
                    "(pip install -e '.[triton]')")

from trt_fakes import fake_engines  # noqa: E402

from engines.triton import main, plan_models  # noqa: E402
from export.errors import ArtifactError  # noqa: E402
from export.manifest import load_manifest  # noqa: E402


def test_plans_of_another_graph_are_refused(artifacts_dir, tmp_path, capsys):
    folder = shutil.copytree(artifacts_dir("fp32"), tmp_path / "artifacts")
    fake_engines(folder, "fp32", graphs=("tile",), onnx_sha256="0" * 64)
    with pytest.raises(ArtifactError, match="was built from another tile graph .* rebuild it with: python -m engines.build"):
        plan_models(load_manifest(folder, "fp32"))
    assert main(["--artifacts", str(folder), "--precision", "fp32", "--out", str(tmp_path / "repo")]) == 1
    assert "was built from another tile graph" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()


def test_no_engines_add_no_model(artifacts_dir, tmp_path, capsys):
    assert main(["--artifacts", str(artifacts_dir("fp32")), "--precision", "fp32", "--out", str(tmp_path / "repo")]) == 0
    assert "No TensorRT engines for fp32" in capsys.readouterr().out
    assert not (tmp_path / "repo").exists()
