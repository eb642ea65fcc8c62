"""Persistent 3D tracks: a table of rows (one per query pixel of the current anchor) with ids that survive
re-anchoring, a bounded position history, and ending after a run of invisible frames. All updates are vectorised
over rows."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from st4rtrack_ros.tracking.types import TrackSet


class TrackTable:
    def __init__(self, history_len: int = 30, max_unseen: int = 10, dynamic_threshold: float = 0.05) -> None:
        self.history_len = history_len
        self.max_unseen = max_unseen
        self.dynamic_threshold = dynamic_threshold
        self._next_id = 0
        self._ptr = 0  # global history write position (all rows advance together)
        self._empty()

    def _empty(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.query_uv = np.zeros((0, 2))  # model pixels on the current anchor
        self.birth_frame = np.zeros(0, np.int64)
        self.birth_pos = np.zeros((0, 3))
        self.unseen = np.zeros(0, np.int64)
        self.positions = np.zeros((0, 3))
        self.visible = np.zeros(0, bool)
        self.confidence = np.zeros(0)
        self.sigma2 = np.zeros(0)
        self.hist = np.full((0, self.history_len, 3), np.nan)

    def __len__(self) -> int:
        return len(self.ids)

    def reset(self) -> None:
        self._empty()

    # -- a new anchor ----------------------------------------------------------------------------------------------

    def restart(self, query_uv: np.ndarray, world: np.ndarray, frame: int, inherit: np.ndarray | None = None) -> None:
        """New rows for the new anchor's queries; ``inherit[i]`` = old row continued by new row i, or -1."""
        n = len(query_uv)
        inherit = np.full(n, -1) if inherit is None else np.asarray(inherit)
        old = inherit >= 0
        ids = np.empty(n, np.int64)
        ids[old] = self.ids[inherit[old]]
        ids[~old] = np.arange(self._next_id, self._next_id + int((~old).sum()))
        self._next_id += int((~old).sum())
        birth_frame = np.full(n, frame, np.int64)
        birth_frame[old] = self.birth_frame[inherit[old]]
        birth_pos = np.array(world, dtype=np.float64, copy=True)
        birth_pos[old] = self.birth_pos[inherit[old]]
        hist = np.full((n, self.history_len, 3), np.nan)
        hist[old] = self.hist[inherit[old]]
        self.ids, self.query_uv, self.hist = ids, np.asarray(query_uv, dtype=np.float64), hist
        self.birth_frame, self.birth_pos = birth_frame, birth_pos
        self.unseen = np.zeros(n, np.int64)
        self.positions = np.asarray(world, dtype=np.float64)
        self.visible = np.ones(n, bool)
        self.confidence = np.ones(n)
        self.sigma2 = np.ones(n)

    # -- every frame -----------------------------------------------------------------------------------------------

    def update(self, world: np.ndarray, visible: np.ndarray, confidence: np.ndarray, sigma2: np.ndarray) -> None:
        """Record this frame's positions; rows invisible for more than ``max_unseen`` frames end."""
        self.positions = np.asarray(world, dtype=np.float64)
        self.visible = np.asarray(visible, bool)
        self.confidence = np.asarray(confidence, dtype=np.float64)
        self.sigma2 = np.asarray(sigma2, dtype=np.float64)
        self.unseen = np.where(self.visible, 0, self.unseen + 1)
        self.hist[:, self._ptr % self.history_len] = self.positions
        self._ptr += 1
        alive = self.unseen <= self.max_unseen
        if not alive.all():
            self._keep(alive)

    def _keep(self, rows: np.ndarray) -> None:
        for name in ("ids", "query_uv", "birth_frame", "birth_pos", "unseen", "positions", "visible", "confidence",
                     "sigma2", "hist"):
            setattr(self, name, getattr(self, name)[rows])

    def snapshot(self, frame: int) -> TrackSet:
        order = (self._ptr + np.arange(self.history_len)) % self.history_len  # oldest → newest
        moved = np.linalg.norm(self.positions - self.birth_pos, axis=1) if len(self) else np.zeros(0)
        return TrackSet(
            ids=self.ids.copy(), positions=self.positions.astype(np.float32), visible=self.visible.copy(),
            confidence=self.confidence.astype(np.float32), sigma2=self.sigma2.astype(np.float32),
            dynamic=moved > self.dynamic_threshold, age=frame - self.birth_frame,
            history=self.hist[:, order].astype(np.float32),
        )


def fill_queries(kept_uv: np.ndarray, candidates: np.ndarray, count: int, min_spacing: float) -> np.ndarray:
    """Candidates (M, 2) farther than ``min_spacing`` from every kept query, at most ``count - len(kept)``."""
    room = max(0, count - len(kept_uv))
    if room == 0 or not len(candidates):
        return np.zeros((0, 2))
    if len(kept_uv):
        dist, _ = cKDTree(kept_uv).query(candidates, k=1)
        candidates = candidates[dist > min_spacing]
    return candidates[:room]
