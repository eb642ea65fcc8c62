"""Alignments used before scoring scale-ambiguous predictions: Umeyama Sim(3) and median-scale fits.

``Sim3``/``umeyama`` live in ``geometry.similarity`` (the tracker chains windows with them too).
"""

from __future__ import annotations

import warnings

import numpy as np

from st4rtrack_ros.geometry.similarity import Sim3, umeyama

__all__ = ["Sim3", "median_scale", "per_track_median_scale", "rebase_to_first_camera", "umeyama"]


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
