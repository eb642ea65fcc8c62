"""The node's outputs: one tracker result → pose, path, /tf, tracks, clouds, map and markers (rclpy messages).

Every output of a frame carries the input image's stamp and the world frame. Visualisation outputs (points, map,
markers, path) are built only while something subscribes. Tracks, clouds and markers go out as serialised bytes
written straight from the arrays (``cdr.*_cdr``). Publishers are lifecycle publishers: they exist from
``configure`` and publish only while the node is active. /tf_static (the robot's fixed frame → world, when the node
is joined to the robot's tree) is transient-local, as tf2's static broadcaster makes it, so late subscribers get it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import Point, PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from st4rtrack_ros.msg import Track3D, Track3DArray
from st4rtrack_ros.ros import cdr, markers
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros.tf_tree import fill_transform

try:  # a ROS install has tf2_msgs; the pip venv builds a TFMessage-only copy (scripts/venv_msgs)
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - reported once by the node
    TFMessage = None  # type: ignore[assignment,misc]


def qos_out(depth: int = 5) -> QoSProfile:
    """Outputs: reliable + volatile, what RViz subscribes with by default."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def qos_static() -> QoSProfile:
    """tf2's /tf_static profile: reliable, transient local, the last message kept."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def header(stamp: Any, frame_id: str) -> Header:
    h = Header()
    h.stamp, h.frame_id = stamp, frame_id
    return h


def transform_stamped(stamp: Any, parent: str, child: str, m: np.ndarray) -> TransformStamped:
    tf = TransformStamped()
    tf.header, tf.child_frame_id = header(stamp, parent), child
    fill_transform(tf.transform, m)
    return tf


class Outputs:
    """Publishers of the per-frame outputs and the code that fills them."""

    def __init__(self, node: Any, world_frame: str, camera_frame: str, param: Callable[[str], Any]) -> None:
        """``node``: a LifecycleNode; ``param(name)``: the current value of a node parameter."""
        self.world_frame, self.camera_frame, self._param = world_frame, camera_frame, param
        q = qos_out()
        make = node.create_lifecycle_publisher
        self.points = make(PointCloud2, "~/points", q)
        self.map = make(PointCloud2, "~/map", qos_out(1))
        self.tracks = make(Track3DArray, "~/tracks", q)
        self.markers = make(MarkerArray, "~/track_markers", q)
        self.pose = make(PoseStamped, "~/camera_pose", q)
        self.path = make(PathMsg, "~/path", qos_out(1))
        self.tf = make(TFMessage, "/tf", qos_out(100)) if TFMessage is not None and param("ros.publish_tf") else None
        self.tf_static = make(TFMessage, "/tf_static", qos_static()) if TFMessage is not None else None
        # (sec, nanosec, x, y, z, qx, qy, qz, qw) per published pose: ~/path is built from these
        self._path: deque[tuple[float, ...]] = deque(maxlen=int(param("ros.max_path_length")))
        self._last_map = -1e18
        # serialised outputs where this ROS's message definitions are the ones the CDR writers follow
        self._cdr_tracks = cdr.cdr_layout_matches("st4rtrack_ros/Track3DArray", Track3DArray) and \
            cdr.cdr_layout_matches("st4rtrack_ros/Track3D", Track3D)
        self._cdr_cloud = cdr.cdr_layout_matches("sensor_msgs/PointCloud2", PointCloud2)
        self._cdr_markers = cdr.cdr_layout_matches("visualization_msgs/Marker", Marker)
        self._cdr_path = cdr.cdr_layout_matches("nav_msgs/Path", PathMsg) and \
            cdr.cdr_layout_matches("geometry_msgs/PoseStamped", PoseStamped)

    def all(self) -> list[Any]:
        return [p for p in (self.points, self.map, self.tracks, self.markers, self.pose, self.path, self.tf,
                            self.tf_static) if p is not None]

    def reset(self) -> None:
        """A new world: the path starts again and the next map goes out at once."""
        self._path.clear()
        self._last_map = -1e18

    def set_path_length(self, n: int) -> None:
        self._path = deque(self._path, maxlen=n)

    def publish_static(self, stamp: Any, parent: str, m_parent_world: np.ndarray) -> bool:
        """``parent → world`` on /tf_static (REP 105: the robot's fixed frame is the world's parent)."""
        if self.tf_static is None:
            return False
        self.tf_static.publish(TFMessage(transforms=[transform_stamped(stamp, parent, self.world_frame,
                                                                       m_parent_world)]))
        return True

    def publish(self, res: Any, stamp: Any) -> dict[str, float]:
        """Every output of one tracker step (a :class:`~st4rtrack_ros.tracking.types.StepResult`); returns the time
        spent per output (ms: pose, tracks, points, map, markers) for the node's timing diagnostics.

        Tracks, clouds and markers go out already serialised (``cdr.*_cdr``: a few array copies instead of
        thousands of message objects) where the message definitions match; otherwise as message objects."""
        ms: dict[str, float] = {}
        t = time.perf_counter()
        hdr = header(stamp, self.world_frame)
        st = (int(stamp.sec), int(stamp.nanosec))
        pose = cv.to_rep103_pose(res.pose_world_cam)
        ps = PoseStamped()
        ps.header = hdr
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in pose[:3, 3])
        o = ps.pose.orientation
        o.x, o.y, o.z, o.w = cv.quaternion_from_matrix(pose[:3, :3])
        self.pose.publish(ps)
        p = ps.pose.position
        self._path.append((*st, p.x, p.y, p.z, o.x, o.y, o.z, o.w))
        if self.path.get_subscription_count():
            self.path.publish(self._path_msg(hdr, st))
        if self.tf is not None:
            self.tf.publish(TFMessage(transforms=[transform_stamped(stamp, self.world_frame, self.camera_frame,
                                                                    pose)]))
        t = self._lap(ms, "pose", t)
        tr = res.tracks
        positions = cv.to_rep103_points(np.asarray(tr.positions, np.float64))
        if self._cdr_tracks:
            self.tracks.publish(cdr.track_array_cdr(st, self.world_frame, tr.ids, positions, tr.visible, tr.dynamic,
                                                   tr.confidence, tr.sigma2, tr.age))
        else:
            self.tracks.publish(self._track_array(hdr, tr, positions))
        t = self._lap(ms, "tracks", t)
        if self.points.get_subscription_count():
            cloud = cv.cloud_array(cv.to_rep103_points(res.points), res.colors, res.point_confidence,
                                   int(self._param("ros.max_cloud_points")))
            self.points.publish(self._cloud(hdr, st, cloud))
        t = self._lap(ms, "points", t)
        now = time.monotonic()
        if (res.map_points is not None and self.map.get_subscription_count()
                and now - self._last_map >= float(self._param("ros.map_period_s"))):
            self._last_map = now
            cloud = cv.cloud_array(cv.to_rep103_points(res.map_points), res.map_colors, None,
                                   int(self._param("ros.max_map_points")))
            self.map.publish(self._cloud(hdr, st, cloud))
        t = self._lap(ms, "map", t)
        if self.markers.get_subscription_count():
            self.markers.publish(self._markers(hdr, st, tr, positions, pose[:3, 3]))
        self._lap(ms, "markers", t)
        return ms

    def _path_msg(self, hdr: Header, st: tuple[int, int]) -> PathMsg | bytes:
        rows = np.array(self._path, np.float64).reshape(-1, 9)
        stamps = rows[:, :2].astype(np.int64)
        if self._cdr_path:
            return cdr.path_cdr(st, self.world_frame, stamps, rows[:, 2:])
        poses = []
        for (sec, nsec), r in zip(stamps, rows[:, 2:], strict=True):
            ps = PoseStamped(header=header(TimeMsg(sec=int(sec), nanosec=int(nsec)), self.world_frame))
            ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in r[:3])
            o = ps.pose.orientation
            o.x, o.y, o.z, o.w = (float(v) for v in r[3:])
            poses.append(ps)
        return PathMsg(header=hdr, poses=poses)

    @staticmethod
    def _lap(ms: dict[str, float], name: str, t0: float) -> float:
        t = time.perf_counter()
        ms[name] = (t - t0) * 1e3
        return t

    def _cloud(self, hdr: Header, st: tuple[int, int], cloud: np.ndarray) -> PointCloud2 | bytes:
        if self._cdr_cloud:
            return cdr.cloud_cdr(st, self.world_frame, cloud)
        return cv.fill_cloud(PointCloud2(header=hdr), PointField, cloud)

    @staticmethod
    def _track_array(hdr: Header, tr: Any, positions: np.ndarray) -> Track3DArray:
        items = []
        for i in range(len(tr)):
            t = Track3D()
            t.id = int(tr.ids[i])
            t.position.x, t.position.y, t.position.z = (float(v) for v in positions[i])
            t.visible, t.dynamic = bool(tr.visible[i]), bool(tr.dynamic[i])
            t.confidence, t.sigma2, t.age = float(tr.confidence[i]), float(tr.sigma2[i]), int(max(tr.age[i], 0))
            items.append(t)
        return Track3DArray(header=hdr, tracks=items)

    def _markers(self, hdr: Header, st: tuple[int, int], tr: Any, positions: np.ndarray,
                 cam: np.ndarray) -> MarkerArray | bytes:
        hist = cv.to_rep103_points(np.asarray(tr.history, np.float64)) if len(tr) else np.zeros((0, 1, 3))
        dist = np.linalg.norm(positions - cam, axis=1) if len(tr) else np.ones(1)
        scale = max(1e-4, 0.004 * float(np.nanmedian(dist)) if np.isfinite(dist).any() else 0.01)
        args = (tr.ids, positions, hist, tr.visible, tr.dynamic, tr.confidence)
        kw = {"cap": int(self._param("ros.max_marker_tracks")), "trail": int(self._param("ros.marker_history")),
              "scheme": str(self._param("ros.marker_color")), "scale": scale}
        if self._cdr_markers:
            return cdr.marker_array_cdr(st, self.world_frame, markers.plan_markers(*args, **kw))
        return MarkerArray(markers=markers.build_markers(Marker, Point, ColorRGBA, hdr, *args, **kw))
