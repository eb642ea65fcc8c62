"""The accumulated reconstruction: coloured points in the world frame, voxel down-sampled with Open3D and bounded
by a point budget and a radius around the camera, so memory stays flat however long the robot runs."""

from __future__ import annotations

import numpy as np
import open3d as o3d


class MapAccumulator:
    def __init__(self, voxel: float = 0.02, max_points: int = 200_000, radius: float = 10.0, seed: int = 0) -> None:
        if voxel <= 0 or max_points <= 0 or radius <= 0:
            raise ValueError("voxel, max_points and radius must be positive")
        self.voxel, self.max_points, self.radius = voxel, max_points, radius
        self._rng = np.random.default_rng(seed)
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)

    def reset(self) -> None:
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)

    def add(self, points: np.ndarray, colors: np.ndarray, camera_position: np.ndarray) -> None:
        """Merge new world points (N, 3) with colours (N, 3) uint8; one point per voxel (colours averaged)."""
        pts = np.concatenate((self.points, np.asarray(points, np.float32)))
        cols = np.concatenate((self.colors, np.asarray(colors, np.uint8)))
        near = np.linalg.norm(pts - np.asarray(camera_position, np.float32), axis=1) <= self.radius
        pts, cols = pts[near], cols[near]
        cloud = o3d.geometry.PointCloud()
        cloud.points = o3d.utility.Vector3dVector(pts.astype(np.float64))
        cloud.colors = o3d.utility.Vector3dVector(cols.astype(np.float64) / 255.0)
        down = cloud.voxel_down_sample(self.voxel)
        pts = np.asarray(down.points, dtype=np.float32)
        cols = (np.asarray(down.colors) * 255.0 + 0.5).astype(np.uint8)
        if len(pts) > self.max_points:
            keep = self._rng.choice(len(pts), self.max_points, replace=False)
            pts, cols = pts[keep], cols[keep]
        self.points, self.colors = pts, cols
