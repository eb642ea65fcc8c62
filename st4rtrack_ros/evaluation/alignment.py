"""Alignments used before scoring scale-ambiguous predictions: Umeyama Sim(3) and median-scale fits."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sim3:
    """Similarity transform x ↦ s·R·x + t."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points of shape (..., 3)."""
        return self.scale * (np.asarray(points) @ self.rotation.T) + self.translation

    def apply_poses(self, poses: np.ndarray) -> np.ndarray:
        """Transform (..., 4, 4) poses world ← camera: rotate and move the camera, scale only its position."""
        out = np.array(poses, dtype=np.float64, copy=True)
        out[..., :3, :3] = self.rotation @ out[..., :3, :3]
        out[..., :3, 3] = self.apply(out[..., :3, 3])
        return out

    def matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Sim3:
    """Least-squares Sim(3) (or SE(3)) mapping src onto dst (Umeyama 1991), points of shape (N, 3).

    Minimises Σ‖dst_i − (s R src_i + t)‖²; needs at least 3 non-collinear points.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if src.shape != dst.shape or src.shape[0] < 3:
        raise ValueError("umeyama needs two (N>=3, 3) arrays of equal shape")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    n = src.shape[0]
    cov = xd.T @ xs / n
    u, d, vt = np.linalg.svd(cov)
    s_fix = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s_fix[2, 2] = -1.0
    rot = u @ s_fix @ vt
    var_s = (xs**2).sum() / n
    scale = float(np.trace(np.diag(d) @ s_fix) / var_s) if with_scale and var_s > 0 else 1.0
    trans = mu_d - scale * rot @ mu_s
    return Sim3(scale, rot, trans)


def median_scale(pred: np.ndarray, gt: np.ndarray) -> float:
    """Global scale median‖gt‖ / median‖pred‖ over points (..., 3), norms taken about the world origin."""
    pn = np.linalg.norm(np.asarray(pred).reshape(-1, 3), axis=1)
    gn = np.linalg.norm(np.asarray(gt).reshape(-1, 3), axis=1)
    den = float(np.median(pn))
    return float(np.median(gn)) / den if den > 0 else 1.0


def per_track_median_scale(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """One scale per track, median‖gt‖ / median‖pred‖ over its valid frames; pred, gt (T, N, 3) → (N,).

    Tracks with no valid frame or a zero prediction get scale 1.
    """
    pn = np.linalg.norm(pred, axis=-1)
    gn = np.linalg.norm(gt, axis=-1)
    if valid is not None:
        pn = np.where(valid, pn, np.nan)
        gn = np.where(valid, gn, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        s = np.nanmedian(gn, axis=0) / np.nanmedian(pn, axis=0)
    return np.where(np.isfinite(s) & (s > 0), s, 1.0)


def rebase_to_first_camera(poses: np.ndarray, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Express poses (T, 4, 4) world ← camera and points (..., 3) in the frame-0 camera (the protocol's world).

    Returns (poses camera0 ← camera_t, points in camera 0 or None).
    """
    poses = np.asarray(poses, dtype=np.float64)
    inv0 = np.linalg.inv(poses[0])
    out_poses = inv0 @ poses
    out_points = None
    if points is not None:
        out_points = np.asarray(points, dtype=np.float64) @ inv0[:3, :3].T + inv0[:3, 3]
    return out_poses, out_points
