"""Reading per-pixel maps at continuous pixel positions, batched over frames.

Both losses and the occlusion test read a map (pointmap, depth, confidence) of frame j at N pixel positions of that
frame. Bilinear reads are differentiable in the map (and the positions); nearest reads are what a z-buffer test
wants, because bilinear depth across an occlusion edge invents a surface that is in neither layer.
"""

from __future__ import annotations

from typing import Literal

import torch

SampleMode = Literal["bilinear", "nearest"]


def sample_map(maps: torch.Tensor, uv: torch.Tensor, mode: SampleMode = "bilinear") -> torch.Tensor:
    """Read ``maps`` (F, H, W, C) or (F, H, W) at pixel positions ``uv`` (F, N, 2) → (F, N, C) or (F, N).

    Integer pixel centres; positions outside the image read the border (callers mask them). Non-finite positions
    read pixel (0, 0) — also masked by callers — so no NaN leaks into values or gradients.
    """
    squeeze = maps.dim() == 3
    if squeeze:
        maps = maps.unsqueeze(-1)
    nfr, height, width, ch = maps.shape
    uv = torch.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "nearest":
        u = uv[..., 0].round().clamp(0, width - 1).long()
        v = uv[..., 1].round().clamp(0, height - 1).long()
        idx = (v * width + u).unsqueeze(-1).expand(-1, -1, ch)  # (F, N, C)
        out = torch.gather(maps.reshape(nfr, height * width, ch), 1, idx)
    elif mode == "bilinear":
        # explicit 4-tap gather rather than grid_sample: exact at pixel centres (no normalisation round-off leaking
        # tiny weights to neighbours) and the same code on every device
        u = uv[..., 0].clamp(0, width - 1)
        v = uv[..., 1].clamp(0, height - 1)
        u0 = u.detach().floor().clamp(0, max(width - 2, 0))
        v0 = v.detach().floor().clamp(0, max(height - 2, 0))
        fu = (u - u0).unsqueeze(-1).to(maps.dtype)
        fv = (v - v0).unsqueeze(-1).to(maps.dtype)
        u0, v0 = u0.long(), v0.long()
        u1 = (u0 + 1).clamp(max=width - 1)
        v1 = (v0 + 1).clamp(max=height - 1)
        flat = maps.reshape(nfr, height * width, ch)

        def tap(vi: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
            return torch.gather(flat, 1, (vi * width + ui).unsqueeze(-1).expand(-1, -1, ch))

        out = (1 - fv) * ((1 - fu) * tap(v0, u0) + fu * tap(v0, u1)) + fv * ((1 - fu) * tap(v1, u0) + fu * tap(v1, u1))
    else:
        raise ValueError(f"unknown sample mode {mode!r}")
    return out[..., 0] if squeeze else out


def in_image(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whether positions (…, 2) fall on a pixel: u ∈ [−0.5, W − 0.5), v ∈ [−0.5, H − 0.5), finite."""
    u, v = uv[..., 0], uv[..., 1]
    return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5) & torch.isfinite(uv).all(-1)
