"""Track markers for RViz (visualization_msgs/MarkerArray, NumPy only; no rclpy here): which tracks to draw, their
colours (by id or by state) and trails (:func:`plan_markers`), and the message objects of one frame
(:func:`build_markers`; the serialised form is :func:`st4rtrack_ros.ros.cdr.marker_array_cdr`). Positions are
already REP 103 (see :mod:`~st4rtrack_ros.ros.conversions`); message classes are passed in, so tests need no ROS
install.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# visualization_msgs/Marker constants (the values are fixed by the message definition).
LINE_STRIP, SPHERE_LIST = 4, 7
ADD, DELETEALL = 0, 3


def color_for_id(track_id: int) -> tuple[float, float, float]:
    """A stable, well-spread colour per track id (golden-ratio hue steps)."""
    h = (int(track_id) * 0.6180339887498949) % 1.0
    return colorsys.hsv_to_rgb(h, 0.85, 0.95)


#: Colours of the "state" scheme: visible static, visible dynamic, occluded.
STATE_COLORS = {"static": (0.1, 0.8, 0.2), "dynamic": (1.0, 0.45, 0.0), "occluded": (0.55, 0.55, 0.55)}
OCCLUDED_ALPHA, VISIBLE_ALPHA = 0.35, 1.0


def track_color(track_id: int, visible: bool, dynamic: bool, scheme: str) -> tuple[float, float, float, float]:
    """RGBA of one track: by id or by state; occluded tracks are grey-ish and translucent in both schemes."""
    if scheme == "state":
        rgb = STATE_COLORS["occluded" if not visible else "dynamic" if dynamic else "static"]
    else:
        rgb = color_for_id(track_id)
        if not visible:
            rgb = tuple(0.5 * c + 0.25 for c in rgb)  # washed out towards grey
    return (*rgb, VISIBLE_ALPHA if visible else OCCLUDED_ALPHA)


def select_tracks(confidence: np.ndarray, visible: np.ndarray, cap: int) -> np.ndarray:
    """Row indices of the tracks to draw (at most ``cap``): visible first, then by confidence; in id order."""
    n = len(confidence)
    if cap >= n:
        return np.arange(n)
    order = np.lexsort((-np.asarray(confidence, np.float64), ~np.asarray(visible, bool)))
    return np.sort(order[:max(cap, 0)])


def marker_id(track_id: int) -> int:
    """Marker ids are int32: the track id folded into 0..2³¹-1 (unique for any realistic run)."""
    return int(track_id) % (2**31 - 1)


@dataclass
class MarkerPlan:
    """What one frame's markers draw (REP 103 world): the heads (one SPHERE_LIST) and one LINE_STRIP per track with
    two or more finite points. Shared by the message-object and the CDR builders."""

    head_points: np.ndarray  # (H, 3) float64
    head_colors: np.ndarray  # (H, 4) float32 RGBA
    strip_ids: list[int]  # marker ids (folded track ids)
    strip_colors: np.ndarray  # (S, 4) float32 RGBA
    strip_widths: np.ndarray  # (S,) float64 line width
    strips: list[np.ndarray]  # S × (L_i, 3) float64, L_i ≥ 2
    scale: float  # head sphere diameter / 2.5


def plan_markers(ids: np.ndarray, positions: np.ndarray, history: np.ndarray, visible: np.ndarray,
                 dynamic: np.ndarray, confidence: np.ndarray, *, cap: int, trail: int, scheme: str,
                 scale: float) -> MarkerPlan:
    """Select the tracks to draw (``select_tracks``), their colours and their trails (the last ``trail - 1`` finite
    history points + the head); tracks with a non-finite head are not drawn. Positions/history are REP 103."""
    rows = select_tracks(confidence, visible, cap)
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    rows = rows[np.isfinite(positions[rows]).all(1)] if len(rows) else rows
    colors = np.array([track_color(int(ids[r]), bool(visible[r]), bool(dynamic[r]), scheme) for r in rows],
                      np.float32).reshape(-1, 4)
    keep = max(trail - 1, 0)
    hist = np.asarray(history, np.float64)[rows][:, hist_len(history) - min(keep, hist_len(history)):] \
        if len(rows) else np.zeros((0, 0, 3))
    # each trail: its finite history points, then the head; drawn when that makes two points or more
    trail_pts = np.concatenate((hist, positions[rows][:, None]), axis=1)
    ok = np.concatenate((np.isfinite(hist).all(2), np.ones((len(rows), 1), bool)), axis=1)
    lengths = ok.sum(1)
    drawn = np.flatnonzero(lengths >= 2)
    flat = trail_pts[drawn][ok[drawn]]
    strips = np.split(flat, np.cumsum(lengths[drawn])[:-1]) if len(drawn) else []
    vis = np.asarray(visible, bool)[rows][drawn]
    return MarkerPlan(positions[rows], colors, [marker_id(int(i)) for i in np.asarray(ids)[rows][drawn]],
                      colors[drawn], np.where(vis, scale, 0.5 * scale).astype(np.float64), strips, scale)


def hist_len(history: np.ndarray) -> int:
    """Positions per track in a (N, L, 3) history."""
    return int(np.shape(history)[1]) if np.ndim(history) == 3 else 0


def build_markers(marker_cls: type, point_cls: type, color_cls: type, header: Any, ids: np.ndarray,
                  positions: np.ndarray, history: np.ndarray, visible: np.ndarray, dynamic: np.ndarray,
                  confidence: np.ndarray, *, cap: int, trail: int, scheme: str, scale: float) -> list[Any]:
    """Markers of one frame: DELETEALL, one LINE_STRIP per drawn track (ns 'tracks', id = track id), one
    SPHERE_LIST of all heads (ns 'heads', id 0). Positions/history are already REP 103; NaN history is skipped.
    (Message objects: for tests and ROS installs whose Marker layout :func:`marker_array_cdr` does not know.)"""
    plan = plan_markers(ids, positions, history, visible, dynamic, confidence, cap=cap, trail=trail, scheme=scheme,
                        scale=scale)

    def point(p: Sequence[float]) -> Any:
        q = point_cls()
        q.x, q.y, q.z = float(p[0]), float(p[1]), float(p[2])
        return q

    def color(rgba: Sequence[float]) -> Any:
        c = color_cls()
        c.r, c.g, c.b, c.a = (float(v) for v in rgba)
        return c

    clear = marker_cls()
    clear.header = header
    clear.action = DELETEALL
    out = [clear]
    for mid, rgba, width, strip in zip(plan.strip_ids, plan.strip_colors, plan.strip_widths, plan.strips,
                                       strict=True):
        m = marker_cls()
        m.header, m.ns, m.id, m.type, m.action = header, "tracks", mid, LINE_STRIP, ADD
        m.pose.orientation.w = 1.0
        m.scale.x = float(width)
        m.color = color(rgba)
        m.points = [point(p) for p in strip]
        out.append(m)
    heads = marker_cls()
    heads.header, heads.ns, heads.id, heads.type, heads.action = header, "heads", 0, SPHERE_LIST, ADD
    heads.pose.orientation.w = 1.0
    heads.scale.x = heads.scale.y = heads.scale.z = 2.5 * scale
    heads.color.r = heads.color.g = heads.color.b = heads.color.a = 1.0
    heads.points = [point(p) for p in plan.head_points]
    heads.colors = [color(c) for c in plan.head_colors]
    out.append(heads)
    return out
