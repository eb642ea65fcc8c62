"""Camera pose of every frame of a window from its reconstruction pointmap ¹Xʲⱼ (head 2), batched over frames.

¹Xʲⱼ holds, for each pixel of frame j, the 3D point seen there in world (anchor camera) coordinates, so pixel ↔ point
pairs give a PnP problem whose solution is camera j's pose. Two stages:

1. OpenCV ``solvePnPRansac`` per frame on a bounded subset: a strided pixel grid, then the most confident pixels
   (head-2 confidence), at most ``max_points``. Robust, but not differentiable and detached from the graph.
2. A differentiable weighted Gauss–Newton refinement in torch on the RANSAC inliers, starting from the detached
   RANSAC pose. The solved update depends on the points, so loss gradients w.r.t. the pose reach head 2 (the
   official adaptation does one such step). Weights = head-2 confidence (detached: the pose fit uses confidence,
   it should not train it).

Output convention: ``t_world_cam`` (F, 4, 4), camera-to-world (X_world = R·X_cam + t), see ``projection``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from st4rtrack_ros.geometry.projection import Z_MIN, invert_pose, pose_from_rt

PnPMethod = Literal["sqpnp", "epnp", "iterative"]
_CV_FLAGS = {"sqpnp": cv2.SOLVEPNP_SQPNP, "epnp": cv2.SOLVEPNP_EPNP, "iterative": cv2.SOLVEPNP_ITERATIVE}


@dataclass
class PoseConfig:
    """Knobs of :func:`estimate_poses`; defaults suit 512×288 pointmaps."""

    max_points: int = 2048  # PnP subset per frame (bounds the cost whatever the resolution)
    grid_oversample: int = 4  # strided grid holds ~grid_oversample·max_points pixels before the confidence top-k
    min_conf: float = 1.0  # pixels with confidence ≤ this never enter PnP (conf = 1 + exp(c) > 1)
    ransac_reproj_px: float = 3.0
    ransac_iters: int = 200
    ransac_confidence: float = 0.999
    method: PnPMethod = "sqpnp"
    min_inliers: int = 12
    refine_iters: int = 2  # differentiable Gauss–Newton steps (0: no gradient reaches head 2 through the pose)
    refine_damping: float = 1e-6  # Levenberg–Marquardt λ·diag(H): keeps the 6×6 solve regular
    refine_dtype: torch.dtype = torch.float64  # 6×6 normal equations in fp64: cheap and noise-free accurate
    seed: int = 0  # cv2 RNG seed: same input, same pose


@dataclass
class PoseEstimate:
    """Poses of a window: ``t_world_cam`` (F, 4, 4) differentiable w.r.t. the pointmap; diagnostics per frame."""

    t_world_cam: torch.Tensor
    success: torch.Tensor  # (F,) bool: RANSAC found ≥ min_inliers inliers; failed frames hold the identity
    num_inliers: torch.Tensor  # (F,) long
    num_points: torch.Tensor  # (F,) long: size of the PnP subset


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (…, 3, 3) from axis-angle vectors (…, 3); finite value and gradient at ω = 0."""
    theta2 = (omega * omega).sum(-1)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    wx, wy, wz = omega.unbind(-1)
    zero = torch.zeros_like(wx)
    hat = torch.stack((zero, -wz, wy, wz, zero, -wx, -wy, wx, zero), dim=-1).reshape(*omega.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(hat)
    return eye + a[..., None, None] * hat + b[..., None, None] * (hat @ hat)


def select_pnp_pixels(conf: torch.Tensor, pts: torch.Tensor, cfg: PoseConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded, confidence-selected pixel subset per frame → (flat indices (F, M), usable (F, M) bool).

    A strided grid first (spreads points over the image, which conditions PnP), then the top-``max_points`` by
    confidence. Non-finite points, z-less points and confidence ≤ ``min_conf`` are marked unusable.
    """
    nfr, height, width = conf.shape
    stride = max(1, math.floor(math.sqrt(height * width / max(1, cfg.grid_oversample * cfg.max_points))))
    vv, uu = torch.meshgrid(
        torch.arange(0, height, stride, device=conf.device), torch.arange(0, width, stride, device=conf.device),
        indexing="ij",
    )
    grid = (vv * width + uu).reshape(-1)  # (G,)
    c = conf.reshape(nfr, -1)[:, grid]
    p = pts.reshape(nfr, -1, 3)[:, grid]
    ok = torch.isfinite(p).all(-1) & torch.isfinite(c) & (c > cfg.min_conf)
    score = torch.where(ok, c, torch.full_like(c, -math.inf))
    m = min(cfg.max_points, grid.numel())
    top = torch.topk(score, m, dim=1)
    return grid[top.indices], torch.isfinite(top.values)


def _ransac(obj: np.ndarray, img: np.ndarray, k: np.ndarray, cfg: PoseConfig):
    """One frame's OpenCV PnP-RANSAC → (rvec, tvec, inlier indices) or None."""
    if obj.shape[0] < max(cfg.min_inliers, 6):
        return None
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, k, None,
            iterationsCount=cfg.ransac_iters, reprojectionError=cfg.ransac_reproj_px,
            confidence=cfg.ransac_confidence, flags=_CV_FLAGS[cfg.method],
        )
    except cv2.error:
        return None
    if not ok or inl is None or len(inl) < cfg.min_inliers or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
        return None
    return rvec.reshape(3), tvec.reshape(3), inl.reshape(-1)


def refine_pose_gn(
    pts_world: torch.Tensor,
    uv_obs: torch.Tensor,
    weights: torch.Tensor,
    r_cw: torch.Tensor,
    t_cw: torch.Tensor,
    k: torch.Tensor,
    iters: int,
    damping: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Gauss–Newton on the reprojection error, batched: world-to-camera (R, t) (F,3,3), (F,3).

    ``pts_world`` (F, M, 3) carries the gradient; ``uv_obs`` (F, M, 2) are the fixed pixels; ``weights`` (F, M) ≥ 0
    (0 = padding / outlier). Left perturbation R ← exp(ω)R, t ← exp(ω)t + δ. Points at or behind the camera in the
    current estimate get zero weight, so degenerate frames keep their start pose with finite gradients.
    """
    fx, fy = k[0, 0], k[1, 1]
    eye3 = torch.eye(3, dtype=pts_world.dtype, device=pts_world.device)
    for _ in range(iters):
        xc = pts_world @ r_cw.transpose(-1, -2) + t_cw[:, None, :]
        x, y, z = xc.unbind(-1)
        ok = z > Z_MIN
        w = torch.where(ok, weights, torch.zeros_like(weights))
        zs = torch.where(ok, z, torch.ones_like(z))
        u = fx * x / zs + k[0, 2]
        v = fy * y / zs + k[1, 2]
        res = torch.stack((u, v), -1) - uv_obs  # (F, M, 2)
        res = torch.where(ok[..., None], res, torch.zeros_like(res))
        zero = torch.zeros_like(z)
        j_pi = torch.stack(
            (fx / zs, zero, -fx * x / zs**2, zero, fy / zs, -fy * y / zs**2), -1
        ).reshape(*z.shape, 2, 3)
        hat = torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), -1).reshape(*z.shape, 3, 3)
        j_pose = torch.cat((-hat, eye3.expand(*z.shape, 3, 3)), dim=-1)  # (F, M, 3, 6)
        jac = j_pi @ j_pose  # (F, M, 2, 6)
        jw = jac * w[..., None, None]
        h = torch.einsum("fmai,fmaj->fij", jw, jac)
        g = torch.einsum("fmai,fma->fi", jw, res)
        diag = torch.diagonal(h, dim1=-2, dim2=-1)
        h = h + torch.diag_embed(damping * diag + 1e-9)
        delta = -torch.linalg.solve(h, g)
        rot = so3_exp(delta[:, :3])
        r_cw = rot @ r_cw
        t_cw = (rot @ t_cw[..., None])[..., 0] + delta[:, 3:]
    return r_cw, t_cw


def estimate_poses(
    recon_pts: torch.Tensor,
    recon_conf: torch.Tensor | None,
    k: torch.Tensor,
    cfg: PoseConfig | None = None,
) -> PoseEstimate:
    """Camera-to-world poses (F, 4, 4) of the frames of a window from head-2 pointmaps (F, H, W, 3).

    ``recon_conf`` (F, H, W) selects and weights pixels (None: uniform). ``k`` (3, 3) is the window's K in model
    pixels. Differentiable w.r.t. ``recon_pts`` through the Gauss–Newton refinement; frames where RANSAC fails get
    the identity and ``success = False``.
    """
    cfg = cfg or PoseConfig()
    nfr, height, width, _ = recon_pts.shape
    dev, out_dtype = recon_pts.device, recon_pts.dtype
    conf = recon_conf if recon_conf is not None else torch.full((nfr, height, width), 2.0, device=dev, dtype=out_dtype)
    with torch.no_grad():
        idx, usable = select_pnp_pixels(conf.detach(), recon_pts.detach(), cfg)  # (F, M)
    m = idx.shape[1]
    uv = torch.stack(((idx % width), (idx // width)), -1).to(cfg.refine_dtype)  # (F, M, 2)

    pts_sel = torch.gather(recon_pts.reshape(nfr, -1, 3), 1, idx[..., None].expand(-1, -1, 3))  # (F, M, 3)
    pts_sel = torch.where(usable[..., None], pts_sel, torch.zeros_like(pts_sel))  # no NaN into the refinement
    conf_sel = torch.gather(conf.reshape(nfr, -1), 1, idx).detach()

    pts_np = pts_sel.detach().double().cpu().numpy()
    uv_np = uv.double().cpu().numpy()
    usable_np = usable.cpu().numpy()
    k_np = k.detach().double().cpu().numpy()
    cv2.setRNGSeed(cfg.seed)
    r0 = np.tile(np.eye(3), (nfr, 1, 1))
    t0 = np.zeros((nfr, 3))
    inlier = np.zeros((nfr, m), dtype=bool)
    success = np.zeros(nfr, dtype=bool)
    for f in range(nfr):
        sel = np.flatnonzero(usable_np[f])
        res = _ransac(np.ascontiguousarray(pts_np[f, sel]), np.ascontiguousarray(uv_np[f, sel]), k_np, cfg)
        if res is None:
            continue
        rvec, tvec, inl = res
        r0[f] = cv2.Rodrigues(rvec)[0]
        t0[f] = tvec
        inlier[f, sel[inl]] = True
        success[f] = True

    rd = cfg.refine_dtype
    w = torch.from_numpy(inlier).to(dev, rd) * conf_sel.to(rd)
    n_inl = torch.from_numpy(inlier.sum(1, keepdims=True).clip(1)).to(dev, rd)
    w = w / (w.sum(1, keepdim=True) / n_inl).clamp_min(1e-12)  # mean inlier weight 1: damping is scale-free
    r_cw, t_cw = refine_pose_gn(
        pts_sel.to(rd), uv.to(dev), w, torch.from_numpy(r0).to(dev, rd), torch.from_numpy(t0).to(dev, rd),
        k.detach().to(dev, rd), cfg.refine_iters, cfg.refine_damping,
    )
    t_world_cam = invert_pose(pose_from_rt(r_cw, t_cw)).to(out_dtype)
    return PoseEstimate(
        t_world_cam=t_world_cam,
        success=torch.from_numpy(success).to(dev),
        num_inliers=torch.from_numpy(inlier.sum(1)).to(dev),
        num_points=usable.sum(1),
    )


def rotation_angle_deg(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Angle (degrees) of R_aᵀ R_b, batched; atan2 of the sine and cosine parts, accurate near 0 (arccos is not)."""
    rel = r_a.transpose(-1, -2) @ r_b
    cos = (torch.diagonal(rel, dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = rel - rel.transpose(-1, -2)
    sin = torch.stack((skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]), -1).norm(dim=-1) / 2.0
    return torch.rad2deg(torch.atan2(sin, cos))
