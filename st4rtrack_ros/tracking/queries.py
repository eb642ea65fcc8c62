"""Where to start tracks on an anchor: a regular grid, or corners (OpenCV Shi–Tomasi) topped up by the grid."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

QueryMode = Literal["grid", "corners"]


def grid_queries(width: int, height: int, count: int, margin: int = 4) -> np.ndarray:
    """About ``count`` pixel positions (N, 2) on a regular grid with the image's aspect ratio."""
    aspect = width / height
    rows = max(1, round(np.sqrt(count / aspect)))
    cols = max(1, round(count / rows))
    u = np.linspace(margin, width - 1 - margin, cols)
    v = np.linspace(margin, height - 1 - margin, rows)
    uu, vv = np.meshgrid(u, v)
    return np.stack((uu.ravel(), vv.ravel()), axis=-1)


def corner_queries(rgb: np.ndarray, count: int, margin: int = 4) -> np.ndarray:
    """Up to ``count`` well-textured pixels (good features to track), filled up with grid points if too few."""
    h, w = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mask = np.zeros_like(gray)
    mask[margin:h - margin, margin:w - margin] = 255
    min_dist = max(2.0, 0.5 * np.sqrt(h * w / max(count, 1)))
    pts = cv2.goodFeaturesToTrack(gray, maxCorners=count, qualityLevel=0.01, minDistance=min_dist, mask=mask)
    found = np.zeros((0, 2)) if pts is None else pts.reshape(-1, 2).astype(np.float64)
    if len(found) < count:
        grid = grid_queries(w, h, count - len(found), margin)
        found = np.concatenate((found, grid[: count - len(found)]))
    return found


def select_queries(rgb: np.ndarray, count: int, mode: QueryMode = "grid") -> np.ndarray:
    h, w = rgb.shape[:2]
    if mode == "corners":
        return corner_queries(rgb, count)
    if mode == "grid":
        return grid_queries(w, h, count)
    raise ValueError(f"query mode must be 'grid' or 'corners', got {mode!r}")
