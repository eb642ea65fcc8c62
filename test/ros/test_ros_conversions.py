"""Pure conversions of the ROS adapter (no DDS): REP 103 rotation, quaternions, cloud packing, markers, params."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from st4rtrack_ros.ros import cdr, markers
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.settings import DEFAULT_CONFIG, load_section, unflatten
from st4rtrack_ros.tracking.tracker import TrackerConfig


def test_rep103_axes_map_optical_to_forward_left_up() -> None:
    fwd, right, down = np.array([0.0, 0, 1]), np.array([1.0, 0, 0]), np.array([0.0, 1, 0])
    assert np.allclose(cv.to_rep103_points(fwd), [1, 0, 0])
    assert np.allclose(cv.to_rep103_points(right), [0, -1, 0])
    assert np.allclose(cv.to_rep103_points(down), [0, 0, -1])
    assert np.isclose(np.linalg.det(cv.R_REP103_FROM_OPTICAL), 1.0)


def test_rep103_pose_keeps_optical_child_axes() -> None:
    t = np.eye(4)
    t[:3, 3] = [0.5, -0.2, 2.0]
    p_cam = np.array([0.1, 0.2, 3.0])
    world_opt = t[:3, :3] @ p_cam + t[:3, 3]
    rep = cv.to_rep103_pose(t)
    assert np.allclose(rep[:3, :3] @ p_cam + rep[:3, 3], cv.to_rep103_points(world_opt))


@pytest.mark.parametrize("seed", range(5))
def test_quaternion_round_trip(seed: int) -> None:
    from scipy.spatial.transform import Rotation

    r = Rotation.random(random_state=seed).as_matrix()
    q = cv.quaternion_from_matrix(r)
    assert np.allclose(Rotation.from_quat(q).as_matrix(), r, atol=1e-9)
    assert q[3] >= 0


def test_cloud_array_drops_nan_and_caps() -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1000, 3)).astype(np.float32)
    pts[::7] = np.nan
    cols = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    conf = rng.random(1000).astype(np.float32)
    c = cv.cloud_array(pts, cols, conf, max_points=100)
    assert len(c) == 100
    xyz = np.stack([c["x"], c["y"], c["z"]], 1)
    assert np.isfinite(xyz).all()
    rgb = c["rgb"].view(np.uint32)
    first = np.flatnonzero(np.isfinite(pts).all(1))[0]
    assert rgb[0] == (int(cols[first, 0]) << 16 | int(cols[first, 1]) << 8 | int(cols[first, 2]))
    assert cv.CLOUD_DTYPE.itemsize == 20 and len(c.tobytes()) == 2000


def test_fill_cloud_layout() -> None:
    c = cv.cloud_array(np.ones((3, 3)), None, None, 10)
    msg = cv.fill_cloud(SimpleNamespace(), SimpleNamespace, c)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "confidence"]
    assert msg.is_dense and msg.width == 3 and msg.height == 1 and msg.row_step == 60 and len(msg.data) == 60


def _ns(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**kw)


class _Marker:
    def __init__(self) -> None:
        self.header = None
        self.ns, self.id, self.type, self.action = "", 0, 0, 0
        self.pose = _ns(orientation=_ns(w=0.0))
        self.scale = _ns(x=0.0, y=0.0, z=0.0)
        self.color = _ns(r=0.0, g=0.0, b=0.0, a=0.0)
        self.points: list = []
        self.colors: list = []


def test_markers_deleteall_first_unique_ids_and_caps() -> None:
    n, length = 20, 5
    ids = np.arange(100, 100 + n)
    pos = np.random.default_rng(0).normal(size=(n, 3))
    hist = np.repeat(pos[:, None], length, 1)
    hist[:, :2] = np.nan
    visible = np.arange(n) % 3 != 0
    ms = markers.build_markers(_Marker, lambda: _ns(x=0, y=0, z=0), lambda: _ns(r=0, g=0, b=0, a=0), "h", ids, pos,
                          hist, visible, np.zeros(n, bool), np.ones(n), cap=8, trail=4, scheme="id", scale=0.01)
    assert ms[0].action == markers.DELETEALL
    strips = [m for m in ms if m.type == markers.LINE_STRIP]
    heads = [m for m in ms if m.type == markers.SPHERE_LIST]
    assert len(strips) == 8 and len(heads) == 1 and len(heads[0].points) == 8
    keys = [(m.ns, m.id) for m in ms[1:]]
    assert len(set(keys)) == len(keys)
    assert all(len(m.points) == 4 for m in strips)  # trail 4 = the last 3 (finite) history points + the head
    assert all(m.color.a == markers.VISIBLE_ALPHA for m in strips)  # visible ones preferred under the cap


def test_occluded_tracks_look_different() -> None:
    for scheme in ("id", "state"):
        assert markers.track_color(3, True, False, scheme) != markers.track_color(3, False, False, scheme)
        assert markers.track_color(3, False, False, scheme)[3] < 1.0
    assert markers.color_for_id(5) == markers.color_for_id(5)


def test_params_file_covers_schema_and_tracker_config() -> None:
    d = P.defaults()
    assert set(P.SPECS) <= set(d), sorted(set(P.SPECS) - set(d))
    assert TrackerConfig.from_dict(load_section(DEFAULT_CONFIG, "tracking")) == TrackerConfig()
    assert unflatten(d, "tracking") == load_section(DEFAULT_CONFIG, "tracking")


def test_validate_and_qos_parsing() -> None:
    assert P.validate("ros.max_cloud_points", 100, 20000) is None
    assert "must be >= 1" in P.validate("ros.max_cloud_points", 0, 20000)
    assert "integer" in P.validate("ros.max_cloud_points", 1.5, 20000)
    assert "one of" in P.validate("ros.marker_color", "rainbow", "id")
    assert "bool" in P.validate("adaptation.enabled", 1, False)
    assert P.parse_input_qos("best_effort", 1) == ("best_effort", 1)
    with pytest.raises(ValueError):
        P.parse_input_qos("sometimes", 1)
    with pytest.raises(ValueError):
        P.parse_input_qos("reliable", 0)
    assert P.compressed_topic("/cam/image_raw") == "/cam/image_raw/compressed"
    assert P.compressed_topic("/cam/image_raw/compressed") == "/cam/image_raw/compressed"


def test_latest_slot_counts_replacements() -> None:
    pytest.importorskip("rclpy", reason="rclpy missing")
    from st4rtrack_ros.ros.handover import LatestSlot

    s = LatestSlot()
    assert s.put(1) is False and s.put(2) is True
    assert s.take(0.01) == 2 and s.take(0.01) is None


def test_handoff_holds_one_item_until_it_is_handled() -> None:
    """The tracker thread may step one frame ahead of the publisher thread, never more, and nothing is dropped."""
    pytest.importorskip("rclpy", reason="rclpy missing")
    import threading

    from st4rtrack_ros.ros.handover import Handoff

    h, stop = Handoff(), threading.Event()
    assert h.idle(0.0) and h.put(1, stop)
    assert not h.idle(0.01)
    second = threading.Thread(target=lambda: h.put(2, stop))
    second.start()
    second.join(0.1)
    assert second.is_alive()  # waits: item 1 is not taken yet
    assert h.take(0.1) == 1
    second.join(0.1)
    assert second.is_alive()  # still waits: item 1 is taken but not handled
    h.done()
    second.join(1.0)
    assert not second.is_alive() and h.take(0.1) == 2
    h.done()
    assert h.idle(0.0) and h.take(0.01) is None
    h.put(3, stop)
    stop.set()
    assert h.put(4, stop) is False  # a stopping node does not wait for a publisher that has gone


def _stamped_header(frame_id: str) -> object:
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = 1_700_000_123, 456_789
    return h


@pytest.mark.parametrize("frame_id", ["", "w", "st4r_world", "robot/st4r_world"])  # every alignment of what follows
@pytest.mark.parametrize("n", [0, 1, 7])
def test_cdr_tracks_and_cloud_deserialise_to_the_message_objects(frame_id: str, n: int) -> None:
    """The bytes the node publishes are the messages it used to build: rclpy deserialises them to equal objects."""
    pytest.importorskip("rclpy", reason="rclpy missing")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2, PointField

    from st4rtrack_ros.msg import Track3DArray
    from st4rtrack_ros.ros.publishing import Outputs

    rng = np.random.default_rng(n)
    tr = SimpleNamespace(ids=rng.integers(0, 2**40, n).astype(np.uint64), positions=rng.normal(size=(n, 3)),
                         visible=rng.random(n) > 0.5, dynamic=rng.random(n) > 0.5,
                         confidence=rng.random(n).astype(np.float32), sigma2=rng.random(n).astype(np.float32),
                         age=rng.integers(-3, 60, n))
    hdr = _stamped_header(frame_id)
    stamp = (hdr.stamp.sec, hdr.stamp.nanosec)
    objs = Outputs._track_array(hdr, _Sized(tr, n), tr.positions)
    got = deserialize_message(cdr.track_array_cdr(stamp, frame_id, tr.ids, tr.positions, tr.visible, tr.dynamic,
                                                 tr.confidence, tr.sigma2, tr.age), Track3DArray)
    assert got == objs
    cloud = cv.cloud_array(rng.normal(size=(3 * n + 1, 3)), rng.integers(0, 255, (3 * n + 1, 3)),
                           rng.random(3 * n + 1), 2 * n)
    assert deserialize_message(cdr.cloud_cdr(stamp, frame_id, cloud), PointCloud2) == \
        cv.fill_cloud(PointCloud2(header=hdr), PointField, cloud)


class _Sized(SimpleNamespace):
    """A TrackSet stand-in with a length."""

    def __init__(self, tr: SimpleNamespace, n: int) -> None:
        super().__init__(**vars(tr))
        self._n = n

    def __len__(self) -> int:
        return self._n


@pytest.mark.parametrize("scheme", ["id", "state"])
@pytest.mark.parametrize("frame_id", ["w", "st4r_world"])
def test_cdr_markers_deserialise_to_the_message_objects(scheme: str, frame_id: str) -> None:
    pytest.importorskip("rclpy", reason="rclpy missing")
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    if not cdr.cdr_layout_matches("visualization_msgs/Marker", Marker):
        pytest.skip("this ROS has another Marker definition: the node publishes message objects")
    rng = np.random.default_rng(1)
    n, length = 12, 6
    ids, pos = np.arange(5, 5 + n) * 2**33, rng.normal(size=(n, 3))
    hist = rng.normal(size=(n, length, 3))
    hist[0, :-1] = np.nan  # one finite history point: a 2-point strip
    hist[1] = np.nan  # none: head only
    pos[2] = np.nan  # not drawn at all
    vis, dyn, conf = rng.random(n) > 0.3, rng.random(n) > 0.5, rng.random(n)
    kw = {"cap": 9, "trail": 4, "scheme": scheme, "scale": 0.02}
    hdr = _stamped_header(frame_id)
    args = (ids, pos, hist, vis, dyn, conf)
    objs = MarkerArray(markers=markers.build_markers(Marker, Point, ColorRGBA, hdr, *args, **kw))
    got = deserialize_message(cdr.marker_array_cdr((hdr.stamp.sec, hdr.stamp.nanosec), frame_id,
                                                   markers.plan_markers(*args, **kw)), MarkerArray)
    assert got == objs and len(got.markers) >= 3


@pytest.mark.parametrize("frame_id", ["", "w", "odom", "st4r_world", "robot/st4r_world"])
@pytest.mark.parametrize("n", [0, 1, 2, 5])
def test_cdr_path_deserialises_to_the_message_objects(frame_id: str, n: int) -> None:
    pytest.importorskip("rclpy", reason="rclpy missing")
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Path as PathMsg
    from rclpy.serialization import deserialize_message

    rng = np.random.default_rng(n)
    stamps = np.stack([1_700_000_000 + np.arange(n), rng.integers(0, 10**9, n)], 1)
    poses = rng.normal(size=(n, 7))
    hdr = _stamped_header(frame_id)
    want = PathMsg(header=hdr)
    for (sec, nsec), p in zip(stamps, poses, strict=True):
        ps = PoseStamped()
        ps.header.stamp, ps.header.frame_id = Time(sec=int(sec), nanosec=int(nsec)), frame_id
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in p[:3])
        o = ps.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in p[3:])
        want.poses.append(ps)
    got = deserialize_message(cdr.path_cdr((hdr.stamp.sec, hdr.stamp.nanosec), frame_id, stamps, poses), PathMsg)
    assert got == want


@pytest.mark.parametrize("offset_ns", [0, 1, 999_999_999, 3_000_000_001, -456_789])  # nanosecond carries both ways
def test_restamped_bytes_are_the_message_with_its_stamp_moved(offset_ns: int) -> None:
    """The live replayer republishes a bag's bytes with only the header stamp moved: rclpy reads back the same
    Image/CameraInfo with the new stamp; bytes that are not CDR are refused."""
    pytest.importorskip("rclpy", reason="rclpy missing")
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image

    img = Image(header=_stamped_header("cam"), height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
    info = CameraInfo(header=_stamped_header("camera_optical"), width=3, height=2, k=[1.0, 0, 1, 0, 1, 1, 0, 0, 1])
    for msg, cls in ((img, Image), (info, CameraInfo)):
        data = serialize_message(msg)
        old = cv.ns_from_stamp(msg.header.stamp)
        assert cdr.header_stamp_ns(data) == old
        moved = deserialize_message(cdr.restamped(data, offset_ns), cls)
        assert cv.ns_from_stamp(moved.header.stamp) == old + offset_ns
        moved.header.stamp = msg.header.stamp
        assert moved == msg
    with pytest.raises(ValueError, match="not a CDR message"):
        cdr.restamped(b"\x07\x07\x00\x00" + bytes(12), 1)
