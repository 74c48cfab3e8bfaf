"""Procedural "natural-like" scenes: the offline source of pristine content when no photos are given.

No photographs ship with this project or with its dependencies, so the synthetic data starts from
scenes drawn here: a 1/f^beta random field (the power spectrum of natural images falls roughly
like that), a colour palette, low-frequency illumination, and layered shapes (ellipses, polygons,
rectangles, blobs) filled with their own fields, flat colours, stripes or checkers, with
slightly soft (defocused) edges. They are *not* photographs: their value is that the simulated
camera pipelines (``camera.py``) then leave real demosaicing, noise and compression traces on
them, which is what Noiseprint++ and the localizer learn. A folder of real photos
(``--pristine DIR``) is the better source when one is available.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .imageops import gaussian_blur


def fractal_field(rng: np.random.Generator, height: int, width: int, beta: float) -> np.ndarray:
    """A random field with power spectrum ~ 1/f^beta, scaled to [0, 1]."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    spectrum = (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) / radius ** (beta / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(spectrum, s=(height, width))
    low, high = np.percentile(field, (1, 99))
    return np.clip((field - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


def _palette(rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """``n`` colours in [0, 1]; muted more often than saturated, as in most photos."""
    colours = rng.uniform(0.05, 0.95, size=(n, 3))
    grey = colours.mean(axis=1, keepdims=True)
    saturation = rng.uniform(0.2, 1.0)
    return np.clip(grey + saturation * (colours - grey), 0, 1)


def _colourize(field: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a piecewise-linear palette."""
    stops = np.linspace(0, 1, len(palette))
    return np.stack([np.interp(field, stops, palette[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.choice(["field", "flat", "stripes", "checker"], p=[0.5, 0.2, 0.2, 0.1])
    if kind == "field":
        return _colourize(fractal_field(rng, height, width, rng.uniform(1.6, 3.2)), _palette(rng, 3))
    colour = _palette(rng, 2)
    if kind == "flat":
        return np.broadcast_to(colour[0], (height, width, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(4, max(6, min(height, width) / 4))
    angle = rng.uniform(0, np.pi)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    else:
        other = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
        t = ((np.floor(phase) + np.floor(other)) % 2).astype(np.float32)
    return (colour[0] * (1 - t[..., None]) + colour[1] * t[..., None]).astype(np.float32)


def random_shape_mask(rng: np.random.Generator, height: int, width: int, area: tuple[float, float]) -> np.ndarray:
    """A boolean ellipse, polygon, rectangle or blob covering roughly ``area`` (fractions) of the image."""
    target = rng.uniform(*area) * height * width
    kind = rng.choice(["ellipse", "polygon", "rectangle", "blob"])
    if kind == "blob":
        field = gaussian_blur(rng.standard_normal((height, width)).astype(np.float32), rng.uniform(2, 6) * max(height, width) / 64)
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        yy, xx = np.mgrid[0:height, 0:width]
        falloff = ((yy - cy) ** 2 + (xx - cx) ** 2) / (target / np.pi)
        score = field / (field.std() + 1e-6) * 0.5 - falloff
        mask = score > np.quantile(score, 1 - target / (height * width))
        return mask
    aspect = rng.uniform(0.5, 2.0)
    half_h = np.sqrt(target * aspect) / 2
    half_w = np.sqrt(target / aspect) / 2
    cy = rng.uniform(half_h, max(half_h + 1, height - half_h))
    cx = rng.uniform(half_w, max(half_w + 1, width - half_w))
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "ellipse":
        draw.ellipse([cx - half_w * 1.13, cy - half_h * 1.13, cx + half_w * 1.13, cy + half_h * 1.13], fill=255)
    elif kind == "rectangle":
        draw.rectangle([cx - half_w, cy - half_h, cx + half_w, cy + half_h], fill=255)
    else:
        corners = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        radii = rng.uniform(0.6, 1.4, corners) * 1.25
        points = [(cx + r * half_w * np.cos(a), cy + r * half_h * np.sin(a)) for a, r in zip(angles, radii)]
        draw.polygon(points, fill=255)
    return np.array(canvas) > 127


def procedural_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One scene as float32 HxWx3 display-referred RGB in [0, 1]."""
    scene = _colourize(fractal_field(rng, height, width, rng.uniform(2.2, 3.4)), _palette(rng, 5))
    for _ in range(int(rng.integers(2, 9))):
        mask = random_shape_mask(rng, height, width, (0.01, 0.2)).astype(np.float32)
        edge = gaussian_blur(mask, rng.uniform(0.3, 1.5))  # defocus: soft, not aliased, edges
        texture = _texture(rng, height, width)
        scene = scene * (1 - edge[..., None]) + texture * edge[..., None]
    illumination = 0.55 + 0.6 * fractal_field(rng, height, width, 4.0)
    scene = scene * illumination[..., None]
    # A little fine-scale detail everywhere, so no region is perfectly flat before the camera.
    detail = fractal_field(rng, height, width, 1.2) - 0.5
    scene = scene + rng.uniform(0.0, 0.06) * detail[..., None]
    return np.clip(scene, 0, 1).astype(np.float32)
