"""Join the tracker's world to the robot's TF tree (REP 105): ``fixed_frame → world_frame`` on /tf_static.

The world is the first camera of each world (REP 103 axes). At that first frame the camera's pose in the robot's
fixed frame (e.g. ``odom``) is looked up from /tf and /tf_static at the image's stamp —
``T_fixed_world = T_fixed_camera · T_camera_world`` — and published as a static transform, again after every reset.
Transforms that arrive a little after the image are waited for (looked up again on the next frames, at the first
frame's stamp) for ``timeout_s``; without them the node behaves as before and says so once.

tf2_ros where installed (a ROS install); otherwise /tf and /tf_static feed :class:`~.tf_tree.TransformTree`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from st4rtrack_ros.ros.conversions import R_REP103_FROM_OPTICAL
from st4rtrack_ros.ros.diagnostics import OK, WARN, Task
from st4rtrack_ros.ros.tf_tree import TransformTree, matrix_from_transform

#: world (REP 103 axes at the first camera) → that camera's optical frame.
T_CAMERA_WORLD = np.eye(4)
T_CAMERA_WORLD[:3, :3] = R_REP103_FROM_OPTICAL.T

Lookup = Callable[[str, str, int], "np.ndarray | None"]


def _tf2_lookup(node: Any) -> tuple[Lookup, list[Any], str] | None:
    """tf2_ros's buffer and listener, when tf2_ros is installed."""
    try:
        import tf2_ros
        from rclpy.time import Time
    except ImportError:
        return None
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node, spin_thread=False)

    def lookup(target: str, source: str, at_ns: int) -> np.ndarray | None:
        try:
            t = buffer.lookup_transform(target, source, Time(nanoseconds=at_ns))
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException):
            return None
        return matrix_from_transform(t.transform)

    return lookup, [listener], "tf2_ros"


def _own_lookup(node: Any) -> tuple[Lookup, list[Any], str] | None:
    """/tf and /tf_static into a TransformTree (the pip venv: tf2_msgs built by scripts/setup_env.sh)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    tree = TransformTree()
    static_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    subs = [node.create_subscription(TFMessage, "/tf", lambda m: tree.add(m, static=False), 100),
            node.create_subscription(TFMessage, "/tf_static", lambda m: tree.add(m, static=True), static_qos)]
    return tree.lookup, subs, "st4rtrack_ros TransformTree"


class WorldAnchor:
    """Per world: look up the first camera's pose in ``fixed_frame`` and publish ``fixed_frame → world``."""

    def __init__(self, node: Any, fixed_frame: str, camera_frame: str, timeout_s: float) -> None:
        """``camera_frame``: the robot's frame of the camera ("" = each image's ``header.frame_id``)."""
        self._node, self.fixed_frame, self._camera_frame, self._timeout = node, fixed_frame, camera_frame, timeout_s
        self.subscriptions: list[Any] = []
        self._lookup: Lookup | None = None
        self._source = "off"
        if fixed_frame:
            found = _tf2_lookup(node) or _own_lookup(node)
            if found is None:
                node.get_logger().warning("ros.fixed_frame is set but neither tf2_ros nor tf2_msgs is installed: "
                                          "the world stays detached from the robot's tree")
            else:
                self._lookup, self.subscriptions, self._source = found
        self._warned = False
        self.new_world()

    def new_world(self) -> None:
        self.pending = True  # no frame of this world yet
        self._first: tuple[Any, int, str, float] | None = None
        self.m_fixed_world: np.ndarray | None = None

    def on_frame(self, stamp: Any, stamp_ns: int, frame_id: str, outputs: Any) -> None:
        """After each processed frame: remember a world's first frame, then try to join it until joined or timed
        out."""
        if self.pending:
            self.pending = False
            self._first = (stamp, stamp_ns, self._camera_frame or frame_id, time.monotonic())
        if self._lookup is None or self.m_fixed_world is not None or self._first is None:
            return
        first_stamp, first_ns, camera, t0 = self._first
        if not camera:
            self._warn_once("the image has no header.frame_id and ros.robot_camera_frame is empty")
            return
        m = self._lookup(self.fixed_frame, camera, first_ns)
        if m is not None:
            self.m_fixed_world = m @ T_CAMERA_WORLD
            outputs.publish_static(first_stamp, self.fixed_frame, self.m_fixed_world)
            self._node.get_logger().info(f"world '{outputs.world_frame}' joined to '{self.fixed_frame}' at the pose "
                                         f"of '{camera}' (t = {first_ns} ns)")
        elif time.monotonic() - t0 > self._timeout:
            self._first = None  # give up for this world
            self._warn_once(f"no transform '{self.fixed_frame}' → '{camera}' within {self._timeout:g} s of the "
                            "world's first frame: outputs stay in the detached world frame")

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            self._node.get_logger().warning(why)

    def task(self) -> Task:
        """The diagnostics task 'tf'."""
        t = Task("tf", values={"fixed_frame": self.fixed_frame or "none", "source": self._source,
                               "joined": str(self.m_fixed_world is not None)})
        if not self.fixed_frame:
            t.summary(OK, "not joined to a robot frame (ros.fixed_frame is empty)")
        elif self.m_fixed_world is not None:
            t.summary(OK, f"world joined to {self.fixed_frame}")
        else:
            t.summary(WARN, f"world not joined to {self.fixed_frame} yet")
        return t
