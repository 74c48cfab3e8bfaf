"""gpu_check's report: the data as JSON, and the same as markdown tables, one per section."""

from __future__ import annotations

import json
from pathlib import Path

from reference.outputs import atomic_write_text

JSON_NAME, MARKDOWN_NAME = "gpu_check.json", "gpu_check.md"
SECTION_NOTES = {
    "parity": "The device against the CPU fp32 reference, per example image: p99 of |map| and |conf| "
              "differences, |score| difference; `passed` against `benchmarks.gpu_check.TOLERANCES`.",
    "latency": "Milliseconds per image, end to end from RGB (decode timed apart); stages are medians: the host "
               "time in each graph call, `stitch` the tiled time in none (placing and blending tiles). Peak "
               "memory: torch's allocator peak, and the device's used memory at the end of the row.",
    "speedup": "p50 of the eager fp32 reference over p50 of the optimized path, same GPU and size.",
    "scan": "The scan's own loop (decoding threads, batching, rows): images/s without the profiler, and the "
            "share of the wall time some CUDA kernel or copy ran (profiled run).",
    "tensorrt": "Engine builds (a failure is a row, not the end of the check), then parity and latency.",
    "tests": "`pytest -m gpu tests/runtime/runners` (the GPU tests of the torch CUDA and TensorRT backends).",
}


def _cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    """A markdown table whose columns are every key of ``rows``, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return lines


def markdown(data: dict) -> str:
    lines = [f"# GPU check: {data['verdict']}", "", f"Weights: {data['weights']}. Wall time {data['seconds']} s.", ""]
    settings = {**data["environment"], "cudnn_benchmark": data["cudnn_benchmark"], "cudnn_tf32": data["cudnn_tf32"],
                "matmul_tf32": data["matmul_tf32"]}
    lines += ["| | |", "|---|---|"] + [f"| {key} | `{value}` |" for key, value in settings.items()] + [""]
    for section, rows in data["sections"].items():
        lines += [f"## {section}", ""]
        if section in SECTION_NOTES:
            lines += [SECTION_NOTES[section], ""]
        lines += table(rows) + [""]
    return "\n".join(lines)


def write_reports(folder: Path, data: dict) -> tuple[Path, Path]:
    """``gpu_check.json`` and ``gpu_check.md`` in ``folder``, each written atomically."""
    paths = folder / JSON_NAME, folder / MARKDOWN_NAME
    for path, text in zip(paths, (json.dumps(data, indent=2, default=str) + "\n", markdown(data))):
        atomic_write_text(path, text)
    return paths
