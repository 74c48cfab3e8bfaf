"""A deterministic family of simulated cameras and editing histories.

Noiseprint++ learns the traces an acquisition pipeline leaves (sensor pattern, demosaicing,
in-camera processing, compression) and how later edits change them. With no camera-labelled
photos at hand, ``camera_model(i)`` is camera "model" number ``i``: a fixed choice of CFA layout,
demosaicing algorithm, white balance, colour matrix, tone curve, noise level, chroma denoising,
sharpening and JPEG quantization tables, drawn from a seeded generator so the same index is the
same camera in every run. ``develop`` takes a display-referred scene, undoes a generic sRGB
rendering to get linear light (as in "unprocessing"), mosaics it with the camera's CFA, adds
shot and read noise, and renders it again with that camera's pipeline.

``edit_history(i)`` is likewise a fixed list of edits (resize, recompression, brightness and
contrast, gamma, blur, sharpening); history 0 is "no edit".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imageops import gaussian_blur, jpeg, resize_linear, scaled_tables, to_uint8

CAMERA_SEED = 0x7A3E_5C01
HISTORY_SEED = 0x5D17_0B42
# Channel (0 R, 1 G, 2 B) at (row % 2, col % 2) for each Bayer layout.
CFA_PATTERNS = {
    "RGGB": ((0, 1), (1, 2)),
    "BGGR": ((2, 1), (1, 0)),
    "GRBG": ((1, 0), (2, 1)),
    "GBRG": ((1, 2), (0, 1)),
}
DEMOSAIC_METHODS = ("bilinear", "colour_difference", "edge")
TONE_CURVES = ("srgb", "gamma", "filmic")
_BILINEAR = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32)


@dataclass(frozen=True)
class Camera:
    index: int
    cfa: str
    demosaic: str
    wb_gains: tuple[float, float, float]
    ccm: tuple[float, ...]  # 3x3 row-major, camera RGB -> linear sRGB, rows sum to 1
    tone: str
    gamma: float
    shot_noise: float  # upper bound of the shot-noise variance per unit signal
    read_noise: float  # upper bound of the read-noise variance
    chroma_denoise: float  # sigma of the chroma smoothing (pixels)
    sharpen: float  # unsharp-mask amount on luma
    jpeg_scale: float | None  # multiplier of the standard tables; None: the camera saves no JPEG
    subsampling: int  # 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0

    @property
    def ccm_matrix(self) -> np.ndarray:
        return np.array(self.ccm, dtype=np.float32).reshape(3, 3)

    def qtables(self) -> tuple[np.ndarray, np.ndarray]:
        """The camera's own tables: standard ones scaled and perturbed by a per-camera pattern."""
        assert self.jpeg_scale is not None
        return scaled_tables(self.jpeg_scale, np.random.default_rng([CAMERA_SEED, self.index, 1]), jitter=0.15)


def camera_model(index: int) -> Camera:
    """Camera model number ``index`` (any non-negative int), the same in every run."""
    rng = np.random.default_rng([CAMERA_SEED, index])
    mix = rng.uniform(0.0, 0.45)
    off = rng.uniform(-0.5, 0.5, size=(3, 3)) * mix
    ccm = np.eye(3) * (1 + mix) + off
    ccm = ccm / ccm.sum(axis=1, keepdims=True)  # rows sum to 1: white stays white
    return Camera(
        index=index,
        cfa=str(rng.choice(list(CFA_PATTERNS))),
        demosaic=str(rng.choice(DEMOSAIC_METHODS)),
        wb_gains=(float(rng.uniform(1.4, 2.6)), 1.0, float(rng.uniform(1.2, 2.2))),
        ccm=tuple(float(v) for v in ccm.reshape(-1)),
        tone=str(rng.choice(TONE_CURVES)),
        gamma=float(rng.uniform(1.8, 2.6)),
        shot_noise=float(10 ** rng.uniform(-4.0, -2.3)),
        read_noise=float(10 ** rng.uniform(-6.0, -4.0)),
        chroma_denoise=float(rng.choice([0.0, rng.uniform(0.5, 2.0)])),
        sharpen=float(rng.choice([0.0, rng.uniform(0.2, 1.0)])),
        jpeg_scale=None if rng.random() < 0.1 else float(rng.uniform(0.08, 0.9)),
        subsampling=int(rng.choice([0, 1, 2], p=[0.25, 0.15, 0.6])),
    )


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def _conv3x3(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation with zero padding (used for normalized convolution)."""
    padded = np.pad(x, 1)
    height, width = x.shape
    return sum(kernel[i, j] * padded[i : i + height, j : j + width] for i in range(3) for j in range(3))


def _channel_masks(cfa: str, height: int, width: int) -> np.ndarray:
    layout = np.array(CFA_PATTERNS[cfa])
    channel = np.tile(layout, (height // 2 + 1, width // 2 + 1))[:height, :width]
    return np.stack([channel == c for c in range(3)])


def mosaic(raw: np.ndarray, cfa: str) -> np.ndarray:
    masks = _channel_masks(cfa, *raw.shape[:2])
    return np.einsum("chw,hwc->hw", masks.astype(np.float32), raw)


def _interpolate(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Bilinear fill of the unknown sites by normalized convolution; known sites are kept."""
    num = _conv3x3(values * known, _BILINEAR)
    den = _conv3x3(known.astype(np.float32), _BILINEAR)
    return np.where(known, values, num / np.maximum(den, 1e-6))


def _edge_directed_green(cfa_image: np.ndarray, green: np.ndarray) -> np.ndarray:
    """Green at non-green sites from the direction (horizontal or vertical) with the smaller gradient."""
    g = np.pad(cfa_image * green, 1, mode="reflect")
    left, right, up, down = g[1:-1, :-2], g[1:-1, 2:], g[:-2, 1:-1], g[2:, 1:-1]
    grad_h, grad_v = np.abs(left - right), np.abs(up - down)
    horizontal, vertical = (left + right) / 2, (up + down) / 2
    estimate = np.where(grad_h < grad_v, horizontal, np.where(grad_v < grad_h, vertical, (horizontal + vertical) / 2))
    return np.where(green, cfa_image, estimate)


def demosaic(cfa_image: np.ndarray, cfa: str, method: str) -> np.ndarray:
    masks = _channel_masks(cfa, *cfa_image.shape)
    if method == "bilinear":
        return np.stack([_interpolate(cfa_image, masks[c]) for c in range(3)], axis=-1)
    if method == "edge":
        green = _edge_directed_green(cfa_image, masks[1])
    elif method == "colour_difference":
        green = _interpolate(cfa_image, masks[1])
    else:
        raise ValueError(f"unknown demosaicing method {method!r}; choose one of {DEMOSAIC_METHODS}")
    # Red and blue through their difference to green, which is smoother than the channels.
    red = green + _interpolate(cfa_image - green, masks[0])
    blue = green + _interpolate(cfa_image - green, masks[2])
    return np.stack([red, green, blue], axis=-1)


def _tone(x: np.ndarray, camera: Camera) -> np.ndarray:
    x = np.clip(x, 0, 1)
    if camera.tone == "gamma":
        return x ** (1 / camera.gamma)
    y = linear_to_srgb(x)
    if camera.tone == "filmic":  # a gentle S-curve on top of sRGB
        y = 0.6 * y + 0.4 * (3 * y**2 - 2 * y**3)
    return y


_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC).astype(np.float32)


def develop(scene: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Render a display-referred HxWx3 scene in [0, 1] as ``camera`` would save it (uint8 RGB)."""
    linear = srgb_to_linear(np.clip(scene, 0, 1))
    wb = np.array(camera.wb_gains, dtype=np.float32)
    raw = np.clip(linear @ np.linalg.inv(camera.ccm_matrix).T / wb, 0, 1)
    cfa_image = mosaic(raw, camera.cfa)
    shot = camera.shot_noise * rng.uniform(0.2, 1.0)
    read = camera.read_noise * rng.uniform(0.2, 1.0)
    cfa_image = cfa_image + rng.standard_normal(cfa_image.shape).astype(np.float32) * np.sqrt(shot * cfa_image + read)
    cfa_image = np.clip(cfa_image, 0, 1).astype(np.float32)
    rgb = demosaic(cfa_image, camera.cfa, camera.demosaic)
    rgb = np.clip(rgb * wb, 0, 1) @ camera.ccm_matrix.T
    rgb = _tone(rgb, camera)
    ycc = rgb @ _RGB_TO_YCC.T
    if camera.chroma_denoise > 0:
        ycc[..., 1:] = gaussian_blur(ycc[..., 1:], camera.chroma_denoise)
    if camera.sharpen > 0:
        ycc[..., 0] += camera.sharpen * (ycc[..., 0] - gaussian_blur(ycc[..., 0], 1.0))
    image = to_uint8(ycc @ _YCC_TO_RGB.T * 255)
    if camera.jpeg_scale is not None:
        image = jpeg(image, qtables=camera.qtables(), subsampling=camera.subsampling)
    return image


@dataclass(frozen=True)
class EditHistory:
    index: int
    ops: tuple[tuple, ...]  # ("resize", factor) | ("jpeg", quality) | ("brightness_contrast", gain, offset)
    #                        | ("gamma", g) | ("blur", sigma) | ("sharpen", amount)

    def scale(self) -> float:
        """The overall resize factor (output size / input size)."""
        return float(np.prod([op[1] for op in self.ops if op[0] == "resize"] or [1.0]))


def edit_history(index: int) -> EditHistory:
    """Editing history number ``index``; 0 is no edit. The same in every run."""
    if index == 0:
        return EditHistory(0, ())
    rng = np.random.default_rng([HISTORY_SEED, index])
    kinds = ["resize", "jpeg", "brightness_contrast", "gamma", "blur", "sharpen"]
    chosen = rng.choice(kinds, size=int(rng.integers(1, 4)), replace=False, p=[0.25, 0.3, 0.15, 0.1, 0.1, 0.1])
    ops = []
    for kind in chosen:
        if kind == "resize":
            ops.append(("resize", float(rng.choice([rng.uniform(0.5, 0.95), rng.uniform(1.05, 1.6)]))))
        elif kind == "jpeg":
            ops.append(("jpeg", int(rng.integers(50, 101))))
        elif kind == "brightness_contrast":
            ops.append(("brightness_contrast", float(rng.uniform(0.7, 1.3)), float(rng.uniform(-25, 25))))
        elif kind == "gamma":
            ops.append(("gamma", float(rng.uniform(0.7, 1.4))))
        elif kind == "blur":
            ops.append(("blur", float(rng.uniform(0.4, 1.2))))
        else:
            ops.append(("sharpen", float(rng.uniform(0.3, 1.2))))
    # Recompression, when present, comes last: it is how an edited photo is saved.
    ops.sort(key=lambda op: op[0] == "jpeg")
    return EditHistory(index, tuple(ops))


def apply_history(image: np.ndarray, history: EditHistory) -> np.ndarray:
    """``image`` (uint8 RGB) after each edit of ``history`` in turn."""
    for op in history.ops:
        kind = op[0]
        if kind == "resize":
            height, width = image.shape[:2]
            image = to_uint8(resize_linear(image, max(1, round(height * op[1])), max(1, round(width * op[1]))))
        elif kind == "jpeg":
            image = jpeg(image, op[1])
        elif kind == "brightness_contrast":
            image = to_uint8(image.astype(np.float32) * op[1] + op[2])
        elif kind == "gamma":
            image = to_uint8(255 * (image.astype(np.float32) / 255) ** op[1])
        elif kind == "blur":
            image = to_uint8(gaussian_blur(image, op[1]))
        elif kind == "sharpen":
            x = image.astype(np.float32)
            image = to_uint8(x + op[1] * (x - gaussian_blur(x, 1.0)))
        else:  # pragma: no cover - histories are built above
            raise AssertionError(kind)
    return image
