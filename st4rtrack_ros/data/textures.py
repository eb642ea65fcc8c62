"""Textures evaluated per hit point from face-local metric coordinates (vectorised).

Each procedural family maps (u, v) in metres to a pattern value in [0, 1] that blends the texture's two colours; a
fine noise layer is added everywhere so that every surface carries detail a tracker can lock onto. The ``photo``
family samples a real photograph instead (``data.photos``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from st4rtrack_ros.data.photos import photo_rgb
from st4rtrack_ros.data.scene import Texture

_MASK32 = np.uint64(0xFFFFFFFF)


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Integer lattice hash → uniform floats in [0, 1); deterministic across platforms."""
    x = ix.astype(np.int64).astype(np.uint64) & _MASK32
    y = iy.astype(np.int64).astype(np.uint64) & _MASK32
    h = (x * np.uint64(374761393) + y * np.uint64(668265263) + np.uint64(seed % 2**32) * np.uint64(2246822519))
    h &= _MASK32
    h = ((h ^ (h >> np.uint64(13))) * np.uint64(1274126177)) & _MASK32
    h ^= h >> np.uint64(16)
    return h.astype(np.float64) / 4294967296.0


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth lattice value noise in [0, 1]."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    su, sv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a = hash2(iu, iv, seed)
    b = hash2(iu + 1, iv, seed)
    c = hash2(iu, iv + 1, seed)
    d = hash2(iu + 1, iv + 1, seed)
    return (a * (1 - su) + b * su) * (1 - sv) + (c * (1 - su) + d * su) * sv


def fbm(u: np.ndarray, v: np.ndarray, seed: int, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise, normalised to [0, 1]."""
    total = np.zeros_like(u)
    amp, norm = 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(u * 2.0**k, v * 2.0**k, seed + 1013 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def _noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    return fbm(u, v, seed, 4)


def _noise_hf(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(1.6 * (fbm(4 * u, 4 * v, seed, 3) - 0.5) + 0.5, 0, 1)


def _checker(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    return ((np.floor(u) + np.floor(v)) % 2).astype(np.float64)


def _stripes(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    angle = (seed % 360) * np.pi / 180
    s = np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)))
    return 0.5 + 0.5 * np.tanh(3 * s)


def _grid(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    du = np.abs(u - np.round(u))
    dv = np.abs(v - np.round(v))
    return (np.minimum(du, dv) < 0.06).astype(np.float64)


def _marble(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    return 0.5 + 0.5 * np.sin(2 * np.pi * (u + 0.5 * v + 3.0 * fbm(u, v, seed, 4)))


def _brick(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    row = np.floor(v * 2)
    uu = u + 0.5 * (row % 2)
    col = np.floor(uu)
    mortar = (np.abs(uu - np.round(uu)) < 0.04) | (np.abs(2 * v - np.round(2 * v)) < 0.06)
    shade = 0.25 + 0.6 * hash2(col, row, seed)
    return np.where(mortar, 1.0, shade)


def _dots(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    iu, iv = np.floor(u), np.floor(v)
    cu = iu + 0.25 + 0.5 * hash2(iu, iv, seed)
    cv = iv + 0.25 + 0.5 * hash2(iu, iv, seed + 7)
    r = 0.15 + 0.2 * hash2(iu, iv, seed + 13)
    return (np.hypot(u - cu, v - cv) < r).astype(np.float64)


FAMILIES: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "noise": _noise,
    "checker": _checker,
    "stripes": _stripes,
    "grid": _grid,
    "marble": _marble,
    "brick": _brick,
    "dots": _dots,
    "noise_hf": _noise_hf,
}


#: The family that samples real photographs (``data.photos``) instead of a procedural pattern.
PHOTO = "photo"


def evaluate_texture(texture: Texture, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of shape (N, 3) at face coordinates (u, v) in metres."""
    su, sv = u / texture.scale, v / texture.scale
    a = np.asarray(texture.color_a)
    b = np.asarray(texture.color_b)
    if texture.family == PHOTO:
        return photo_rgb(texture.seed, a, b, su, sv)
    pattern = FAMILIES[texture.family](su, sv, texture.seed)
    detail = fbm(8 * su, 8 * sv, texture.seed + 99, 2)
    p = np.clip(0.8 * pattern + 0.45 * (detail - 0.5), 0.0, 1.0)
    return a[None, :] * (1 - p)[:, None] + b[None, :] * p[:, None]
