"""Similarity transforms x ↦ s·R·x + t: the Umeyama fit, composition, and a trimmed robust fit.

Used by the evaluation (aligning scale-free predictions to ground truth) and by the tracker (chaining the world
frame across re-anchoring: the shared frame's reconstruction in the old window vs in the new one).
"""

from __future__ import annotations

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


def compose(a: Sim3, b: Sim3) -> Sim3:
    """a ∘ b: apply b, then a."""
    return Sim3(a.scale * b.scale, a.rotation @ b.rotation, a.scale * (a.rotation @ b.translation) + a.translation)


def inverse(a: Sim3) -> Sim3:
    rt = a.rotation.T
    return Sim3(1.0 / a.scale, rt, -(rt @ a.translation) / a.scale)



def robust_umeyama(src: np.ndarray, dst: np.ndarray, iters: int = 3, keep: float = 0.8) -> Sim3:
    """Umeyama refit on the ``keep`` fraction of points with the smallest residuals, ``iters`` times.

    Pointmaps of two windows disagree on moving objects and at depth edges; trimming those keeps the chain of
    world frames from being dragged by them.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    sim = umeyama(src, dst)
    for _ in range(iters):
        res = np.linalg.norm(sim.apply(src) - dst, axis=1)
        sel = res <= np.quantile(res, keep)
        if sel.sum() < 3:
            break
        sim = umeyama(src[sel], dst[sel])
    return sim
