"""Property tests of what the node publishes from arbitrary tracker output: PointCloud2 and MarkerArray stay
well-formed (sizes consistent, caps respected, no NaN/Inf) for random point counts (incl. 0), NaN/Inf values and
colours; and the per-cause fault log counts everything but logs each cause at most once per period."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from st4rtrack_ros.data.messages import cloud_to_structured
from st4rtrack_ros.ros import cdr, markers
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros.faults import FaultLog

FAST = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

#: floats as a network or a map may produce them: ordinary, huge, NaN, ±Inf
_VALUES = st.one_of(st.floats(-1e3, 1e3, width=32), st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0]))


def _field(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**kw)


@FAST
@given(st.integers(0, 300).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float32, (n, 3), elements=_VALUES),
    st.one_of(st.none(), hnp.arrays(np.uint8, (n, 3))),
    st.one_of(st.none(), hnp.arrays(np.float32, n, elements=_VALUES)))),
    st.integers(0, 400))
def test_cloud_is_dense_capped_and_consistent(arrays: tuple, cap: int) -> None:
    pts, cols, conf = arrays
    cloud = cv.cloud_array(cv.to_rep103_points(pts), cols, conf, cap)
    msg = cv.fill_cloud(SimpleNamespace(), _field, cloud)
    finite = np.isfinite(pts).all(1) & (np.ones(len(pts), bool) if conf is None else np.isfinite(conf))
    assert msg.width == len(cloud) == min(int(finite.sum()), cap) and msg.height == 1
    assert msg.point_step == 20 and msg.row_step == 20 * msg.width == len(msg.data) and msg.is_dense
    back = cloud_to_structured(_field(fields=msg.fields, is_bigendian=False, point_step=msg.point_step,
                                      row_step=msg.row_step, width=msg.width, height=1, data=msg.data))
    xyz = np.stack([back["x"], back["y"], back["z"]], 1)
    assert np.isfinite(xyz).all() and np.isfinite(back["confidence"]).all()
    if cols is not None and msg.width:  # every colour is one of a kept point's, packed 0x00RRGGBB
        rgb = back["rgb"].view(np.uint32)
        assert (rgb >> 24 == 0).all()
        assert set(rgb.tolist()) <= set(cv.pack_rgb(cols[finite]).view(np.uint32).tolist())


class _Marker:
    def __init__(self) -> None:
        self.header = None
        self.ns, self.id, self.type, self.action = "", 0, 0, 0
        self.pose = _field(orientation=_field(w=0.0))
        self.scale = _field(x=0.0, y=0.0, z=0.0)
        self.color = _field(r=0.0, g=0.0, b=0.0, a=0.0)
        self.points: list = []
        self.colors: list = []


@st.composite
def track_sets(draw: st.DrawFn) -> dict:
    n, length = draw(st.integers(0, 40)), draw(st.integers(1, 8))
    return {
        "ids": np.array(draw(st.lists(st.integers(0, 2**31 - 2), min_size=n, max_size=n, unique=True)), np.int64),
        "positions": draw(hnp.arrays(np.float64, (n, 3), elements=_VALUES)),
        "history": draw(hnp.arrays(np.float64, (n, length, 3), elements=_VALUES)),
        "visible": draw(hnp.arrays(bool, n)), "dynamic": draw(hnp.arrays(bool, n)),
        "confidence": draw(hnp.arrays(np.float32, n, elements=_VALUES)),
    }


@FAST
@given(track_sets(), st.integers(0, 50), st.integers(1, 10), st.sampled_from(["id", "state"]),
       st.floats(1e-4, 1.0))
def test_markers_are_well_formed_for_any_tracks(t: dict, cap: int, trail: int, scheme: str, scale: float) -> None:
    ms = markers.build_markers(_Marker, lambda: _field(x=0, y=0, z=0), lambda: _field(r=0, g=0, b=0, a=0), "hdr",
                          t["ids"], t["positions"], t["history"], t["visible"], t["dynamic"], t["confidence"],
                          cap=cap, trail=trail, scheme=scheme, scale=scale)
    assert ms[0].action == markers.DELETEALL
    heads = ms[-1]
    assert heads.type == markers.SPHERE_LIST and (heads.ns, heads.id) == ("heads", 0)
    strips = ms[1:-1]
    drawn = min(cap, len(t["ids"]))
    assert len(heads.points) == len(heads.colors) <= drawn and len(strips) <= len(heads.points)
    keys = [(m.ns, m.id) for m in ms[1:]]
    assert len(keys) == len(set(keys))
    for m in ms[1:]:
        assert all(np.isfinite([p.x, p.y, p.z]).all() for p in m.points)
    for m in strips:
        assert m.type == markers.LINE_STRIP and 2 <= len(m.points) <= trail and m.ns == "tracks"
        assert 0 <= m.color.a <= 1 and m.scale.x > 0
    assert all(0 <= c.a <= 1 for c in heads.colors)


@FAST
@given(track_sets(), st.integers(0, 50), st.integers(1, 10), st.sampled_from(["id", "state"]))
def test_marker_bytes_are_the_marker_objects_for_any_tracks(t: dict, cap: int, trail: int, scheme: str) -> None:
    """The node publishes MarkerArray as CDR bytes: for any tracks (NaN/Inf, caps, short trails) rclpy reads them
    back as exactly the messages the object builder makes."""
    pytest.importorskip("rclpy", reason="rclpy missing")
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import ColorRGBA, Header
    from visualization_msgs.msg import Marker, MarkerArray

    if not cdr.cdr_layout_matches("visualization_msgs/Marker", Marker):
        pytest.skip("this ROS has another Marker definition: the node publishes message objects")
    hdr = Header(frame_id="st4r_world")
    hdr.stamp.sec, hdr.stamp.nanosec = 7, 9
    args = (t["ids"], t["positions"], t["history"], t["visible"], t["dynamic"], t["confidence"])
    kw = {"cap": cap, "trail": trail, "scheme": scheme, "scale": 0.01}
    objs = MarkerArray(markers=markers.build_markers(Marker, Point, ColorRGBA, hdr, *args, **kw))
    got = deserialize_message(cdr.marker_array_cdr((7, 9), "st4r_world", markers.plan_markers(*args, **kw)),
                              MarkerArray)
    assert got == objs


def test_fault_log_counts_everything_and_logs_each_cause_once_per_period() -> None:
    now = [0.0]
    log = FaultLog(period_s=5.0, clock=lambda: now[0])
    assert log.add("image.step_mismatch") == 0  # first one: log it
    assert log.add("image.step_mismatch") is None  # same cause within the period: quiet
    assert log.add("depth.units") == 0  # another cause is not hidden by the first
    now[0] = 4.9
    assert log.add("image.step_mismatch") is None
    now[0] = 5.1
    assert log.add("image.step_mismatch") == 2  # logs again, saying two were not logged
    assert log.add("image.step_mismatch") is None
    assert log.snapshot() == {"depth.units": 1, "image.step_mismatch": 5}
