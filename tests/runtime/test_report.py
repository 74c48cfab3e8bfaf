"""runtime.report: the page a person opens, checked in headless Chromium (skipped without it).

The scans are real (tiny model); the 10,000-row timing test writes synthetic rows, since scanning
that many images would take far longer than the page it checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rt_helpers import noise_image
from test_scan import by_relpath, scan

from reference.result import TruForResult
from runtime.outputs import THUMBNAIL_GAP, save_thumbnail
from runtime.records import FIELDS
from runtime.report import main as report_main
from runtime.scan_dir import SETTINGS_FILE

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (a fresh profile per launch)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the report's browser tests need it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra has it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def open_report(browser, path: Path, width: int = 1440):
    """The report in a new page, failing on any script error and on any request that leaves the folder."""
    page = browser.new_page(viewport={"width": width, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("request", lambda request: request.url.startswith("file://") or problems.append(f"fetched {request.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_function("document.body.dataset.renderedMs !== undefined")
    return page, problems


def embedded_rows(report: Path) -> list[dict]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', report.read_text(), re.S)
    return json.loads(match.group(1))


def names(page) -> list[str]:
    return page.locator("#rows td.name .path").all_text_contents()


@pytest.fixture
def resumed_scan(tmp_path, tiny_checkpoint) -> Path:
    """A scan with --report that failed on two files, then resumed with one of them fixed."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(noise_image(48 + 8 * (i % 3), 64, seed=i)).save(folder / f"img{i}.png")
    Image.fromarray(noise_image(48, 48, seed=9)).save(folder / "a <b>bold<b> & 'quoted'.png")
    (folder / "broken.png").write_text("not an image")
    (folder / "late.png").write_text("not an image yet")
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--report") == 1
    Image.fromarray(noise_image(56, 56, seed=7)).save(folder / "late.png")
    assert scan([folder], out, tiny_checkpoint, "--report", "--retry-errors") == 1  # broken.png still fails
    return out


def test_the_page_shows_every_input_once_sorts_filters_and_names_failures(browser, resumed_scan, tmp_path):
    out = resumed_scan
    latest = by_relpath(out)
    assert len(latest) == 9 and latest["late.png"]["status"] == "ok" and latest["broken.png"]["status"] == "decode_error"
    page, problems = open_report(browser, out / "report.html")

    assert page.locator("#rows tr").count() == 9, "one row per input: the resumed input's latest row only"
    assert page.inner_text("#total") == "9"
    assert page.inner_text("#shown") == "1–9 of 9"
    by_score = sorted((r for r in latest.values() if r["score"] is not None), key=lambda r: -r["score"])
    assert names(page) == [r["relpath"] for r in by_score] + ["broken.png"], "default: highest score first, failures last"
    scores = page.locator("#rows td.score").all_inner_texts()
    assert scores[0].endswith(f"{by_score[0]['score']:.3f}")

    page.click("th button[data-sort=score]")
    assert names(page) == [r["relpath"] for r in reversed(by_score)] + ["broken.png"]
    page.click("th button[data-sort=forged_fraction_confident]")
    by_confident = sorted(by_score, key=lambda r: (-r["forged_fraction_confident"], r["relpath"]))
    assert names(page)[:-1] == [r["relpath"] for r in by_confident]
    assert page.get_attribute("th:has(button[data-sort=forged_fraction_confident])", "aria-sort") == "descending"
    page.click("th button[data-sort=name]")
    assert names(page)[:4] == ["a <b>bold<b> & 'quoted'.png", "broken.png", "img0.png", "img1.png"]
    assert page.locator("#rows td.name b").count() == 0, "names are text, never markup"

    page.select_option("#filter-status", "failed")
    assert page.locator("#rows tr").count() == 1
    assert page.inner_text("#rows .message") == latest["broken.png"]["error"]
    assert "cannot read image" in page.inner_text("#failures")
    page.select_option("#filter-status", "all")
    page.select_option("#filter-decision", "forged")
    forged = sorted(r["relpath"] for r in latest.values() if r["forged"])
    assert sorted(names(page)) == forged
    assert page.inner_text("#shown") == f"1–{len(forged)} of {len(forged)} (filtered from 9)"
    page.select_option("#filter-decision", "all")

    assert "the default, not calibrated" in page.inner_text("#threshold-source")
    images = page.locator("#rows img")
    assert images.count() == 8 and page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.click("th button[data-sort=score]")  # back to the analyst's view: highest score first
    screenshot = tmp_path / "report.png"
    page.screenshot(path=screenshot, full_page=True)
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
    assert problems == []


def test_report_command_makes_missing_thumbnails_from_saved_maps(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(noise_image(48, 64, seed=i)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    assert scan([folder], out, tiny_checkpoint, "--save-maps") == 0
    assert not (out / "thumbnails").exists()
    assert report_main([str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    for i in range(2):
        with Image.open(out / "thumbnails" / f"{i}.png.jpg") as thumbnail:
            assert thumbnail.size == (3 * 64 + 2 * THUMBNAIL_GAP, 48), "image, map, confidence; never enlarged"
    rows = embedded_rows(out / "report.html")
    assert [row["thumbnail"] for row in rows] == ["thumbnails/0.png.jpg", "thumbnails/1.png.jpg"]


def test_report_of_an_empty_folder_exits_2(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "holds no scan results" in capsys.readouterr().err


def synthetic_scan(out: Path, count: int) -> None:
    """``count`` rows (a tenth failed) and their thumbnails (hard links to one real thumbnail)."""
    rng = np.random.default_rng(0)
    (out / "thumbnails").mkdir(parents=True)
    first = out / "thumbnails" / "first.jpg"
    result = TruForResult(map=rng.random((48, 64), np.float32), conf=rng.random((48, 64), np.float32), score=0.5)
    save_thumbnail(first, noise_image(48, 64), result)
    lines = []
    for index in range(count):
        relpath = f"batch{index // 1000}/image{index:05d}.jpg"
        row = dict.fromkeys(FIELDS)
        row.update(path=f"/nowhere/{relpath}", relpath=relpath, backend="torch", precision="fp32", seconds=0.5)
        if index % 10 == 9:
            row.update(status="decode_error", error=f"cannot read image /nowhere/{relpath}: truncated")
        else:
            score, fraction = rng.random(), rng.random()
            row.update(
                status="ok", width=640, height=480, score=score, forged=score > 0.5, threshold=0.5,
                threshold_source="default", forged_fraction=fraction, forged_fraction_confident=fraction * rng.random(),
                mode="whole",
            )  # fmt: skip
            target = out / "thumbnails" / f"{relpath}.jpg"
            target.parent.mkdir(exist_ok=True)
            os.link(first, target)
        lines.append(json.dumps(row))
    (out / "results.jsonl").write_text("\n".join(lines) + "\n")
    settings = {"backend": "torch", "precision": "fp32", "model": "checkpoint x", "threshold": 0.5}
    (out / SETTINGS_FILE).write_text(json.dumps(settings))


def test_a_report_of_10000_inputs_opens_in_under_2_seconds(browser, tmp_path):
    out = tmp_path / "big"
    synthetic_scan(out, 10_000)
    assert report_main([str(out)]) == 0
    page, problems = open_report(browser, out / "report.html")
    rendered_ms = float(page.evaluate("document.body.dataset.renderedMs"))
    print(f"10,000 rows: first table drawn {rendered_ms:.0f} ms after navigation")
    assert rendered_ms < 2000
    assert page.locator("#rows tr").count() == 50 and page.inner_text("#shown") == "1–50 of 10,000"
    assert page.inner_text("#page") == "page 1 of 200"
    page.select_option("#filter-status", "decode_error")
    assert page.inner_text("#shown") == "1–50 of 1,000 (filtered from 10,000)"
    assert problems == []
