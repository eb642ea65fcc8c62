"""Camera intrinsics for a window: focal from a pointmap (CameraInfo K goes through ``PixelMapping``).

Pixel convention used throughout ``geometry``: pixel (u, v) = (column, row), pixel centres at integer coordinates
(OpenCV). The principal point of an estimated K is ``(W/2, H/2)``, as in the official St4RTrack camera estimate, so
our focal matches theirs (tested against ``shared/golden/focal_cases.npz``).

The window's K is estimated once, from head 1 of the pair (I₁, I₁): that pointmap is the anchor's own depth map in
its own camera, so ``pixel − c = f · (x/z, y/z)`` holds for every pixel and the focal is a 1-D fit.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

FocalMethod = Literal["weiszfeld", "median"]

# Official focal bounds: a focal is kept within [0.5, 3.5] × the focal of a 60° field of view on the long side.
MIN_FOCAL_FACTOR = 0.5
MAX_FOCAL_FACTOR = 3.5


def pixel_grid(height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """(H, W, 2) grid of pixel coordinates (u, v); integer pixel centres."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype), torch.arange(width, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack((u, v), dim=-1)


def image_center(height: int, width: int) -> tuple[float, float]:
    """Principal point of an estimated K: (W/2, H/2), the official convention."""
    return width / 2.0, height / 2.0


def base_focal(height: int, width: int) -> float:
    """Focal of a 60° field of view along the long side; the unit of the focal clamp."""
    return max(height, width) / (2.0 * math.tan(math.radians(60.0) / 2.0))


def focal_from_pointmap(
    pts: torch.Tensor,
    method: FocalMethod = "weiszfeld",
    iters: int = 10,
    valid: torch.Tensor | None = None,
    clamp: bool = True,
) -> torch.Tensor:
    """Focal (B,) of a pointmap (B, H, W, 3) in its own camera, principal point at the image centre.

    ``weiszfeld``: least-squares start, then ``iters`` IRLS steps with weights 1/‖p − f·q‖ (the L1 / geometric
    median fit: robust to a minority of wrong points). ``median``: median of the per-pixel votes p/q over u and v.
    Points with z ≤ 0, non-finite points and pixels outside ``valid`` (B, H, W) do not vote.
    """
    if pts.dim() == 3:
        pts = pts.unsqueeze(0)
    bsz, height, width, _ = pts.shape
    cx, cy = image_center(height, width)
    px = pixel_grid(height, width, pts.device, pts.dtype) - pts.new_tensor([cx, cy])  # (H, W, 2)
    px = px.reshape(1, -1, 2).expand(bsz, -1, -1)
    pts = pts.reshape(bsz, -1, 3)
    z = pts[..., 2:3]
    ok = torch.isfinite(pts).all(-1) & (z[..., 0] > 0)
    if valid is not None:
        ok = ok & valid.reshape(bsz, -1).bool()
    z_safe = torch.where(ok.unsqueeze(-1), z, torch.ones_like(z))
    q = torch.where(ok.unsqueeze(-1), pts[..., :2] / z_safe, torch.zeros_like(pts[..., :2]))  # (B, N, 2)

    if method == "median":
        votes = px / torch.where(q.abs() > 0, q, torch.ones_like(q))
        votes = torch.where(ok.unsqueeze(-1) & (q.abs() > 0), votes, torch.full_like(votes, float("nan")))
        focal = torch.nanmedian(votes.reshape(bsz, -1), dim=1).values
        focal = torch.nan_to_num(focal, nan=base_focal(height, width))
    elif method == "weiszfeld":
        w = ok.to(pts.dtype)
        pq = (px * q).sum(-1)
        qq = (q * q).sum(-1)
        focal = (w * pq).sum(1) / (w * qq).sum(1).clamp_min(1e-12)
        for _ in range(iters):
            dist = (px - focal[:, None, None] * q).norm(dim=-1)
            wi = w / dist.clamp_min(1e-8)
            focal = (wi * pq).sum(1) / (wi * qq).sum(1).clamp_min(1e-12)
    else:
        raise ValueError(f"unknown focal method {method!r}")
    if clamp:
        fb = base_focal(height, width)
        focal = focal.clamp(MIN_FOCAL_FACTOR * fb, MAX_FOCAL_FACTOR * fb)
    return focal


def intrinsics_from_focal(focal: torch.Tensor | float, height: int, width: int) -> torch.Tensor:
    """K (…, 3, 3) with fx = fy = focal and the principal point at (W/2, H/2)."""
    focal = torch.as_tensor(focal, dtype=torch.float32) if not torch.is_tensor(focal) else focal
    cx, cy = image_center(height, width)
    k = torch.zeros((*focal.shape, 3, 3), dtype=focal.dtype, device=focal.device)
    k[..., 0, 0] = focal
    k[..., 1, 1] = focal
    k[..., 0, 2] = cx
    k[..., 1, 2] = cy
    k[..., 2, 2] = 1.0
    return k


def intrinsics_from_pointmap(pts: torch.Tensor, method: FocalMethod = "weiszfeld", iters: int = 10) -> torch.Tensor:
    """The window's K (3, 3) from head 1 of the pair (I₁, I₁), given as (H, W, 3) or (1, H, W, 3).

    Detached: K is a fixed camera model for the window, not something the losses should move.
    """
    if pts.dim() == 4:
        pts = pts[0]
    height, width = pts.shape[:2]
    focal = focal_from_pointmap(pts.detach()[None], method=method, iters=iters)[0]
    return intrinsics_from_focal(focal, height, width)
