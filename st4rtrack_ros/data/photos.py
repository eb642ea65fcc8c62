"""Real photographs as scene textures, to narrow the gap between procedural training images and real cameras.

The photographs are the CC0 / public-domain sample images inside scikit-image's wheel (``skimage/data``). They are
found by path, never imported: ``pip install --no-deps scikit-image==0.26.0`` puts them on disk (scripts/setup_env.sh,
step ``photos``), and nothing of scikit-image runs. Only the synthetic generator reads them (training data and the
``photo`` preset); the node never does.

Each licence below is quoted from that image's docstring in scikit-image 0.26.0 (``skimage/data/_fetchers.py``);
sample images without a stated licence (``page``, ``moon``, the Middlebury stereo pair, ...) are left out.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

#: File in ``skimage/data`` → its licence, as scikit-image states it.
PHOTOS: dict[str, str] = {
    "astronaut.png": "public domain (NASA Great Images; no known copyright restrictions)",
    "brick.png": "CC0 (CC0Textures, Bricks25)",
    "camera.png": "CC0 (photographer Lav Varshney)",
    "chelsea.png": "CC0 (photographer Stefan van der Walt)",
    "clock_motion.png": "public domain (photographer Stefan van der Walt)",
    "coffee.png": "CC0 (photographer Rachel Michetti)",
    "coins.png": "no known copyright restrictions (Brooklyn Museum Collection)",
    "grass.png": "CC0 (DeviantArt, Grass-01 by linolafett)",
    "gravel.png": "CC0 (CC0Textures, Gravel04)",
    "hubble_deep_field.jpg": "public domain (NASA, HubbleSite)",
    "rocket.jpg": "public domain (SpaceX photos)",
}
#: Photographs are resized so that their longer side has this many pixels (detail finer than a rendered pixel at
#: the textures' metric scales is only aliasing).
MAX_SIDE = 384
#: A photograph spans this many texture periods (``Texture.scale`` metres each) before it repeats, mirrored.
PERIODS_PER_PHOTO = 2.0

_INSTALL_HINT = "pip install --no-deps scikit-image==0.26.0 (scripts/setup_env.sh does it)"
#: Environment variable naming a folder with the same files, for machines without the wheel (the GPU machine).
PHOTO_DIR_ENV = "ST4R_PHOTO_DIR"


def photo_dir() -> Path:
    """``skimage/data`` of the installed scikit-image wheel, located without importing scikit-image, or
    ``$ST4R_PHOTO_DIR``."""
    if os.environ.get(PHOTO_DIR_ENV):
        return Path(os.environ[PHOTO_DIR_ENV])
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"photo textures need scikit-image's sample images: {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=len(PHOTOS))
def load_photo(name: str) -> np.ndarray:
    """Photograph ``name`` as float32 (H, W, C) in [0, 1], C = 3 (colour) or 1 (grey), longer side ≤ MAX_SIDE."""
    path = photo_dir() / name
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"photo texture {path} is missing or unreadable: {_INSTALL_HINT}")
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    scale = MAX_SIDE / max(image.shape[:2])
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = image.astype(np.float32) / 255.0
    return image if image.ndim == 3 else image[..., None]


def _mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Integer pixel index → [0, n) by mirrored repetition (no seams where the photograph repeats)."""
    x = np.mod(x, 2 * n)
    return np.where(x < n, x, 2 * n - 1 - x)


def sample_photo(name: str, su: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, C) of a photograph at texture coordinates (su, sv) in periods (metres / scale)."""
    image = load_photo(name)
    h, w = image.shape[:2]
    px_per_period = max(h, w) / PERIODS_PER_PHOTO
    x = su * px_per_period
    y = -sv * px_per_period  # v points up on a face, image rows go down
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xa, xb = _mirror(x0, w), _mirror(x0 + 1, w)
    ya, yb = _mirror(y0, h), _mirror(y0 + 1, h)
    top = image[ya, xa] * (1 - fx) + image[ya, xb] * fx
    bottom = image[yb, xa] * (1 - fx) + image[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def photo_rgb(seed: int, color_a: np.ndarray, color_b: np.ndarray, su: np.ndarray, sv: np.ndarray) -> np.ndarray:
    """RGB (N, 3) in [0, 1] of the photograph chosen by ``seed``. Grey photographs are tinted from ``color_a`` (dark)
    to ``color_b`` (light), so the same few grey textures appear in many colours."""
    name = sorted(PHOTOS)[seed % len(PHOTOS)]
    values = sample_photo(name, su, sv)
    if values.shape[1] == 3:
        return values.astype(np.float64)
    p = values[:, 0].astype(np.float64)[:, None]
    return color_a[None, :] * (1 - p) + color_b[None, :] * p
