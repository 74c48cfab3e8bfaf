"""The official phase-2/3 augmentations and crops (ARCHITECTURE.md 6), in numpy and Pillow.

Order: random scale (p 0.5, factor uniform in [1 - 0.5, 1 + 0.5], linear for the image and
nearest for the mask), JPEG (p 0.5, quality uniform in 30..100), then a random crop; images
smaller than the crop are padded with RGB 127.5 and label -1 (ignored by every loss), centred.
Validation uses a centre crop of at most 2048 pixels per side, rounded down to a multiple of 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imageops import jpeg, resize_linear, resize_nearest, to_uint8

PAD_VALUE = 127.5
IGNORE_LABEL = -1


@dataclass(frozen=True)
class AugmentConfig:
    crop: int = 512
    scale_p: float = 0.5
    scale_limit: float = 0.5
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)


def random_scale(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, p: float, limit: float) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() >= p:
        return image, mask
    factor = rng.uniform(1 - limit, 1 + limit)
    height = max(1, round(image.shape[0] * factor))
    width = max(1, round(image.shape[1] * factor))
    return to_uint8(resize_linear(image, height, width)), resize_nearest(mask, height, width)


def random_jpeg(image: np.ndarray, rng: np.random.Generator, p: float, quality: tuple[int, int]) -> np.ndarray:
    if rng.random() >= p:
        return image
    return jpeg(image, int(rng.integers(quality[0], quality[1] + 1)))


def crop_or_pad(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``crop`` x ``crop`` window: random when ``rng`` is given, else centred.

    Returns float32 HxWx3 in 0..255 and int64 labels (0, 1, or -1 where padded).
    """
    height, width = mask.shape
    pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
    image = image.astype(np.float32)
    label = mask.astype(np.int64)
    if pad_h or pad_w:
        top, left = pad_h // 2, pad_w // 2
        image = np.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)), constant_values=PAD_VALUE)
        label = np.pad(label, ((top, pad_h - top), (left, pad_w - left)), constant_values=IGNORE_LABEL)
    height, width = label.shape
    if rng is None:
        top, left = (height - crop) // 2, (width - crop) // 2
    else:
        top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    return image[top : top + crop, left : left + crop], label[top : top + crop, left : left + crop]


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """A training crop: scale, JPEG, random crop (or pad)."""
    image, mask = random_scale(image, mask, rng, config.scale_p, config.scale_limit)
    image = random_jpeg(image, rng, config.jpeg_p, config.jpeg_quality)
    return crop_or_pad(image, mask, rng, config.crop)


def validation_crop(image: np.ndarray, mask: np.ndarray, max_size: int = 2048, multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Centre crop to at most ``max_size`` per side, each side rounded down to a multiple of 8."""
    height = min(image.shape[0], max_size) // multiple * multiple
    width = min(image.shape[1], max_size) // multiple * multiple
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width], mask[top : top + height, left : left + width]
