"""``--precision auto``: the precision that runs fastest where the model will run, and why.

On an NVIDIA GPU that is fp16 (TensorRT and CUDA kernels in float16, Noiseprint++ kept in float32). On a
CPU it is fp32: ONNX Runtime's CPU provider has no fast float16 kernels (it casts around them: fp16 ran
at 0.83 of fp32's speed at 768x1024, BENCHMARKS.md), and faithful int8, which must leave Noiseprint++
(most of the time) in float32, measured no faster than fp32 on this project's CPUs. int8 stays available
for measurements but is not recommended on a CPU; auto would offer it there only if a measurement showed
it at least ``INT8_WORTH_IT`` times as fast as fp32.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
INT8_WORTH_IT = 1.15  # the speed-up over fp32 that would pay for int8's error on a CPU
# fp32 / int8 time on the CPU at 768x1024, 2 threads, quiet (BENCHMARKS.md): AMD EPYC (Zen 4, AVX-512 VNNI),
# whole graph, the full model 7.302 / 7.234 s ("CPU backends side by side") and the default model 1.92 /
# 1.94 s ("CPU start-up, --precision auto and scan overlap"); the Intel Xeon (AVX-512 VNNI), full
# model, whole process, 7.5 / 8.4 s.
INT8_CPU_SPEEDUPS = {
    "full model, AMD EPYC": 7.302 / 7.234,
    "default model, AMD EPYC": 1.92 / 1.94,
    "full model, whole process, Intel Xeon": 7.5 / 8.4,
}
INT8_CPU_NOTE = (
    "int8 is not recommended on a CPU: faithful int8 keeps Noiseprint++ in float32, and it ran at "
    + ", ".join(f"{speedup:.2f}x fp32's speed ({where})" for where, speedup in INT8_CPU_SPEEDUPS.items())
    + f" at 768x1024 (BENCHMARKS.md), below the {INT8_WORTH_IT}x that would pay for its error; use fp32"
)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str

    def message(self) -> str:
        return f"--precision auto: {self.precision} ({self.reason})"


def on_gpu(where: str) -> PrecisionChoice:
    return PrecisionChoice("fp16", f"{where}: float16 kernels there, Noiseprint++ kept in float32")


def on_cpu(where: str = "on the CPU") -> PrecisionChoice:
    return PrecisionChoice(
        "fp32", f"{where}: ONNX Runtime's CPU provider has no fast float16 kernels, and int8 measured no faster "
        f"than fp32 on this project's CPUs (below {INT8_WORTH_IT}x, BENCHMARKS.md)"
    )


def visible_nvidia_gpus() -> int:
    """How many NVIDIA GPUs this process may use, without importing torch or CUDA: the driver's
    /proc entries (or ``nvidia-smi -L`` where those are absent), none when CUDA_VISIBLE_DEVICES hides them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        count = sum(1 for _ in proc.iterdir())
    elif shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return 0
        count = sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0
    else:
        return 0
    if visible is not None and count:
        count = min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def for_export() -> PrecisionChoice:
    """What ``python -m export.build --precision auto`` exports on this machine."""
    gpus = visible_nvidia_gpus()
    if gpus:
        return on_gpu(f"{gpus} NVIDIA GPU{'s' if gpus > 1 else ''} visible here (TensorRT engines, CUDA)")
    return on_cpu("no NVIDIA GPU visible here, so for the CPU")
