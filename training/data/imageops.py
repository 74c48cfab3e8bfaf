"""Small image operations on numpy arrays, written for the data pipeline (no OpenCV, no SciPy).

Images are HxWx3 (or HxW) arrays; float arrays are in the 0..255 range unless a function says
otherwise. Resizes use pixel-centre geometry without antialiasing (what OpenCV calls linear and
nearest interpolation), so a downscale aliases exactly as the official augmentation did.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# The standard (ITU T.81 Annex K) quality-50 tables, row-major, as Pillow reads and writes them.
STANDARD_LUMA_TABLE = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)
STANDARD_CHROMA_TABLE = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32,
    dtype=np.float64,
)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip a 0..255 float array to uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(int(np.ceil(3.0 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return taps / taps.sum()


def convolve_separable(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The same 1-D kernel along rows and columns, with edge-replicated borders; float32 out."""
    x = np.asarray(x, dtype=np.float32)
    radius = len(taps) // 2
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, pad, mode="edge")
    height, width = x.shape[:2]
    rows = sum(w * padded[i : i + height] for i, w in enumerate(taps))
    return sum(w * rows[:, i : i + width] for i, w in enumerate(taps)).astype(np.float32)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.asarray(x, dtype=np.float32)
    return convolve_separable(x, gaussian_kernel(sigma))


def _linear_coords(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centred linear resampling along one axis."""
    src = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    src = np.clip(src, 0, size_in - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (src - low).astype(np.float32)


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize without antialiasing; returns float32 (0..255 for uint8 input)."""
    x = np.asarray(image, dtype=np.float32)
    r0, r1, rw = _linear_coords(x.shape[0], height)
    c0, c1, cw = _linear_coords(x.shape[1], width)
    extra = (None,) * (x.ndim - 2)
    rows = x[r0] * (1 - rw)[(slice(None), None) + extra] + x[r1] * rw[(slice(None), None) + extra]
    return rows[:, c0] * (1 - cw)[(None, slice(None)) + extra] + rows[:, c1] * cw[(None, slice(None)) + extra]


def resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize (source index floor(i * in / out)), dtype kept."""
    rows = np.minimum((np.arange(height) * mask.shape[0]) // height, mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * mask.shape[1]) // width, mask.shape[1] - 1)
    return mask[rows][:, cols]


def jpeg(
    image: np.ndarray,
    quality: int | None = None,
    *,
    qtables: tuple[np.ndarray, np.ndarray] | None = None,
    subsampling: int = 2,
) -> np.ndarray:
    """Encode an RGB uint8 image as JPEG and decode it again.

    ``quality`` uses libjpeg's standard scaled tables; ``qtables`` (luma, chroma; 64 values each,
    row-major) replaces them. ``subsampling``: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
    """
    buffer = io.BytesIO()
    options: dict = {"subsampling": subsampling}
    if qtables is not None:
        options["qtables"] = [[int(v) for v in table] for table in qtables]
    else:
        options["quality"] = int(quality if quality is not None else 75)
    Image.fromarray(image).save(buffer, "JPEG", **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"))


def scaled_tables(scale: float, rng: np.random.Generator | None = None, jitter: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Standard tables times ``scale`` (libjpeg's quality mapping is one such family), each entry
    optionally perturbed by up to ``jitter`` (relative), clipped to the baseline range 1..255."""
    tables = []
    for base in (STANDARD_LUMA_TABLE, STANDARD_CHROMA_TABLE):
        table = base * scale
        if rng is not None and jitter > 0:
            table = table * (1 + rng.uniform(-jitter, jitter, size=64))
        tables.append(np.clip(np.rint(table), 1, 255).astype(np.int64))
    return tables[0], tables[1]


def shift_edge(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved down by ``dy`` and right by ``dx``; the uncovered border replicates the edge."""
    height, width = image.shape[:2]
    pad = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[top : top + height, left : left + width]


def affine_warp(image: np.ndarray, matrix: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``out[y, x] = image[matrix @ (x, y, 1)]`` (source coordinates of each output pixel, pixel
    centres at integers); bilinear for images, nearest for masks; outside the source gives 0."""
    coefficients = tuple(float(v) for v in np.asarray(matrix, dtype=np.float64)[:2].reshape(-1))
    # PIL's AFFINE maps output (x + 0.5, y + 0.5) to input coordinates with centres at +0.5.
    a, b, c, d, e, f = coefficients
    c = c + 0.5 - 0.5 * (a + b)
    f = f + 0.5 - 0.5 * (d + e)
    source = Image.fromarray(image)
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    warped = source.transform(source.size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=resample)
    return np.array(warped)


def rotation_scale_about(center: tuple[float, float], angle_deg: float, scale: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The output-to-source affine (2x3, on (x, y)) of a rotation by ``angle_deg`` and a zoom by
    ``scale`` about ``center`` (x, y), whose result is then moved by ``shift`` (dx, dy)."""
    theta = np.deg2rad(angle_deg)
    forward = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inverse = np.linalg.inv(forward)
    cx, cy = center
    target = np.array([cx + shift[0], cy + shift[1]])
    offset = np.array([cx, cy]) - inverse @ target
    return np.hstack([inverse, offset[:, None]])
