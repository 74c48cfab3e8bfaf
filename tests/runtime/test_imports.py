"""What a scan process imports: the ONNX Runtime path never loads torch (issue 15).

Run in a fresh interpreter, since this pytest process has torch loaded already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from rt_helpers import noise_image

ROOT = Path(__file__).resolve().parents[2]
# Runs runtime.scan's CLI in-process, then prints its exit status and the heavy packages it loaded.
PROBE = """
import json, sys
from runtime.scan import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted({"torch", "onnx", "jinja2"} & {m.split(".")[0] for m in sys.modules})}))
"""


def scan_imports(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onnxruntime_scan_never_imports_torch(ort_artifacts, tmp_path):
    out_dir, _ = ort_artifacts
    image = tmp_path / "one.png"
    Image.fromarray(noise_image(48, 64)).save(image)
    result = scan_imports(str(image), "--out", str(tmp_path / "out"), "--backend", "onnxruntime",
                          "--artifacts", str(out_dir), "--precision", "fp32", "--save-maps")
    assert result["code"] == 0
    assert "torch" not in result["loaded"], result
    assert "onnx" not in result["loaded"], result  # the graphs load in ONNX Runtime; the onnx package is export's
