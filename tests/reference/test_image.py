"""reference.image: parity with the official reading, deliberate differences, and every refusal.

All images are written into tmp_path by the tests themselves.
"""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from reference.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    TruForError,
    UnsupportedImageModeError,
)
from reference.image import DEFAULT_MAX_PIXELS, MIN_SIDE, load_rgb


def _noise(height: int = 48, width: int = 64, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _official(path: Path) -> np.ndarray:
    """The official code's reading (ARCHITECTURE.md 4.1), closing the file."""
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def _stored_mode(path: Path) -> str:
    with Image.open(path) as image:
        return image.mode


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def _rgb(mode: str) -> Image.Image:
    """A noise image in ``mode``, made the way an encoder would."""
    rgb = Image.fromarray(_noise())
    if mode == "P":
        return rgb.quantize(64)
    if mode == "PA":
        return rgb.quantize(64).convert("PA")
    if mode in ("RGBA", "LA"):
        image = rgb.convert(mode)
        image.putalpha(Image.fromarray(_noise(channels=1, seed=1)))
        return image
    return rgb.convert(mode)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".png"),
        ("RGB", ".jpg"),
        ("RGBA", ".png"),
        ("L", ".png"),
        ("L", ".jpg"),
        ("LA", ".png"),
        ("P", ".png"),
        ("P", ".gif"),
        ("1", ".png"),
        ("CMYK", ".jpg"),
        ("CMYK", ".tif"),
        ("RGB", ".tif"),
    ],
)
def test_matches_official_reading(tmp_path: Path, mode: str, suffix: str) -> None:
    path = _save(_rgb(mode), tmp_path / f"image{suffix}")
    assert _stored_mode(path) == mode
    result = load_rgb(path)
    assert result.dtype == np.uint8 and result.shape == (48, 64, 3)
    assert result.flags.c_contiguous and result.flags.writeable
    np.testing.assert_array_equal(result, _official(path))


def test_alpha_is_dropped_without_compositing(tmp_path: Path) -> None:
    pixels = _noise(channels=4)
    pixels[0, 0] = (200, 100, 50, 0)  # fully transparent: compositing would change its colour
    path = _save(Image.fromarray(pixels), tmp_path / "rgba.png")
    result = load_rgb(path)
    assert tuple(result[0, 0]) == (200, 100, 50)
    np.testing.assert_array_equal(result, pixels[:, :, :3])


@pytest.mark.parametrize("mode", ["YCbCr", "PA", "RGBX"])
def test_modes_without_a_file_writer_match_convert(mode: str) -> None:
    image = _rgb(mode)
    assert image.mode == mode
    np.testing.assert_array_equal(load_rgb(image), np.array(image.convert("RGB")))


@pytest.mark.parametrize(
    ("dtype", "suffix", "mode"),
    [("<u2", ".png", "I;16"), (">u2", ".tif", "I;16B"), ("<i4", ".tif", "I")],
)
def test_high_bit_depth_gray_keeps_high_byte(
    tmp_path: Path, dtype: str, suffix: str, mode: str
) -> None:
    gray = np.full((32, 40), 0x1234, dtype=dtype)
    gray[0, :3] = (0xFFFF, 0x00FF, 0x0100)
    path = _save(Image.fromarray(gray), tmp_path / f"gray16{suffix}")
    assert _stored_mode(path) == mode
    result = load_rgb(path)
    assert result.shape == (32, 40, 3) and result.dtype == np.uint8
    assert tuple(result[5, 5]) == (0x12, 0x12, 0x12)  # the official convert would clip to 255
    assert result[0, :3, 0].tolist() == [0xFF, 0x00, 0x01]
    np.testing.assert_array_equal(result, np.repeat((gray >> 8)[:, :, None], 3, axis=2))


def test_32_bit_values_beyond_16_bit_are_refused(tmp_path: Path) -> None:
    gray = np.full((32, 40), 70_000, dtype=np.int32)
    path = _save(Image.fromarray(gray), tmp_path / "gray32.tif")
    with pytest.raises(UnsupportedImageModeError, match="70000"):
        load_rgb(path)


def test_float_mode_is_refused(tmp_path: Path) -> None:
    image = Image.fromarray(np.zeros((32, 40), dtype=np.float32))
    path = _save(image, tmp_path / "float.tif")
    with pytest.raises(UnsupportedImageModeError, match="'F'") as excinfo:
        load_rgb(path)
    assert "float.tif" in str(excinfo.value)
    with pytest.raises(UnsupportedImageModeError, match="'F'"):
        load_rgb(image)


def test_exif_orientation_is_applied_only_on_request(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = _save(Image.fromarray(_noise()), tmp_path / "rotated.jpg", exif=exif, quality=95)

    stored = load_rgb(path)
    assert stored.shape == (48, 64, 3)
    np.testing.assert_array_equal(stored, _official(path))

    rotated = load_rgb(path, exif_transpose=True)
    assert rotated.shape == (64, 48, 3)
    np.testing.assert_array_equal(rotated, np.rot90(stored, k=-1))
    with Image.open(path) as image:
        expected = np.array(ImageOps.exif_transpose(image).convert("RGB"))
    np.testing.assert_array_equal(rotated, expected)


def _first_half(format_name: str) -> bytes:
    """A valid file of ``format_name``, cut in half."""
    buffer = io.BytesIO()
    Image.fromarray(_noise(128, 128)).save(buffer, format_name)
    return buffer.getvalue()[: buffer.tell() // 2]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda path: path.write_bytes(b""), id="zero-bytes"),
        pytest.param(lambda path: path.write_bytes(_noise(64, 64).tobytes()), id="random-bytes"),
        pytest.param(lambda path: path.write_text("not an image\n"), id="text"),
        pytest.param(lambda path: path.write_bytes(_first_half("JPEG")), id="truncated-jpeg"),
        pytest.param(lambda path: path.write_bytes(_first_half("PNG")), id="truncated-png"),
        pytest.param(lambda path: path.mkdir(), id="directory"),
        pytest.param(lambda path: None, id="missing"),
    ],
)
def test_unreadable_files_raise_decode_error(tmp_path: Path, make) -> None:
    path = tmp_path / "broken_input.img"
    make(path)
    with pytest.raises(ImageDecodeError, match="broken_input.img") as excinfo:
        load_rgb(path)
    assert excinfo.value.status == "decode_error"


def test_corrupt_bytes_are_named_as_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_rgb(b"\x89PNG\r\n\x1a\n broken")


@pytest.mark.parametrize("data", [b"not an image at all", b"\x89PNG\r\n\x1a\n broken"])
def test_named_bytes_fail_with_the_message_of_their_path(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(ImageDecodeError) as by_path:
        load_rgb(path)
    with pytest.raises(ImageDecodeError) as by_bytes:
        load_rgb(data, name=str(path))
    assert str(by_bytes.value) == str(by_path.value)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims another size, with a valid CRC: a decompression bomb's header."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(60_000, 60_000))
    start = time.perf_counter()
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageTooLargeError, match="60000x60000") as excinfo:
            load_rgb(source)
        assert excinfo.value.status == "too_large"
    assert time.perf_counter() - start < 1.0
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(excinfo.value)


def test_custom_pixel_limit(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_noise()), tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match=r"64x48.*1,000.*max_pixels"):
        load_rgb(path, max_pixels=1000)
    np.testing.assert_array_equal(load_rgb(path, max_pixels=None), _official(path))
    with pytest.raises(ImageTooLargeError):
        load_rgb(_noise(), max_pixels=1000)


@pytest.mark.parametrize("pillow_limit", [100, 2000], ids=["pillow-error", "pillow-warning"])
def test_pillow_limit_neither_refuses_nor_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_limit: int
) -> None:
    pixels = _noise()  # 3072 pixels: above 2 x 100 (Pillow raises) and 2000 (Pillow warns)
    path = _save(Image.fromarray(pixels), tmp_path / "big_for_pillow.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        np.testing.assert_array_equal(load_rgb(path), pixels)
        np.testing.assert_array_equal(load_rgb(path.read_bytes()), pixels)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # restored for the rest of the process


def test_pillow_limit_is_restored_after_parallel_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [
        _save(Image.fromarray(_noise(seed=seed)), tmp_path / f"{seed}.png") for seed in range(16)
    ]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(load_rgb, paths * 4))
    for seed, result in enumerate(results[:16]):
        np.testing.assert_array_equal(result, _noise(seed=seed))
    assert Image.MAX_IMAGE_PIXELS == 100


@pytest.mark.parametrize("size", [(28, 40), (40, 28)])
def test_below_minimum_side_is_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _save(Image.new("RGB", size), tmp_path / "tiny.png")
    with pytest.raises(ImageTooSmallError, match=rf"{size[0]}x{size[1]}.*{MIN_SIDE}") as excinfo:
        load_rgb(path)
    assert "tiny.png" in str(excinfo.value)
    with pytest.raises(ImageTooSmallError, match="<array>"):
        load_rgb(np.zeros((size[1], size[0], 3), dtype=np.uint8))


def test_minimum_side_decodes(tmp_path: Path) -> None:
    pixels = _noise(MIN_SIDE, MIN_SIDE)
    path = _save(Image.fromarray(pixels), tmp_path / "minimum.png")
    np.testing.assert_array_equal(load_rgb(path), pixels)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_encoded_bytes(tmp_path: Path, kind: type) -> None:
    path = _save(_rgb("RGBA"), tmp_path / "bytes.png")
    np.testing.assert_array_equal(load_rgb(kind(path.read_bytes())), _official(path))


def test_pil_image_input(tmp_path: Path) -> None:
    path = _save(_rgb("P"), tmp_path / "palette.png")
    with Image.open(path) as image:
        np.testing.assert_array_equal(load_rgb(image), _official(path))


def test_rgb_array_is_returned_without_copy() -> None:
    pixels = _noise()
    result = load_rgb(pixels)
    assert np.shares_memory(result, pixels)
    np.testing.assert_array_equal(result, pixels)

    flipped = pixels[:, ::-1]
    result = load_rgb(flipped)
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, flipped)


def test_gray_and_rgba_arrays() -> None:
    gray = _noise(channels=1)
    np.testing.assert_array_equal(load_rgb(gray), np.stack([gray] * 3, axis=2))
    rgba = _noise(channels=4)
    result = load_rgb(rgba)
    assert result.flags.c_contiguous
    np.testing.assert_array_equal(result, rgba[:, :, :3])


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((48, 64, 3), dtype=np.float32),
        np.zeros((48, 64, 3), dtype=np.uint16),
        np.zeros((48, 64, 2), dtype=np.uint8),
        np.zeros((48 * 64 * 3,), dtype=np.uint8),
        np.zeros((1, 48, 64, 3), dtype=np.uint8),
    ],
    ids=["float32", "uint16", "two-channels", "flat", "batched"],
)
def test_bad_arrays_are_refused(array: np.ndarray) -> None:
    with pytest.raises(TruForError, match=rf"<array>.*{array.dtype}.*expected uint8"):
        load_rgb(array)


def test_other_source_types_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="int"):
        load_rgb(42)  # type: ignore[arg-type]


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "lime", "blue")]
    path = _save(frames[0], tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    with Image.open(path) as image:
        assert image.n_frames == 3
    result = load_rgb(path)
    assert (result == (255, 0, 0)).all()
    np.testing.assert_array_equal(result, _official(path))


def test_multipage_tiff_gives_first_page(tmp_path: Path) -> None:
    pages = [Image.fromarray(_noise(seed=seed)) for seed in range(3)]
    path = _save(pages[0], tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(load_rgb(path), _noise(seed=0))
