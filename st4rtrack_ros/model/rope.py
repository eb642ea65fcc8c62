"""2D rotary position embedding with tables precomputed per token grid.

Half of each head's channels rotate with the token's row, the other half with its column; within each half the
channel pairs are (i, i + D/4), rotated by angle ``pos · freq**(-4i/D)``. The tables depend only on the grid size,
head dim, device and dtype, so they are built once on the host side of the code path (Python ints, never tensor
values): the forward pass does no host synchronisation.

The rotation is written as ``x·cos + x[perm]·sin±`` (a channel gather and one fused multiply-add, with the signs
of the rotation folded into the sine table), which costs three kernels per call instead of the eight of a
split/negate/concatenate formulation — it matters at batch 1, where the step is launch-bound.
"""

from __future__ import annotations

import torch

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

Rope = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def rope_tables(
    grid_hw: tuple[int, int], head_dim: int, base: float, device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Rope:
    """(cos, signed sin, channel permutation) for the row-major token grid ``grid_hw``; cached.

    cos and sin are (N, head_dim) in ``dtype`` (computed in float32 first).
    """
    key = (int(grid_hw[0]), int(grid_hw[1]), int(head_dim), float(base), str(device), dtype)
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    with torch.inference_mode(False):  # cached across calls: must also serve autograd (training, adaptation)
        tables = _build(key[0], key[1], head_dim, base, device, dtype)
    _TABLES[key] = tables
    return tables


def _build(rows: int, cols: int, head_dim: int, base: float, device: torch.device | str, dtype: torch.dtype) -> Rope:
    axis_dim = head_dim // 2
    quarter = head_dim // 4
    inv_freq = 1.0 / (base ** (torch.arange(0, axis_dim, 2, dtype=torch.float32) / axis_dim))
    positions = torch.arange(max(rows, cols), dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # (P, axis_dim)
    row_idx = torch.arange(rows).repeat_interleave(cols)
    col_idx = torch.arange(cols).repeat(rows)
    full = torch.cat((angles[row_idx], angles[col_idx]), dim=-1)  # (N, head_dim)
    # rotate_half within each axis half: [a, b] → [-b, a]; as a gather plus a sign on the sine.
    q = torch.arange(quarter)
    perm = torch.cat((q + quarter, q, q + 3 * quarter, q + 2 * quarter))
    sign = torch.cat((-torch.ones(quarter), torch.ones(quarter), -torch.ones(quarter), torch.ones(quarter)))
    return full.cos().to(device, dtype), (full.sin() * sign).to(device, dtype), perm.to(device)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate x (..., N, D) by the tables of ``rope_tables``."""
    cos, sin, perm = rope
    return torch.addcmul(x * cos, x.index_select(-1, perm), sin)
