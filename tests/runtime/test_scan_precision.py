"""--precision auto at scan time (the default): each backend says what it runs fastest here, the scan
says what was picked and why, and int8 on a CPU is run but flagged as not paying there."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from rt_helpers import noise_image

from export.auto_precision import INT8_CPU_NOTE
from runtime import scan
from runtime.backends import BACKENDS, BackendRequest, choose, create_backend
from runtime.runners import ort_runner
from runtime.runners.base import Capabilities


def test_each_backend_picks_for_where_it_runs(monkeypatch):
    request = BackendRequest(precision="auto")
    assert BACKENDS["tensorrt"].pick_precision(request).precision == "fp16"
    assert BACKENDS["torch"].pick_precision(request).precision == "fp32"
    assert BACKENDS["torch"].pick_precision(BackendRequest(precision="auto", device="cuda:1")).precision == "fp16"
    assert BACKENDS["onnxruntime"].pick_precision(request).precision == "fp32"  # no CUDA provider here
    monkeypatch.setattr(ort_runner, "default_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert BACKENDS["onnxruntime"].pick_precision(request).precision == "fp16"


def test_auto_resolves_with_the_backend_auto_picks(ort_artifacts):
    out, _ = ort_artifacts
    backend, resolved, choice = choose(BackendRequest(precision="auto", artifacts=out))
    assert (backend.name, resolved.precision, choice.precision) == ("onnxruntime", "fp32", "fp32")
    created = create_backend(BackendRequest(precision="auto", artifacts=out))
    assert created.precision == "fp32" and created.precision_choice == choice
    given = create_backend(BackendRequest(precision="fp32", artifacts=out))
    assert given.precision_choice is None


def test_scan_says_what_auto_picked(ort_artifacts, tmp_path, capsys):
    out, _ = ort_artifacts
    image = tmp_path / "a.png"
    Image.fromarray(noise_image(40, 48)).save(image)
    assert scan.main([str(image), "--out", str(tmp_path / "scan"), "--artifacts", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[I] --precision auto: fp32 (on the CPU: ONNX Runtime's CPU provider has no fast float16 kernels" in printed
    row = json.loads((tmp_path / "scan" / "results.jsonl").read_text())
    assert row["precision"] == "fp32"
    from runtime.scan_dir import SETTINGS_FILE

    settings = json.loads((tmp_path / "scan" / SETTINGS_FILE).read_text())
    assert settings["precision"] == "fp32"  # the scan folder records what ran, not "auto"


class _Backend:
    def __init__(self, precision, gpu, choice=None):
        self.precision, self.capabilities, self.precision_choice = precision, Capabilities(gpu=gpu), choice


@pytest.mark.parametrize(("precision", "gpu", "noted"), [("int8", False, True), ("int8", True, False), ("fp32", False, False)])
def test_int8_on_a_cpu_is_flagged(capsys, precision, gpu, noted):
    scan._precision_notes(_Backend(precision, gpu))
    assert (INT8_CPU_NOTE in capsys.readouterr().err) == noted


def test_triton_auto_takes_what_the_server_serves_fastest(monkeypatch):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (pip install -e '.[triton]')")
    from runtime.runners import triton_runner

    class Client:
        def __init__(self, ready):
            self.ready = ready

        def is_model_ready(self, name, client_timeout=None):
            return name in self.ready

        def close(self):
            pass

    request = BackendRequest(backend="triton", precision="auto", url="127.0.0.1:1")
    for ready, want in [({"trufor_tile_fp16_trt", "trufor_tile_fp32"}, "fp16"), ({"trufor_tile_fp32", "trufor_tile_fp16"}, "fp32"),
                        ({"trufor_tile_int8"}, "int8")]:
        monkeypatch.setattr(triton_runner, "connect", lambda url, ready=ready: Client(ready))
        assert triton_runner.TritonBackend.pick_precision(request).precision == want, ready
