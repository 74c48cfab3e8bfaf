"""Files (or their bytes) to the model's input, with a per-file error instead of an exception.

``decode`` is the one place a file becomes a ``Decoded``: the local scan calls it from worker
threads (``DecodePool``), the Ray scan on bytes that Ray tasks read. Pillow releases the GIL while
it decodes, so a few threads keep one model busy. The queue bound caps the decoded images held in
memory at once (``queue_size`` plus one per worker).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from reference.errors import ImageDecodeError
from reference.image import DEFAULT_MAX_PIXELS, load_rgb
from reference.inputs import InputFile


@dataclass(frozen=True)
class ImageOptions:
    """How files become the model's RGB input (``load_rgb``'s options), built at the CLI edge."""

    exif_transpose: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS


@dataclass
class Decoded:
    item: InputFile
    rgb: np.ndarray | None  # None when decoding failed
    error: BaseException | None
    seconds: float


def read_failure(path: object, error: OSError) -> ImageDecodeError:
    """The error for a file that cannot be read, worded as ``load_rgb`` words it for a path."""
    return ImageDecodeError(f"cannot read image {path}: {type(error).__name__}: {error}")


def decode(item: InputFile, options: ImageOptions, encoded: bytes | None = None) -> Decoded:
    """``item`` as RGB, or its error; ``encoded`` holds the file's bytes when they were read elsewhere."""
    start = time.perf_counter()
    try:
        rgb = load_rgb(
            item.path if encoded is None else encoded,
            exif_transpose=options.exif_transpose,
            max_pixels=options.max_pixels,
            name=str(item.path),  # rows name the file even when its bytes were read elsewhere
        )
        error = None
    except Exception as caught:  # recorded as this file's row, never raised
        rgb, error = None, caught
    return Decoded(item, rgb, error, time.perf_counter() - start)


DONE = object()  # every file has been handed out
EMPTY = object()  # nothing decoded yet within the timeout


class DecodePool:
    def __init__(self, items: Iterable[InputFile], workers: int, options: ImageOptions, queue_size: int | None = None):
        self._todo: queue.SimpleQueue[InputFile] = queue.SimpleQueue()
        for item in items:
            self._todo.put(item)
        self._out: queue.Queue = queue.Queue(maxsize=queue_size or 2 * workers)
        self._stop = threading.Event()
        self._options = options
        self._running = workers
        self._threads = [
            threading.Thread(target=self._work, name=f"decode-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._todo.get_nowait()
                except queue.Empty:
                    return
                self._put(decode(item, self._options))
        finally:
            self._put(DONE)

    def _put(self, value: object) -> None:
        while not self._stop.is_set():
            try:
                self._out.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self, timeout: float | None = None) -> Decoded | object:
        """The next decoded file, ``EMPTY`` if none arrived within ``timeout``, or ``DONE``."""
        while self._running:
            try:
                value = self._out.get(timeout=timeout)
            except queue.Empty:
                return EMPTY
            if value is DONE:
                self._running -= 1
                continue
            return value
        return DONE

    def close(self) -> None:
        """Stop the workers (a file being decoded finishes first) and drop what is queued."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        while True:
            try:
                self._out.get_nowait()
            except queue.Empty:
                break
