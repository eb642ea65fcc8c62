"""2D rotary position embedding with tables precomputed per token grid.

Half of each head's channels rotate with the token's row, the other half with its column; within each half the
channel pairs are (i, i + D/4), rotated by angle ``pos · freq**(-4i/D)``. The tables depend only on the grid size,
head dim and device, so they are built once on the host side of the code path (Python ints, never tensor values):
the forward pass does no host synchronisation.
"""

from __future__ import annotations

import torch

_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def rope_tables(
    grid_hw: tuple[int, int], head_dim: int, base: float, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (N, head_dim) float32, for the row-major token grid ``grid_hw``; cached."""
    key = (int(grid_hw[0]), int(grid_hw[1]), int(head_dim), float(base), str(device))
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    rows, cols = key[0], key[1]
    axis_dim = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, axis_dim, 2, dtype=torch.float32) / axis_dim))
    positions = torch.arange(max(rows, cols), dtype=torch.float32)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # (P, axis_dim)
    row_idx = torch.arange(rows).repeat_interleave(cols)
    col_idx = torch.arange(cols).repeat(rows)
    full = torch.cat((angles[row_idx], angles[col_idx]), dim=-1)  # (N, head_dim)
    tables = (full.cos().to(device), full.sin().to(device))
    _TABLES[key] = tables
    return tables


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, N, D) by the tables (N, D); each of the two D/2 halves is rotated on its own."""
    quarter = x.shape[-1] // 4
    a, b, c, d = x.split(quarter, dim=-1)
    rotated = torch.cat((-b, a, -d, c), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
