"""Rigid transforms and pinhole projection, batched over the frames of a window.

Pose convention: ``T_world_cam`` (…, 4, 4) is camera-to-world, X_world = R·X_cam + t. The world frame is the anchor
camera (frame 1 of the window). The seed's x̂ = π(K(R⁻¹X + T)) is the same map written with world-to-camera
(R⁻¹, T); here it is ``project(world_to_camera(X, T_world_cam), K)``.
"""

from __future__ import annotations

import torch

# Points closer than this (in pointmap units) to the camera plane are "behind the camera": not projected.
Z_MIN = 1e-6


def invert_pose(t_a_b: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms (…, 4, 4) using Rᵀ rather than a general matrix inverse."""
    r = t_a_b[..., :3, :3]
    t = t_a_b[..., :3, 3:]
    out = torch.zeros_like(t_a_b)
    rt = r.transpose(-1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3:] = -rt @ t
    out[..., 3, 3] = 1.0
    return out


def pose_from_rt(r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Stack R (…, 3, 3) and t (…, 3) into (…, 4, 4)."""
    out = torch.zeros((*r.shape[:-2], 4, 4), dtype=r.dtype, device=r.device)
    out[..., :3, :3] = r
    out[..., :3, 3] = t
    out[..., 3, 3] = 1.0
    return out


def transform_points(t_a_b: torch.Tensor, pts_b: torch.Tensor) -> torch.Tensor:
    """Map points (F, …, 3) in frame b to frame a with per-frame transforms (F, 4, 4)."""
    nfr = pts_b.shape[0]
    flat = pts_b.reshape(nfr, -1, 3)
    out = flat @ t_a_b[:, :3, :3].transpose(-1, -2) + t_a_b[:, None, :3, 3]
    return out.reshape(pts_b.shape)


def world_to_camera(pts_world: torch.Tensor, t_world_cam: torch.Tensor) -> torch.Tensor:
    """Points (F, …, 3) in world coordinates → camera j coordinates, given camera-to-world poses (F, 4, 4)."""
    return transform_points(invert_pose(t_world_cam), pts_world)


def project(pts_cam: torch.Tensor, k: torch.Tensor, z_min: float = Z_MIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of camera-frame points (…, 3) with K (3, 3) → (pixels (…, 2), depth (…)).

    The division uses max(z, z_min), so points at or behind the camera give finite (meaningless) pixels and finite
    gradients; callers exclude them with ``depth > z_min``.
    """
    z = pts_cam[..., 2]
    zs = z.clamp_min(z_min)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    u = fx * pts_cam[..., 0] / zs + cx
    v = fy * pts_cam[..., 1] / zs + cy
    return torch.stack((u, v), dim=-1), z


def unproject_depth(depth: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Depth maps (F, H, W) → camera-frame pointmaps (F, H, W, 3); the inverse of :func:`project` on the grid."""
    _, height, width = depth.shape
    v, u = torch.meshgrid(
        torch.arange(height, dtype=depth.dtype, device=depth.device),
        torch.arange(width, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    x = (u - k[0, 2]) / k[0, 0]
    y = (v - k[1, 2]) / k[1, 1]
    return torch.stack((x * depth, y * depth, depth), dim=-1)
