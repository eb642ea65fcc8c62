"""Deliberately wrong pseudo-labels for the robustness study (``st4rtrack-study``): never on a robot.

:class:`LabelCorruption` is an adaptation-worker label hook (``adaptation.worker.LabelTransform``): it replaces a
fraction of the 2D pseudo-tracks by random image positions that still look visible, and multiplies the depth labels
by log-normal noise with holes punched in them. Its random numbers come from the worker's seeded stream, so a cell
repeats exactly with the same ``adaptation.seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LabelCorruption:
    tracks: float = 0.0  # fraction of 2D pseudo-tracks replaced by wrong ones (uniform random image positions)
    depth_noise: float = 0.0  # σ of multiplicative log-normal noise on the depth labels
    depth_holes: float = 0.0  # fraction of depth-label pixels removed (set to 0 = no label)

    def __post_init__(self) -> None:
        if not (0.0 <= self.tracks <= 1.0 and 0.0 <= self.depth_holes <= 1.0 and self.depth_noise >= 0.0):
            raise ValueError("label corruption: tracks and depth_holes must lie in [0, 1], depth_noise ≥ 0")

    @property
    def active(self) -> bool:
        return bool(self.tracks or self.depth_noise or self.depth_holes)

    def __call__(self, uv: np.ndarray, depth: np.ndarray | None, hw: tuple[int, int], generator: torch.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """uv (F, N, 2) model pixels, frame 0 the queries (kept); depth (F, H, W) or None; hw = (H, W). One draw
        from ``generator`` seeds this call's numbers (none when nothing is corrupted); the inputs are not written."""
        if not self.active:
            return uv, depth
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        uv = uv.copy()
        n = uv.shape[1]
        bad = rng.permutation(n)[: round(self.tracks * n)]
        if len(bad):
            h, w = hw
            uv[1:, bad] = rng.uniform((0, 0), (w - 1, h - 1), size=(uv.shape[0] - 1, len(bad), 2))
        if depth is not None:
            depth = depth * np.exp(rng.normal(0.0, self.depth_noise, depth.shape)).astype(np.float32)
            depth[rng.random(depth.shape) < self.depth_holes] = 0.0
        return uv, depth
