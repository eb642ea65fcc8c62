"""Image-formation nuisances for domain-shift evaluation: motion blur, exposure, white balance, gamma, vignetting,
sensor noise and JPEG compression, and the radial lens distortion of training pairs. Deterministic given the
generator, so a (preset, seed) pair always yields the same images.
"""

from __future__ import annotations

import cv2
import numpy as np

from st4rtrack_ros.data.presets import NuisanceParams


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float image to uint8 with rounding."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def motion_blur(rgb: np.ndarray, vector_px: tuple[float, float]) -> np.ndarray:
    """Blur along a straight image-space motion (dx, dy) in pixels, as a linear exposure smear would."""
    dx, dy = float(vector_px[0]), float(vector_px[1])
    length = float(np.hypot(dx, dy))
    if length < 1.0:
        return rgb
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    # Sample the segment densely and splat onto the kernel grid; no per-pixel image loop.
    s = np.linspace(-0.5, 0.5, 4 * size)
    xs = np.clip(np.rint(c + s * dx), 0, size - 1).astype(int)
    ys = np.clip(np.rint(c + s * dy), 0, size - 1).astype(int)
    np.add.at(kernel, (ys, xs), 1.0)
    kernel /= kernel.sum()
    return cv2.filter2D(rgb.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)


def jpeg_round_trip(rgb8: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode a uint8 RGB image as JPEG (blocking, ringing, chroma subsampling, as a camera's)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def radial_distortion_maps(k: np.ndarray, width: int, height: int, k1: float) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (H, W) float32 that give a pinhole image one-coefficient radial distortion.

    Output pixel at normalised radius r samples the pinhole image at radius r (1 + k1 r²) / (1 + k1 r_c²), r_c the
    corner's radius: the corners stay where they are, so every output pixel samples inside the frame (no black
    borders), and the centre is magnified (k1 > 0, barrel) or shrunk (k1 < 0, pincushion). Needs 1 + 3 k1 r_c² > 0
    (a monotonic map). Per-pixel labels (pointmaps, masks) go through the same maps with nearest sampling, which keeps
    them exact: a pixel's 3D point is the one its source pixel sees.
    """
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    xn, yn = (x - cx) / fx, (y - cy) / fy
    rc2 = max(((0 - cx) / fx) ** 2, ((width - 1 - cx) / fx) ** 2) + max(((0 - cy) / fy) ** 2,
                                                                        ((height - 1 - cy) / fy) ** 2)
    if 1 + 3 * k1 * rc2 <= 0 or 1 + k1 * rc2 <= 0:
        raise ValueError(f"k1 = {k1} folds the image (corner radius² {rc2:.3f})")
    g = (1 + k1 * (xn**2 + yn**2)) / (1 + k1 * rc2)
    return (cx + fx * xn * g).astype(np.float32), (cy + fy * yn * g).astype(np.float32)


def vignette_gain(height: int, width: int, strength: float) -> np.ndarray:
    """Radial darkening factor (H, W): 1 at the centre, 1 - strength at the corners."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((x - (width - 1) / 2) / (width / 2)) ** 2 + ((y - (height - 1) / 2) / (height / 2)) ** 2
    return 1.0 - strength * r2 / 2.0


class NuisanceModel:
    """Per-sequence nuisance state: slow exposure drift plus per-frame jitter, noise and blur."""

    def __init__(self, params: NuisanceParams, rng: np.random.Generator) -> None:
        """Draw the sequence-level parameters (drift phase, base white balance) once."""
        self.params = params
        self.rng = rng
        self.drift_phase = float(rng.uniform(0, 2 * np.pi))
        self.base_wb = 1.0 + params.color_jitter * rng.normal(0, 1, 3)

    @property
    def enabled(self) -> bool:
        """False when every nuisance is off, so clean presets skip the work."""
        p = self.params
        return any(
            v > 0
            for v in (p.noise_std, p.shot_noise, p.motion_blur_px, p.exposure_jitter, p.exposure_drift,
                      p.color_jitter, p.gamma_jitter, p.vignette)
        ) or p.jpeg_quality is not None

    def apply(self, rgb: np.ndarray, time_s: float, blur_px: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Apply the nuisances to a clean float RGB image in [0, 1]; returns uint8 RGB."""
        p = self.params
        if not self.enabled:
            return to_uint8(rgb)
        img = np.asarray(rgb, dtype=np.float32)
        if p.motion_blur_px > 0:
            img = motion_blur(img, (p.motion_blur_px * blur_px[0], p.motion_blur_px * blur_px[1]))
        log_gain = p.exposure_drift * np.sin(2 * np.pi * 0.15 * time_s + self.drift_phase)
        log_gain += p.exposure_jitter * self.rng.normal()
        wb = self.base_wb * (1.0 + 0.5 * p.color_jitter * self.rng.normal(0, 1, 3))
        img = img * np.float32(2.0**log_gain) * wb.astype(np.float32)[None, None, :]
        if p.vignette > 0:
            img = img * vignette_gain(img.shape[0], img.shape[1], p.vignette)[:, :, None]
        img = np.clip(img, 0.0, 1.0)
        if p.gamma_jitter > 0:
            gamma = float(np.clip(1.0 + p.gamma_jitter * self.rng.normal(), 0.5, 2.0))
            img = img ** np.float32(gamma)
        if p.noise_std > 0 or p.shot_noise > 0:
            std = np.sqrt(p.noise_std**2 + p.shot_noise**2 * img)
            img = img + std * self.rng.standard_normal(img.shape).astype(np.float32)
        out = to_uint8(img)
        if p.jpeg_quality is not None:  # last, as in a camera: the encoder sees the noisy, exposed image
            out = jpeg_round_trip(out, int(self.rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))
        return out
