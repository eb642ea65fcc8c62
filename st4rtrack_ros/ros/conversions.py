"""Pure conversions between the tracker's arrays and ROS message layouts (NumPy only; no rclpy here).

Frames: the tracker's world is the first anchor camera's optical frame (x right, y down, z forward). ROS tools
expect REP 103 (x forward, y left, z up), so every world quantity is rotated by :data:`R_REP103_FROM_OPTICAL`
before publishing; the camera pose keeps optical axes on its child frame (REP 103's ``*_optical`` convention), i.e.
``T_world_rep ← cam_optical = R · T_world_opt ← cam_optical``.

Message builders take the message classes as arguments, so this module and its tests need no ROS install.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np

#: optical (x right, y down, z forward) → REP 103 (x forward, y left, z up).
R_REP103_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: PointCloud2 layout of ~/points and ~/map: (name, offset, PointField datatype) — FLOAT32 = 7. ``rgb`` is the
#: float32 reinterpretation of 0x00RRGGBB, as RViz's RGB8 colour transformer and PCL expect.
CLOUD_FIELDS: tuple[tuple[str, int, int], ...] = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7),
                                                  ("confidence", 16, 7))
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb", "confidence"], "formats": ["<f4"] * 5,
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 20})

# visualization_msgs/Marker constants (the values are fixed by the message definition).
LINE_STRIP, SPHERE_LIST = 4, 7
ADD, DELETEALL = 0, 3


def to_rep103_points(p: np.ndarray) -> np.ndarray:
    """(..., 3) optical-world points → REP 103 world (NaN/Inf stay non-finite, without a warning per frame)."""
    p = np.asarray(p)
    with np.errstate(invalid="ignore"):
        return p @ R_REP103_FROM_OPTICAL.T.astype(p.dtype if p.dtype.kind == "f" else np.float64)


def to_rep103_pose(t_world_cam: np.ndarray) -> np.ndarray:
    """4×4 camera (optical) → optical world, into camera (optical) → REP 103 world."""
    out = np.array(t_world_cam, dtype=np.float64, copy=True)
    out[:3, :3] = R_REP103_FROM_OPTICAL @ out[:3, :3]
    out[:3, 3] = R_REP103_FROM_OPTICAL @ out[:3, 3]
    return out


def quaternion_from_matrix(r: np.ndarray) -> tuple[float, float, float, float]:
    """3×3 rotation → unit quaternion (x, y, z, w), w ≥ 0 (Shepperd's branch choice for stability)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def stamp_from_ns(ns: int) -> tuple[int, int]:
    """Nanoseconds → (sec, nanosec) of builtin_interfaces/Time (non-negative)."""
    sec, nsec = divmod(int(ns), 10**9)
    return int(sec), int(nsec)


def ns_from_stamp(stamp: Any) -> int:
    """builtin_interfaces/Time → nanoseconds."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 → (N,) float32 whose bits are 0x00RRGGBB."""
    c = np.asarray(colors, dtype=np.uint32).reshape(-1, 3)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


def cloud_array(points: np.ndarray, colors: np.ndarray | None, confidence: np.ndarray | None,
                max_points: int) -> np.ndarray:
    """Structured (N,) array of the published cloud: non-finite points removed, evenly thinned to ``max_points``.

    Thinning keeps every k-th point (deterministic, spatially uniform for an image-ordered cloud) rather than the
    first ``max_points``, which would cut off the bottom of the image.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    cols = np.zeros((n, 3), np.uint8) if colors is None else np.asarray(colors).reshape(-1, 3)
    conf = np.ones(n, np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(-1)
    if len(cols) != n or len(conf) != n:
        raise ValueError(f"points ({n}), colours ({len(cols)}) and confidences ({len(conf)}) differ in length")
    keep = np.isfinite(pts).all(1) & np.isfinite(conf)
    idx = np.flatnonzero(keep)
    if max_points >= 0 and len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).round().astype(np.int64)] if max_points else idx[:0]
    out = np.empty(len(idx), CLOUD_DTYPE)
    out["x"], out["y"], out["z"] = pts[idx, 0], pts[idx, 1], pts[idx, 2]
    out["rgb"] = pack_rgb(cols[idx])
    out["confidence"] = conf[idx]
    return out


def fill_cloud(msg: Any, field_cls: type, cloud: np.ndarray) -> Any:
    """Fill a sensor_msgs/PointCloud2 ``msg`` (header set by the caller) from :func:`cloud_array`'s output."""
    fields = []
    for name, offset, datatype in CLOUD_FIELDS:
        f = field_cls()
        f.name, f.offset, f.datatype, f.count = name, offset, datatype, 1
        fields.append(f)
    msg.fields = fields
    msg.height, msg.width = 1, len(cloud)
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * len(cloud)
    msg.is_dense = True  # NaN/Inf points were removed
    msg.data = cloud.tobytes()
    return msg


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


def build_markers(marker_cls: type, point_cls: type, color_cls: type, header: Any, ids: np.ndarray,
                  positions: np.ndarray, history: np.ndarray, visible: np.ndarray, dynamic: np.ndarray,
                  confidence: np.ndarray, *, cap: int, trail: int, scheme: str, scale: float) -> list[Any]:
    """Markers of one frame: DELETEALL, one LINE_STRIP per drawn track (ns 'tracks', id = track id), one
    SPHERE_LIST of all heads (ns 'heads', id 0). Positions/history are already REP 103; NaN history is skipped."""
    out = []
    clear = marker_cls()
    clear.header = header
    clear.action = DELETEALL
    out.append(clear)
    rows = select_tracks(confidence, visible, cap)
    heads = marker_cls()
    heads.header, heads.ns, heads.id, heads.type, heads.action = header, "heads", 0, SPHERE_LIST, ADD
    heads.pose.orientation.w = 1.0
    heads.scale.x = heads.scale.y = heads.scale.z = 2.5 * scale
    heads.color.r = heads.color.g = heads.color.b = heads.color.a = 1.0
    head_pts, head_cols = [], []

    def point(p: Sequence[float]) -> Any:
        q = point_cls()
        q.x, q.y, q.z = float(p[0]), float(p[1]), float(p[2])
        return q

    def color(rgba: tuple[float, float, float, float]) -> Any:
        c = color_cls()
        c.r, c.g, c.b, c.a = rgba
        return c

    for r in rows:
        pos = positions[r]
        if not np.all(np.isfinite(pos)):
            continue
        rgba = track_color(int(ids[r]), bool(visible[r]), bool(dynamic[r]), scheme)
        head_pts.append(point(pos))
        head_cols.append(color(rgba))
        hist = history[r][-max(trail - 1, 0):] if trail > 1 else history[r][:0]
        hist = hist[np.isfinite(hist).all(1)]
        strip = np.concatenate((hist, pos[None]))
        if len(strip) < 2:
            continue  # a LINE_STRIP needs two points; the head sphere still shows the track
        m = marker_cls()
        m.header, m.ns, m.id, m.type, m.action = header, "tracks", marker_id(int(ids[r])), LINE_STRIP, ADD
        m.pose.orientation.w = 1.0
        m.scale.x = scale if visible[r] else 0.5 * scale
        m.color = color(rgba)
        m.points = [point(p) for p in strip]
        out.append(m)
    heads.points, heads.colors = head_pts, head_cols
    out.append(heads)
    return out
