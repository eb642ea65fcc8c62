"""Camera image → network input: resize keeping aspect, crop or pad to the model size, normalise to [-1, 1].

The exact pixel mapping is kept so results in model pixels can be taken back to camera pixels (and CameraInfo
intrinsics brought to model pixels). Convention: pixel centres at integer coordinates, as OpenCV's ``resize`` uses,
so ``u_model = (u_cam + 0.5)·s − 0.5 − offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

FitMode = Literal["crop", "pad"]


@dataclass(frozen=True)
class PixelMapping:
    """Affine map between camera pixels and model pixels, per axis."""

    camera_wh: tuple[int, int]
    model_wh: tuple[int, int]
    resized_wh: tuple[int, int]
    offset_xy: tuple[int, int]  # top-left of the model window in the resized image (negative = padding)

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized_wh[0] / self.camera_wh[0], self.resized_wh[1] / self.camera_wh[1]

    def camera_to_model(self, uv: np.ndarray) -> np.ndarray:
        s = np.asarray(self.scale_xy)
        return (np.asarray(uv, dtype=np.float64) + 0.5) * s - 0.5 - np.asarray(self.offset_xy)

    def model_to_camera(self, uv: np.ndarray) -> np.ndarray:
        s = np.asarray(self.scale_xy)
        return (np.asarray(uv, dtype=np.float64) + 0.5 + np.asarray(self.offset_xy)) / s - 0.5

    def intrinsics_to_model(self, K: np.ndarray) -> np.ndarray:
        """Camera K (3×3) → K of the model image (the same affine map applied to the principal point)."""
        sx, sy = self.scale_xy
        out = np.asarray(K, dtype=np.float64).copy()
        out[0, 0], out[1, 1] = K[0, 0] * sx, K[1, 1] * sy
        out[0, 2], out[1, 2] = self.camera_to_model(np.array([K[0, 2], K[1, 2]]))
        out[0, 1] = K[0, 1] * sx
        return out


def plan_mapping(camera_wh: tuple[int, int], model_wh: tuple[int, int], mode: FitMode = "crop") -> PixelMapping:
    """Scale that covers (crop) or fits inside (pad) the model size, centred."""
    cw, ch = camera_wh
    mw, mh = model_wh
    if cw <= 0 or ch <= 0:
        raise ValueError(f"invalid camera size {camera_wh}")
    if mode not in ("crop", "pad"):
        raise ValueError(f"fit mode must be 'crop' or 'pad', got {mode!r}")
    s = max(mw / cw, mh / ch) if mode == "crop" else min(mw / cw, mh / ch)
    rw, rh = max(1, round(cw * s)), max(1, round(ch * s))
    if mode == "crop":
        rw, rh = max(rw, mw), max(rh, mh)
    else:
        rw, rh = min(rw, mw), min(rh, mh)
    return PixelMapping((cw, ch), (mw, mh), (rw, rh), ((rw - mw) // 2, (rh - mh) // 2))


def fit_image(img: np.ndarray, mapping: PixelMapping, interpolation: int | None = None, pad_value: float = 127
              ) -> np.ndarray:
    """Resize then crop/pad an (H, W[, C]) image to the model size.

    Colour images use area/linear resampling and mid-grey padding; pass ``cv2.INTER_NEAREST`` and ``pad_value=0``
    for maps that must not be blended (ground-truth depth, masks).
    """
    if img.shape[1::-1] != mapping.camera_wh:
        raise ValueError(f"image is {img.shape[1]}×{img.shape[0]}, mapping expects {mapping.camera_wh}")
    rw, rh = mapping.resized_wh
    if interpolation is None:
        interpolation = cv2.INTER_AREA if rw < img.shape[1] else cv2.INTER_LINEAR
    resized = cv2.resize(img, (rw, rh), interpolation=interpolation)
    mw, mh = mapping.model_wh
    ox, oy = mapping.offset_xy
    if ox >= 0 and oy >= 0:
        return np.ascontiguousarray(resized[oy:oy + mh, ox:ox + mw])
    out = np.full((mh, mw, *img.shape[2:]), pad_value, dtype=img.dtype)
    out[-oy:-oy + rh, -ox:-ox + rw] = resized
    return out


def fit_depth(depth: np.ndarray, mapping: PixelMapping) -> np.ndarray:
    """A depth map (metres, 0 = none) to the model size: nearest-neighbour (no depths blended across edges),
    padding = 0 (no depth)."""
    return fit_image(np.asarray(depth, dtype=np.float32), mapping, cv2.INTER_NEAREST, 0.0)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB → (3, H, W) float32 in [-1, 1] (mean 0.5, std 0.5, as the network was trained)."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def preprocess(rgb: np.ndarray, model_wh: tuple[int, int], mode: FitMode = "crop"
               ) -> tuple[torch.Tensor, PixelMapping]:
    """One camera image → (network input (3, h, w), pixel mapping)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    mapping = plan_mapping((rgb.shape[1], rgb.shape[0]), model_wh, mode)
    return to_tensor(fit_image(rgb, mapping)), mapping
