"""The extras that install CUDA wheels agree on one CUDA major: TensorRT's wheels and cuda-python are
built per major, and a cuda-python of another major (13.x needs driver >= 580) fails at the first call."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name: [Requirement(text) for text in texts] for name, texts in project["optional-dependencies"].items()}


def test_cuda_python_is_pinned_to_the_cuda_major_of_the_tensorrt_wheels():
    checked = []
    for name, requirements in extras().items():
        majors = {int(m.group(1)) for r in requirements if (m := re.fullmatch(r"tensorrt(?:-lean)?-cu(\d+)", r.name))}
        assert not any(r.name in ("tensorrt", "tensorrt-lean") for r in requirements), \
            f"extra {name}: the tensorrt meta-package picks its CUDA major itself; name tensorrt-cuNN"
        if not majors:
            continue
        assert len(majors) == 1, f"extra {name} mixes CUDA majors {sorted(majors)}"
        (major,) = majors
        (cuda_python,) = [r for r in requirements if r.name == "cuda-python"]
        allowed = [v for v in (f"{major}.0", f"{major}.9", f"{major - 1}.9", f"{major + 1}.0") if cuda_python.specifier.contains(v)]
        assert allowed and all(Version(v).major == major for v in allowed), f"extra {name}: cuda-python {cuda_python.specifier}"
        checked.append(name)
    assert {"gpu", "gpu-cu12", "dev"} <= set(checked)


def test_the_readme_says_which_driver_each_gpu_extra_needs():
    text = (ROOT / "README.md").read_text()
    assert re.search(r"`\.\[gpu\]`.*\| >= 580 \|", text) and re.search(r"`\.\[gpu-cu12\]`.*\| >= 525", text)


def test_the_default_model_file_is_tracked_and_installed_with_the_package():
    from fnmatch import fnmatch

    from reference.weights import DEFAULT_MODEL

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = DEFAULT_MODEL.relative_to(ROOT / "reference").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in package_data["reference"]), package_data
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_MODEL.relative_to(ROOT))], cwd=ROOT)
        assert ignored.returncode == 1, ".gitignore must not hide the default model (*.pth.tar is ignored elsewhere)"
