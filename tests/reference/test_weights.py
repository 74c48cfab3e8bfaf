"""``--weights official``: download, verify, unpack and cache, against a local HTTP server (never the real URL)."""

from __future__ import annotations

import hashlib
import http.server
import io
import multiprocessing
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from reference import build_trufor
from reference.errors import CheckpointError
from reference.weights import CHECKPOINT_NAME, WeightsSource, official_weights, resolve_weights


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release() -> dict[str, bytes]:
    """A stand-in release: a tiny model's checkpoint in the official layout, zipped as the authors do."""
    buffer = io.BytesIO()
    state = build_trufor("tiny").state_dict()
    torch.save({"state_dict": state, "epoch": 1}, buffer)
    checkpoint = buffer.getvalue()
    return {"state": state, "checkpoint": checkpoint, "zip": make_zip({f"weights/{CHECKPOINT_NAME}": checkpoint})}


class Server:
    """Serves ``routes`` (path -> (status, body, declared length)) on 127.0.0.1 and counts requests."""

    def __init__(self, routes: dict[str, tuple[int, bytes, int | None]]):
        self.routes, self.requests = routes, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                status, body, length = outer.routes.get(self.path, (404, b"not found", None))
                self.send_response(status)
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)  # a declared length above len(body) is a dropped connection
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cache_files(home: Path) -> list[str]:
    return sorted(p.name for p in home.rglob("*") if p.is_file() and p.name != ".lock")


def test_download_is_verified_unpacked_cached_and_loads_strictly(tmp_path, release, capsys):
    with Server({"/w.zip": (200, release["zip"], None)}) as server:
        source = WeightsSource(server.url("/w.zip"), md5(release["zip"]))
        path = official_weights(source, home=tmp_path)
        assert path.read_bytes() == release["checkpoint"]
        assert cache_files(tmp_path) == [CHECKPOINT_NAME]  # the zip is not kept
        assert official_weights(source, home=tmp_path) == path and server.requests == ["/w.zip"]  # cached
    assert "non-commercial" in capsys.readouterr().err
    loaded = build_trufor("tiny", checkpoint=path).state_dict()  # the safe loader, strict
    assert all(torch.equal(loaded[k], v) for k, v in release["state"].items())


def test_wrong_checksum_is_refused_with_both_checksums_and_nothing_cached(tmp_path, release):
    corrupt = bytearray(release["zip"])
    corrupt[len(corrupt) // 2] ^= 0xFF
    with Server({"/w.zip": (200, bytes(corrupt), None)}) as server:
        with pytest.raises(CheckpointError) as error:
            official_weights(WeightsSource(server.url("/w.zip"), md5(release["zip"])), home=tmp_path)
    assert md5(release["zip"]) in str(error.value) and md5(bytes(corrupt)) in str(error.value)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("route", [(404, b"gone", None), (500, b"oops", None), ("truncated",)], ids=["404", "500", "truncated"])
def test_failed_transfers_leave_no_file_and_say_what_to_do(tmp_path, release, route):
    if route == ("truncated",):
        route = (200, release["zip"][: len(release["zip"]) // 2], len(release["zip"]))
    with Server({"/w.zip": route}) as server:
        with pytest.raises(CheckpointError, match="Nothing was cached") as error:
            official_weights(WeightsSource(server.url("/w.zip"), md5(release["zip"])), home=tmp_path)
    if route[0] != 200:
        assert str(route[0]) in str(error.value)
    assert cache_files(tmp_path) == []


def _fetch(url: str, md5sum: str, home: str, results) -> None:
    results.put(str(official_weights(WeightsSource(url, md5sum), home=Path(home))))


def test_two_processes_fetching_at_once_download_once_and_agree(tmp_path, release):
    with Server({"/w.zip": (200, release["zip"], None)}) as server:
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        workers = [context.Process(target=_fetch, args=(server.url("/w.zip"), md5(release["zip"]), str(tmp_path), results))
                   for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        paths = {results.get(timeout=5) for _ in workers}
        assert all(worker.exitcode == 0 for worker in workers)
        assert server.requests == ["/w.zip"]
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == release["checkpoint"]


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs/trufor.pth.tar", "weights/../../trufor.pth.tar"])
def test_zip_entries_that_escape_are_refused(tmp_path, release, entry):
    archive = make_zip({f"weights/{CHECKPOINT_NAME}": release["checkpoint"], entry: b"x"})
    with Server({"/w.zip": (200, archive, None)}) as server:
        with pytest.raises(CheckpointError, match="unsafe path"):
            official_weights(WeightsSource(server.url("/w.zip"), md5(archive)), home=tmp_path)
    assert not (tmp_path / "escape.txt").exists() and not list(tmp_path.rglob(CHECKPOINT_NAME))


def test_local_zip_and_checkpoint_paths_resolve_offline(tmp_path, release, monkeypatch):
    archive, checkpoint = tmp_path / "TruFor_weights.zip", tmp_path / "mine.pth.tar"
    archive.write_bytes(release["zip"])
    checkpoint.write_bytes(release["checkpoint"])
    monkeypatch.setenv("TRUFOR_WEIGHTS_MD5", md5(release["zip"]))
    assert resolve_weights(checkpoint).path == checkpoint.resolve()
    from_zip = resolve_weights(archive)
    assert from_zip.path.read_bytes() == release["checkpoint"] and from_zip.preset == "trufor"
    monkeypatch.setenv("TRUFOR_WEIGHTS_MD5", "0" * 32)
    with pytest.raises(CheckpointError, match="expected 0000"):
        resolve_weights(archive)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(tmp_path / "missing.pth.tar")


def test_mirror_and_checksum_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRUFOR_WEIGHTS_URL", "http://127.0.0.1:9/mirror.zip")
    monkeypatch.setenv("TRUFOR_WEIGHTS_MD5", "ABC")
    assert WeightsSource.from_environment() == WeightsSource("http://127.0.0.1:9/mirror.zip", "abc")
    assert WeightsSource.from_environment(url="http://127.0.0.1:9/x.zip").url.endswith("x.zip")
