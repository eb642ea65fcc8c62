"""Plain data passed into and out of the online tracker (no torch, no ROS): what the node publishes from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Smallest camera image side (pixels) the tracker accepts: the model needs at least one 16-px patch.
MIN_SIDE = 16


@dataclass
class FrameInput:
    """One camera frame as the tracker consumes it."""

    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8
    k: np.ndarray | None = None  # (3, 3) camera intrinsics in camera pixels (CameraInfo), optional
    depth: np.ndarray | None = None  # (H, W) float32 metres aligned with rgb (RGB-D), 0 = invalid, optional


@dataclass
class TrackSet:
    """The living tracks after a frame, one row each (world frame)."""

    ids: np.ndarray  # (N,) int64, persistent across re-anchoring
    positions: np.ndarray  # (N, 3) float32 world
    visible: np.ndarray  # (N,) bool: passes the occlusion depth test in the current frame
    confidence: np.ndarray  # (N,) float32 head-1 confidence at the query pixel
    sigma2: np.ndarray  # (N,) float32 per-point uncertainty σ² (model/uncertainty.py)
    dynamic: np.ndarray  # (N,) bool: moved more than the dynamic threshold since birth
    age: np.ndarray  # (N,) int64 frames since birth
    history: np.ndarray  # (N, L, 3) float32 recent world positions, oldest first, NaN-padded at the front

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class StepResult:
    """Everything one frame produced, in the world frame (REP 103 axes are applied by the ROS adapter)."""

    stamp_ns: int
    frame_index: int
    pose_world_cam: np.ndarray  # (4, 4) camera (OpenCV optical axes) → world
    pose_ok: bool
    k_model: np.ndarray  # (3, 3) intrinsics of the model image
    depth: np.ndarray  # (h, w) float32 depth of this frame's reconstruction in its camera, world units
    points: np.ndarray  # (M, 3) float32 world, confidence-filtered reconstruction of this frame
    colors: np.ndarray  # (M, 3) uint8
    point_confidence: np.ndarray  # (M,) float32
    tracks: TrackSet
    map_points: np.ndarray | None  # (P, 3) accumulated map when updated on this frame, else None
    map_colors: np.ndarray | None
    reanchored: bool
    anchor_index: int
    metric_scale: bool  # world units are metres (depth or configured scale), else model units
    weights_version: int
    timings_ms: dict[str, float]


class FrameDropped(RuntimeError):
    """``OnlineTracker.step`` gave up on this frame (out of memory) and freed its caches; the next frame works.

    Not a ValueError: the input was fine, so callers count it apart from rejected input.
    """


class BadInput(ValueError):
    """Input (or a network output) that cannot be used; ``cause`` is a short stable key such as ``step_mismatch``.

    Why a key: the node counts faults per cause in /diagnostics and rate-limits its log per cause, so the key must
    not change with the values in the message (those go into the message itself).
    """

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
