"""Exact St4RTrack targets of a synthetic scene: for an (anchor a, frame j) pair, the tracking pointmap ¹X_j¹
(where each anchor pixel's surface point is at time j) and the reconstruction pointmap ¹X_jʲ (what frame j sees),
both in the anchor camera's frame (OpenCV axes, metres).

These are the supervised-pretraining labels, and an oracle for testing everything downstream of the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from st4rtrack_ros.data.render import intersect, pixel_rays
from st4rtrack_ros.data.scene import Scene
from st4rtrack_ros.data.tracks import track_positions


@dataclass
class PairTargets:
    track_pts: np.ndarray  # (F, H, W, 3) float32, anchor camera frame
    recon_pts: np.ndarray  # (F, H, W, 3) float32, anchor camera frame
    track_valid: np.ndarray  # (H, W) bool: the anchor pixel sees a surface
    recon_valid: np.ndarray  # (F, H, W) bool: frame j's pixel sees a surface
    dynamic: np.ndarray  # (H, W) bool: the anchor pixel is on a moving object


def _to_anchor(points_world: np.ndarray, anchor_pose: np.ndarray) -> np.ndarray:
    return (points_world - anchor_pose[:3, 3]) @ anchor_pose[:3, :3]


def pair_targets(scene: Scene, k: np.ndarray, width: int, height: int, anchor: int, frames: list[int]
                 ) -> PairTargets:
    """Targets of the pairs (anchor, j) for j in ``frames`` at ``width``×``height`` with intrinsics ``k``."""
    rays = pixel_rays(k, width, height)
    a_pose = scene.camera_pose(anchor)
    hits = intersect(scene, anchor, a_pose[:3, 3], rays @ a_pose[:3, :3].T)
    valid = hits.prim >= 0
    prim = np.maximum(hits.prim, 0)
    moved = track_positions(scene, prim, hits.local)  # (T, HW, 3) world positions over time
    n = len(frames)
    track = np.zeros((n, height * width, 3), np.float32)
    recon = np.zeros((n, height * width, 3), np.float32)
    recon_valid = np.zeros((n, height * width), bool)
    for i, j in enumerate(frames):
        track[i] = _to_anchor(moved[j], a_pose)
        pose = scene.camera_pose(j)
        hj = intersect(scene, j, pose[:3, 3], rays @ pose[:3, :3].T)
        ok = np.isfinite(hj.t) & (hj.prim >= 0)
        cam = rays * np.where(ok, hj.t, 0.0)[:, None]
        recon[i] = _to_anchor(cam @ pose[:3, :3].T + pose[:3, 3], a_pose)
        recon_valid[i] = ok
    track[:, ~valid] = 0.0
    return PairTargets(
        track_pts=track.reshape(n, height, width, 3), recon_pts=recon.reshape(n, height, width, 3),
        track_valid=valid.reshape(height, width), recon_valid=recon_valid.reshape(n, height, width),
        dynamic=(valid & scene.dynamic_mask[prim]).reshape(height, width),
    )
