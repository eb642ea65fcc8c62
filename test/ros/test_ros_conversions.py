"""Pure conversions of the ROS adapter (no DDS): REP 103 rotation, quaternions, cloud packing, markers, params."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.settings import DEFAULT_CONFIG, load_section
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
    ms = cv.build_markers(_Marker, lambda: _ns(x=0, y=0, z=0), lambda: _ns(r=0, g=0, b=0, a=0), "h", ids, pos,
                          hist, visible, np.zeros(n, bool), np.ones(n), cap=8, trail=4, scheme="id", scale=0.01)
    assert ms[0].action == cv.DELETEALL
    strips = [m for m in ms if m.type == cv.LINE_STRIP]
    heads = [m for m in ms if m.type == cv.SPHERE_LIST]
    assert len(strips) == 8 and len(heads) == 1 and len(heads[0].points) == 8
    keys = [(m.ns, m.id) for m in ms[1:]]
    assert len(set(keys)) == len(keys)
    assert all(len(m.points) == 4 for m in strips)  # trail 4 = the last 3 (finite) history points + the head
    assert all(m.color.a == cv.VISIBLE_ALPHA for m in strips)  # visible ones preferred under the cap


def test_occluded_tracks_look_different() -> None:
    for scheme in ("id", "state"):
        assert cv.track_color(3, True, False, scheme) != cv.track_color(3, False, False, scheme)
        assert cv.track_color(3, False, False, scheme)[3] < 1.0
    assert cv.color_for_id(5) == cv.color_for_id(5)


def test_params_file_covers_schema_and_tracker_config() -> None:
    d = P.defaults()
    assert set(P.SPECS) <= set(d), sorted(set(P.SPECS) - set(d))
    assert TrackerConfig.from_dict(load_section(DEFAULT_CONFIG, "tracking")) == TrackerConfig()
    assert P.unflatten(d, "tracking") == load_section(DEFAULT_CONFIG, "tracking")


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
    from st4rtrack_ros.ros.node import LatestSlot

    s = LatestSlot()
    assert s.put(1) is False and s.put(2) is True
    assert s.take(0.01) == 2 and s.take(0.01) is None
