"""A scan's results as one offline HTML page that a person opens.

    python -m runtime.report scan/            # or: python -m runtime.scan photos/ --out scan/ --report

Writes ``RESULTS_DIR/report.html``: a summary (counts by status and decision, a score histogram,
the model, the commands and the threshold with where it came from), the failed inputs with their
messages, and a table of every input's latest row, sortable and filterable, with the image, its
localization map and its confidence map side by side. The page is self-contained and offline: the
rows travel inside it as JSON and are drawn a page at a time, so 10,000 inputs open in well under
2 s; thumbnails are JPEG files in ``thumbnails/`` beside it, fetched only for the rows on screen.

A scan with ``--report`` writes the thumbnails as it goes. For inputs without one (a scan without
``--report``), this command makes it from the saved maps (``--save-maps``) and the input file, when
both are still there; other rows say that no preview exists.

Exit status: 0 report written, 2 no scan results in RESULTS_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from tqdm import tqdm

from reference.errors import TruForError
from reference.image import load_rgb
from reference.outputs import atomic_write
from reference.result import TruForResult

from .decision import DEFAULT_THRESHOLD
from .outputs import colorize, save_thumbnail
from .records import OK, generic_error, read_latest
from .scan_dir import SETTINGS_FILE, read_commands
from .scanner import OUTPUT_FILES, output_path

REPORT_FILE = "report.html"
TEMPLATES = Path(__file__).with_name("report_assets")
HISTOGRAM_BINS = 20
TOP_ERRORS = 10


def _relative_url(out: Path, folder: str, relpath: str) -> str | None:
    """The page's link to an input's file of ``folder``, when it exists."""
    exists = output_path(out, folder, relpath).is_file()
    return f"{folder}/{quote(relpath + OUTPUT_FILES[folder])}" if exists else None


def _file_uri(path: str) -> str | None:
    """A link to the input itself, when it is still where the scan read it."""
    resolved = Path(path).absolute()
    return resolved.as_uri() if resolved.is_file() else None


def make_missing_thumbnails(out: Path, rows: list[dict], exif_transpose: bool) -> None:
    """Thumbnails of ok rows that have none, from ``maps/<relpath>.npz`` and the input, where both exist."""
    todo = [row for row in rows if row["status"] == OK and not output_path(out, "thumbnails", row["relpath"]).is_file()]
    for row in tqdm(todo, desc="thumbnails", unit="img", file=sys.stderr, disable=len(todo) < 50):
        maps = output_path(out, "maps", row["relpath"])
        if not maps.is_file() or not Path(row["path"]).is_file():
            continue
        try:
            rgb = load_rgb(row["path"], exif_transpose=exif_transpose, max_pixels=None)
            with np.load(maps) as fields:
                result = TruForResult(map=fields["map"], conf=fields["conf"], score=float(fields["score"]))
            if result.map.shape != rgb.shape[:2]:
                continue  # the file changed since the scan
            save_thumbnail(output_path(out, "thumbnails", row["relpath"]), rgb, result)
        except (TruForError, OSError, ValueError, KeyError):
            continue  # the row shows that it has no preview


def _table_row(out: Path, row: dict) -> dict[str, Any]:
    """What the page's table shows of a row (unknown fields of older rows read as missing)."""
    return {
        "name": row["relpath"],
        "status": row["status"],
        "error": row.get("error"),
        "width": row.get("width"),
        "height": row.get("height"),
        "score": row.get("score"),
        "forged": row.get("forged"),
        "forged_fraction": row.get("forged_fraction"),
        "forged_fraction_confident": row.get("forged_fraction_confident"),
        "mode": row.get("mode"),
        "seconds": row.get("seconds"),
        "thumbnail": _relative_url(out, "thumbnails", row["relpath"]),
        "overlay": _relative_url(out, "overlays", row["relpath"]),
        "file": _file_uri(row["path"]),
    }


def _histogram(scores: list[float], threshold: float) -> dict[str, Any]:
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    peak = max(int(counts.max()), 1) if len(scores) else 1
    bins = [
        {"low": low, "high": high, "count": int(count), "height": count / peak, "forged": low >= threshold}
        for low, high, count in zip(edges[:-1].tolist(), edges[1:].tolist(), counts)
    ]
    return {"bins": bins, "peak": peak, "threshold": threshold}


def _css_ramp() -> str:
    """The localization maps' colormap as a CSS gradient, for the legend."""
    stops = colorize(np.linspace(0.0, 1.0, 9)[np.newaxis])[0]
    return "linear-gradient(90deg, " + ", ".join(f"rgb({r}, {g}, {b})" for r, g, b in stops) + ")"


def _error_summary(rows: list[dict]) -> list[tuple[str, str, int]]:
    """The commonest (status, message) pairs."""
    counts = Counter((row["status"], generic_error(row)) for row in rows)
    return [(status, message, n) for (status, message), n in counts.most_common(TOP_ERRORS)]


def read_scan(out: Path) -> tuple[list[dict], dict[str, Any]]:
    """The latest row of each input, by name, and the settings in ``scan.json``."""
    results = out / "results.jsonl"
    latest = read_latest(results)
    if not latest:
        raise TruForError(
            f"{out} holds no scan results ({results} is missing or empty); run python -m runtime.scan first"
        )
    settings_path = out / SETTINGS_FILE
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    return sorted(latest.values(), key=lambda row: row["relpath"]), settings


def report_data(out: Path, rows: list[dict], settings: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows."""
    ok = [row for row in rows if row["status"] == OK]
    failed = [row for row in rows if row["status"] != OK]
    threshold = settings.get("threshold", DEFAULT_THRESHOLD)
    decisions = Counter("forged" if row.get("forged") else "not forged" for row in ok)
    return {
        "folder": str(out.resolve()),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": settings,
        "random_weights": "random weights" in str(settings.get("model", "")),
        "commands": read_commands(out),
        "total": len(rows),
        "ok": len(ok),
        "statuses": Counter(row["status"] for row in rows).most_common(),
        "forged": decisions["forged"],
        "not_forged": decisions["not forged"],
        "failed": len(failed),
        "errors": _error_summary(failed),
        "histogram": _histogram([row["score"] for row in ok], threshold),
        "threshold": threshold,
        "rows": [_table_row(out, row) for row in rows],
        "ramp": _css_ramp(),
    }


def render(data: dict[str, Any]) -> str:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(("html",)))
    environment.filters["thousands"] = lambda n: f"{n:,}"
    environment.filters["short"] = lambda x: f"{x:.4g}"
    # The script and style go in verbatim: Jinja must not read JavaScript's braces as its own syntax.
    assets = {name: Markup((TEMPLATES / name).read_text()) for name in ("report.css", "report.js")}
    template = environment.get_template("report.html")
    return template.render(data=data, style=assets["report.css"], script=assets["report.js"])


def write_report(out: Path) -> Path:
    """Make missing thumbnails where possible, then write ``out/report.html``; returns its path."""
    rows, settings = read_scan(out)
    make_missing_thumbnails(out, rows, settings.get("exif_transpose", False))
    page = render(report_data(out, rows, settings))
    path = out / REPORT_FILE
    atomic_write(path, lambda file: file.write(page.encode("utf-8")))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR", help="the --out folder of python -m runtime.scan")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.results)
    except TruForError as error:
        print(f"[E] {error}", file=sys.stderr)
        return 2
    print(f"[I] wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser: {path.resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
