"""The robot's transform tree as the node needs it: look up a camera's pose in a fixed frame (no rclpy here).

On a ROS install the node uses tf2_ros (Buffer + TransformListener). The pip venv has no tf2_ros wheel, so
:class:`TransformTree` is a small stand-in with tf2's behaviour for what the node asks: transforms from /tf and
/tf_static (``geometry_msgs/TransformStamped``, duck-typed), a tree (one parent per frame), lookups between any two
frames through their common ancestor, dynamic transforms interpolated in time (translation linearly, rotation by
slerp) and not extrapolated beyond ``tolerance_s``, static ones valid at every time.

Matrices are 4×4 float64 rigid transforms ``T_a_b`` (points in b → points in a).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


def matrix_from_transform(tf: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` → 4×4 ``T_parent_child``."""
    t, q = tf.translation, tf.rotation
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    m[:3, 3] = (t.x, t.y, t.z)
    return m


def fill_transform(tf: Any, m: np.ndarray) -> Any:
    """Write a 4×4 rigid transform into a ``geometry_msgs/Transform`` (returned for chaining)."""
    tf.translation.x, tf.translation.y, tf.translation.z = (float(v) for v in m[:3, 3])
    x, y, z, w = Rotation.from_matrix(m[:3, :3]).as_quat()
    tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w = float(x), float(y), float(z), float(w)
    return tf


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class TransformTree:
    """Static and dynamic transforms by child frame; ``lookup`` chains them like tf2's ``lookup_transform``."""

    def __init__(self, history: int = 200, tolerance_s: float = 0.1) -> None:
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._dynamic: dict[str, deque[tuple[int, str, np.ndarray]]] = {}
        self._history = history
        self._tol_ns = int(tolerance_s * 1e9)

    def add(self, msg: Any, static: bool) -> None:
        """Store every ``TransformStamped`` of a ``tf2_msgs/TFMessage``."""
        for t in msg.transforms:
            parent, child = t.header.frame_id.lstrip("/"), t.child_frame_id.lstrip("/")
            if not parent or not child or parent == child:
                continue
            m = matrix_from_transform(t.transform)
            if static:
                self._static[child] = (parent, m)
            else:
                buf = self._dynamic.setdefault(child, deque(maxlen=self._history))
                s = stamp_ns(t.header.stamp)
                if buf and s < buf[-1][0]:  # out of order (or time went back): keep the buffer sorted
                    buf = self._dynamic[child] = deque(sorted([*buf, (s, parent, m)], key=lambda e: e[0]),
                                                       maxlen=self._history)
                else:
                    buf.append((s, parent, m))

    def _parent(self, child: str, at_ns: int) -> tuple[str, np.ndarray] | None:
        if child in self._static:
            return self._static[child]
        buf = self._dynamic.get(child)
        if not buf:
            return None
        stamps = np.fromiter((e[0] for e in buf), np.int64, len(buf))
        i = int(np.searchsorted(stamps, at_ns))
        if i < len(buf) and stamps[i] == at_ns:
            return buf[i][1], buf[i][2]
        if i == 0 or i == len(buf):  # outside the buffer: the nearest end, if close enough
            s, parent, m = buf[0] if i == 0 else buf[-1]
            return (parent, m) if abs(s - at_ns) <= self._tol_ns else None
        (s0, p0, m0), (s1, _, m1) = buf[i - 1], buf[i]
        a = (at_ns - s0) / (s1 - s0)
        m = np.eye(4)
        m[:3, 3] = (1 - a) * m0[:3, 3] + a * m1[:3, 3]
        m[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([m0[:3, :3], m1[:3, :3]])))(a).as_matrix()
        return p0, m

    def _to_root(self, frame: str, at_ns: int) -> dict[str, np.ndarray]:
        """Every ancestor of ``frame`` (itself included) → ``T_ancestor_frame``."""
        chain, m, f = {frame: np.eye(4)}, np.eye(4), frame
        while (up := self._parent(f, at_ns)) is not None and up[0] not in chain:
            m = up[1] @ m
            f = up[0]
            chain[f] = m
        return chain

    def lookup(self, target: str, source: str, at_ns: int) -> np.ndarray | None:
        """``T_target_source`` at ``at_ns``, or None when the frames are not connected at that time."""
        target, source = target.lstrip("/"), source.lstrip("/")
        up_source, up_target = self._to_root(source, at_ns), self._to_root(target, at_ns)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            return None
        return np.linalg.inv(up_target[common]) @ up_source[common]
