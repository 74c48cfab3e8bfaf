"""The one place where an image becomes the model's input: a C-contiguous HxWx3 uint8 RGB array.

By default the result equals the official ``np.array(Image.open(path).convert("RGB"))`` for every
8-bit image (ARCHITECTURE.md 4.1): alpha is dropped without compositing, and neither EXIF
orientation nor ICC profiles are applied. ``exif_transpose=True`` applies the EXIF orientation; it
stays off by default because the official outputs were computed on the stored, unrotated pixels.

Deliberate differences from the official code, which would clip these to an almost white image:
16-bit gray keeps its high byte, and 32-bit integer gray is read as 16-bit when its values fit.
Float and other modes without a faithful 8-bit mapping are refused. Multi-frame files (animated
GIF/PNG, multi-page TIFF) give their first frame; a PIL image is converted at its current frame.

Sizes are checked on the header, before any pixel is decoded, against ``max_pixels``; that check
replaces Pillow's global decompression-bomb limit (see ``_PillowBombCheckLift``).
"""

from __future__ import annotations

import io
import os
import struct
import threading

import numpy as np
from PIL import Image, ImageOps

from reference.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedImageModeError,
)

MIN_SIDE = 29  # ARCHITECTURE.md 4.3: stage-1 attention needs ceil(side / 4) >= 8
DEFAULT_MAX_PIXELS = 178_956_970  # twice Pillow's default limit, where Pillow itself refuses

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray

# 8-bit modes whose convert("RGB") is the official behaviour and loses nothing that RGB could hold.
_CONVERTIBLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_SUPPORTED_MODES = _CONVERTIBLE_MODES | _SIXTEEN_BIT_MODES | {"I"}
# What Pillow raises for missing, unreadable, corrupt or truncated files.
_DECODE_FAILURES = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class _PillowBombCheckLift:
    """Lift Pillow's global pixel limit while any load_rgb call decodes, and restore it afterwards.

    Our own check runs on the header before decoding, so Pillow's must not refuse an image below
    ``max_pixels`` nor warn about it. ``Image.MAX_IMAGE_PIXELS`` is process-wide, so a per-call
    save/restore would race between decoding threads: the first caller in saves and lifts it, the
    last one out restores it. Other code decoding at the same time sees the limit lifted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved: int | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                Image.MAX_IMAGE_PIXELS = self._saved


_pillow_bomb_check_lifted = _PillowBombCheckLift()


def load_rgb(
    source: ImageSource,
    *,
    exif_transpose: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Read a path, encoded bytes, a PIL image or a uint8 array as the model's RGB input.

    ``max_pixels=None`` removes the size limit. Failures raise the ImageError family, so the batch
    scanner can record a status per file instead of stopping. ``name`` is what error messages call
    encoded bytes (the file they were read from), so they read as they would for its path.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL.Image>"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    else:
        raise TypeError(
            "load_rgb takes a path, bytes, a PIL image or a numpy array, "
            f"not {type(source).__name__}"
        )
    # Bytes go through BytesIO: Image.open would take a bare bytes object for a file name.
    buffer = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else None
    with _pillow_bomb_check_lifted:
        try:
            if isinstance(source, Image.Image):
                return _from_pil(source, name, exif_transpose, max_pixels)
            with Image.open(name if buffer is None else buffer) as image:
                return _from_pil(image, name, exif_transpose, max_pixels)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Only reachable if other code resets Pillow's limit while we decode.
            raise ImageTooLargeError(f"{name}: Pillow refused the image: {error}") from error
        except _DECODE_FAILURES as error:
            detail = str(error) if buffer is None else str(error).replace(repr(buffer), repr(name))  # Pillow names the buffer
            raise ImageDecodeError(f"cannot read image {name}: {type(error).__name__}: {detail}") from error


def _from_pil(
    image: Image.Image, name: str, exif_transpose: bool, max_pixels: int | None
) -> np.ndarray:
    """Check size and mode from the header, then decode; Pillow errors are mapped by the caller."""
    _check_size(image.width, image.height, name, max_pixels)
    mode = image.mode
    if mode not in _SUPPORTED_MODES:
        raise UnsupportedImageModeError(
            f"{name}: pixel mode {mode!r} has no faithful 8-bit RGB conversion; expected an 8-bit "
            "mode (RGB, RGBA, L, LA, P, PA, CMYK, 1, YCbCr) or 16-bit integer gray. "
            "Convert the image to 8-bit RGB first"
        )
    image.load()
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    if mode in _CONVERTIBLE_MODES:
        return np.array(image.convert("RGB"))
    values = np.asarray(image)
    if mode == "I" and (values.min() < 0 or values.max() > 0xFFFF):
        raise UnsupportedImageModeError(
            f"{name}: 32-bit integer pixels range from {values.min()} to {values.max()}; only "
            "values within 0..65535 (16-bit data) can be mapped to 8 bits"
        )
    return _gray_to_rgb((values >> 8).astype(np.uint8))


def _from_array(array: np.ndarray, max_pixels: int | None) -> np.ndarray:
    """Accept the layouts a decoder could have produced; the result may share the input's memory."""
    if array.dtype != np.uint8 or not (
        array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    ):
        raise UnsupportedImageModeError(
            f"<array>: got shape {array.shape} with dtype {array.dtype}; expected uint8 with shape "
            "HxWx3 (RGB), HxWx4 (RGBA, alpha is dropped) or HxW (gray)"
        )
    height, width = array.shape[:2]
    _check_size(width, height, "<array>", max_pixels)
    if array.ndim == 2:
        return _gray_to_rgb(array)
    return np.ascontiguousarray(array[:, :, :3])


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _check_size(width: int, height: int, name: str, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} (WxH) is {width * height:,} pixels, above the limit of "
            f"{max_pixels:,}; pass a larger max_pixels (or None for no limit) to read it"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(
            f"{name}: {width}x{height} (WxH) is below the model's minimum of {MIN_SIDE}x{MIN_SIDE}"
        )

