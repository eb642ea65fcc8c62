"""The node joined to the robot's TF tree, and depth matched to its image by stamp — in-process, over DDS.

The tracker runs on the oracle engine (exact St4RTrack targets of a synthetic scene), so every error is the node's:
a test publisher sends ``odom → cam_optical`` (the scene's first camera pose) on /tf_static; the node publishes
``odom → st4r_world`` and its camera poses and clouds, composed with it, must land on the scene's ground truth in
``odom``. The first frame's depth image arrives 50 ms after its colour image and must still set the metric scale.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing")
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")
tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not built (scripts/setup_env.sh step 'messages')")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_test_helpers import wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from st4rtrack_ros.data.sequence import make_sequence  # noqa: E402
from st4rtrack_ros.evaluation.oracle import OracleEngine  # noqa: E402
from st4rtrack_ros.ros.conversions import stamp_from_ns  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for  # noqa: E402
from st4rtrack_ros.ros.node import TrackerNode  # noqa: E402
from st4rtrack_ros.ros.tf_tree import fill_transform, matrix_from_transform  # noqa: E402
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")
CAMERA = "cam_optical"


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> bool:
    return wait_until(cond, timeout)


def _image(f: Any, depth: bool = False) -> Image:
    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = stamp_from_ns(f.stamp_ns)
    m.header.frame_id = CAMERA
    arr = f.depth.astype(np.float32) if depth else f.rgb
    m.height, m.width = arr.shape[:2]
    m.encoding = "32FC1" if depth else "rgb8"
    m.step = m.width * (4 if depth else 3)
    m.data = arr.tobytes()
    return m


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    mp.setenv("ROS_LOG_DIR", str(tmp_path_factory.mktemp("ros_log")))
    seq = make_sequence("easy", 6, seed=4, width=128, height=80, n_tracks=16, n_object_tracks=4)
    frames = list(seq.frames())
    tracker = OnlineTracker(OracleEngine(seq, [f.rgb for f in frames]),  # type: ignore[arg-type]
                            TrackerConfig(window_size=50, num_queries=32, map_every=0))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(os.getpid() + 61))
    params = {"ros.fixed_frame": "odom", "ros.depth_topic": "/cam/depth", "ros.camera_info_topic": "/cam/info",
              "ros.sync_max_wait_s": 0.5, "ros.tf_timeout_s": 10.0}
    node = TrackerNode(tracker=tracker, context=ctx,
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    robot = rclpy.create_node("robot_tf", context=ctx)
    static_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = robot.create_publisher(tf2_msgs.TFMessage, "/tf_static", static_qos)
    got: dict[str, list[Any]] = {"static": [], "tf": [], "pose": [], "points": [], "status": []}
    robot.create_subscription(tf2_msgs.TFMessage, "/tf_static", got["static"].append, static_qos)
    robot.create_subscription(tf2_msgs.TFMessage, "/tf", got["tf"].append, 100)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(robot)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)],
                               daemon=True)
    spinner.start()
    try:
        assert node.bring_up()
        out = node.outputs
        out.points.get_subscription_count = lambda: 1  # build the cloud as if RViz subscribed
        for name, publisher in (("pose", out.pose), ("points", out.points), ("status", node.pub_status)):
            real = publisher.publish
            publisher.publish = lambda m, real=real, name=name: (got[name].append(m), real(m))
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = "odom", CAMERA
        fill_transform(tf.transform, frames[0].pose)  # odom := the scene's world
        pub.publish(tf2_msgs.TFMessage(transforms=[tf]))
        assert _wait(lambda: node.anchor._lookup("odom", CAMERA, 0) is not None), "/tf_static never arrived"
        info = CameraInfo(header=_image(frames[0]).header, width=128, height=80)
        info.k = [float(v) for v in frames[0].k.ravel()]
        node.frame_pipeline.on_camera_info(info)
        node.frame_pipeline.on_image(_image(frames[0]))
        time.sleep(0.05)  # the depth camera is late
        node.frame_pipeline.on_depth(_image(frames[0], depth=True))
        assert _wait(lambda: len(got["status"]) == 1)
        for f in frames[1:]:
            info = CameraInfo(header=_image(f).header, width=f.rgb.shape[1], height=f.rgb.shape[0])
            info.k = [float(v) for v in f.k.ravel()]
            node.frame_pipeline.on_camera_info(info)
            node.frame_pipeline.on_depth(_image(f, depth=True))
            node.frame_pipeline.on_image(_image(f))
            assert _wait(lambda n=f.index: len(got["status"]) == n + 1)
        assert _wait(lambda: len(got["static"]) >= 1 and len(got["tf"]) >= len(frames))
        yield {"frames": frames, "node": node, "got": got, "k": seq.k}
    finally:
        stop.set()
        spinner.join(2.0)
        node.trigger_shutdown()
        node.destroy_node()
        robot.destroy_node()
        rclpy.try_shutdown(context=ctx)
        mp.undo()


def test_late_depth_still_sets_the_metric_scale(run: dict[str, Any]) -> None:
    pipeline = run["node"].frame_pipeline
    status, depth, info = run["got"]["status"], pipeline.depth.counts, pipeline.info.counts
    assert all(s.metric_scale for s in status)
    assert depth.waited >= 1 and depth.missed == 0, depth
    assert info.matched == len(status) and info.missed == 0, info


def test_fixed_frame_to_world_is_published_and_outputs_land_on_the_truth_in_odom(run: dict[str, Any]) -> None:
    frames, got = run["frames"], run["got"]
    t = got["static"][-1].transforms[0]
    assert (t.header.frame_id, t.child_frame_id) == ("odom", "st4r_world")
    assert (t.header.stamp.sec, t.header.stamp.nanosec) == stamp_from_ns(frames[0].stamp_ns)
    m_odom_world = matrix_from_transform(t.transform)
    for f, pose in zip(frames, got["pose"], strict=True):
        cam = matrix_from_transform(type("T", (), {"translation": pose.pose.position,
                                                   "rotation": pose.pose.orientation})())
        in_odom = m_odom_world @ cam
        assert np.abs(in_odom[:3, 3] - f.pose[:3, 3]).max() < 5e-3, f.index
        assert np.abs(in_odom[:3, :3] - f.pose[:3, :3]).max() < 1e-3, f.index
    # /tf carries the same camera poses (world → the node's own camera frame), stamped with the images
    tf = {(t.header.stamp.sec, t.header.stamp.nanosec): t for m in got["tf"] for t in m.transforms}
    for f, pose in zip(frames, got["pose"], strict=True):
        t = tf[stamp_from_ns(f.stamp_ns)]
        assert (t.header.frame_id, t.child_frame_id) == ("st4r_world", "st4r_camera_optical")
        as_transform = type("T", (), {"translation": pose.pose.position, "rotation": pose.pose.orientation})()
        np.testing.assert_allclose(matrix_from_transform(t.transform), matrix_from_transform(as_transform),
                                   atol=1e-6)  # q and -q are one rotation: compare matrices
    # the last frame's cloud, taken into odom through the published transform, lies on that frame's true surface
    f, cloud = frames[-1], got["points"][-1]
    if isinstance(cloud, bytes):  # the node publishes clouds as CDR bytes (cdr.cloud_cdr)
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import PointCloud2

        cloud = deserialize_message(cloud, PointCloud2)
    xyz = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, cloud.point_step // 4)[:, :3].astype(np.float64)
    p_odom = xyz @ m_odom_world[:3, :3].T + m_odom_world[:3, 3]
    p_cam = (p_odom - f.pose[:3, 3]) @ f.pose[:3, :3]  # world → camera: R^T (p - t)
    uv = p_cam @ run["k"].T
    u, v = np.round(uv[:, 0] / uv[:, 2]).astype(int), np.round(uv[:, 1] / uv[:, 2]).astype(int)
    inside = (u >= 0) & (u < f.depth.shape[1]) & (v >= 0) & (v < f.depth.shape[0])
    assert inside.mean() > 0.95 and len(xyz) > 100
    gt = f.depth[v[inside], u[inside]]
    ok = gt > 0
    rel = np.abs(p_cam[inside][ok, 2] - gt[ok]) / gt[ok]
    assert np.median(rel) < 0.02, np.median(rel)
