"""Pure conversions between the tracker's arrays and ROS message layouts (NumPy only; no rclpy here).

Frames: the tracker's world is the first anchor camera's optical frame (x right, y down, z forward). ROS tools
expect REP 103 (x forward, y left, z up), so every world quantity is rotated by :data:`R_REP103_FROM_OPTICAL`
before publishing; the camera pose keeps optical axes on its child frame (REP 103's ``*_optical`` convention), i.e.
``T_world_rep ← cam_optical = R · T_world_opt ← cam_optical``.

Message builders take the message classes as arguments, so this module and its tests need no ROS install. This
module holds the frames, stamps and point clouds; the track markers are :mod:`~st4rtrack_ros.ros.markers`, the
messages serialised straight from arrays :mod:`~st4rtrack_ros.ros.cdr`.
"""

from __future__ import annotations

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
