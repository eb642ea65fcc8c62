"""Occlusion / visibility mask of tracked points by a depth test against the reconstruction (St4RTrack+ §1).

A tracked point ¹Xⱼ¹ (head 1) is visible in frame j when nothing in frame j's reconstruction ¹Xʲⱼ (head 2) lies in
front of it along its pixel ray: m = 1[z_trk ≤ z_rec(x̂) + τ]. Points behind the camera, outside the image, or whose
pixel has no valid reconstruction depth are not visible. The mask is a hard decision computed without gradient:
it selects which residuals count, and the network must not learn to flip it to escape a loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from st4rtrack_ros.geometry.projection import Z_MIN, project, world_to_camera
from st4rtrack_ros.geometry.sampling import SampleMode, in_image, sample_map

TauMode = Literal["relative", "absolute"]


@dataclass
class Reprojection:
    """Tracked points seen from camera j: pixels (F, N, 2) and depth z_trk (F, N); differentiable."""

    uv: torch.Tensor
    z: torch.Tensor


def reproject_tracks(track_world: torch.Tensor, t_world_cam: torch.Tensor, k: torch.Tensor) -> Reprojection:
    """x̂ = π(K · X_cam) and z_trk for tracked world points (F, N, 3) under camera-to-world poses (F, 4, 4)."""
    uv, z = project(world_to_camera(track_world, t_world_cam), k)
    return Reprojection(uv=uv, z=z)


def recon_depth(recon_pts: torch.Tensor, t_world_cam: torch.Tensor) -> torch.Tensor:
    """z_rec: depth map (F, H, W) of each frame's reconstruction (F, H, W, 3) in its own camera.

    Only the z row of the world-to-camera transform: z = r₃ᵀ(X − t), r₃ the camera's optical axis in world.
    """
    axis = t_world_cam[:, :3, 2]  # third column of R_world_cam
    origin = t_world_cam[:, :3, 3]
    nfr = recon_pts.shape[0]
    flat = recon_pts.reshape(nfr, -1, 3)
    z = (flat @ axis[:, :, None])[..., 0] - (origin * axis).sum(-1, keepdim=True)
    return z.reshape(recon_pts.shape[:-1])


def occlusion_mask(
    z_trk: torch.Tensor,
    uv: torch.Tensor,
    z_rec: torch.Tensor,
    tau: float = 0.05,
    tau_mode: TauMode = "relative",
    sample_mode: SampleMode = "nearest",
    pseudo_visibility: torch.Tensor | None = None,
) -> torch.Tensor:
    """Visibility mask (F, N) bool: z_trk ≤ z_rec(x̂) + τ, in front of the camera, inside the image.

    ``tau_mode='relative'``: τ = tau · z_rec(x̂) (depth noise grows with depth); ``'absolute'``: τ = tau in pointmap
    units. ``sample_mode='nearest'`` reads the z-buffer at the rounded pixel (no blending across occlusion edges).
    ``pseudo_visibility`` (F, N) is AND-ed in when given.
    """
    with torch.no_grad():
        height, width = z_rec.shape[-2:]
        zr = sample_map(z_rec.detach(), uv.detach(), mode=sample_mode)
        thr = tau * zr if tau_mode == "relative" else torch.full_like(zr, tau)
        zt = z_trk.detach()
        m = in_image(uv.detach(), height, width) & (zt > Z_MIN) & (zr > Z_MIN) & torch.isfinite(zr) & torch.isfinite(zt)
        m = m & (zt <= zr + thr)
        if pseudo_visibility is not None:
            m = m & pseudo_visibility.bool()
    return m
