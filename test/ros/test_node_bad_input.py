"""The node's input callbacks on bad input, in-process (rclpy, no DDS traffic needed): each fault gives one
rate-limited log line naming its cause and a per-cause counter in /diagnostics, and the next good frame is tracked.
A stand-in tracker records what reaches it. Also: bad parameters at start-up refuse to start (and `st4rtrack-node`
exits 1), bad run-time updates are refused with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing (run scripts/setup_env.sh)"
)
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")

from rclpy.context import Context  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_test_helpers import wait_until  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from st4rtrack_ros.ros.env import domain_id_for, ros_env  # noqa: E402
from st4rtrack_ros.ros.node import NodeStartError, TrackerNode  # noqa: E402
from st4rtrack_ros.tracking.types import BadInput, FrameInput, StepResult, TrackSet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

W, H = 32, 24
RGB = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
NOW_S = int(time.time()) - 3600  # stamps an hour old: in the past of the node's (wall) clock


class StandInTracker:
    """Records the frames it is given; ``fail`` makes the next step raise."""

    adaptation = None
    device = SimpleNamespace(type="cpu")

    def __init__(self) -> None:
        self.frames: list[FrameInput] = []
        self.resets = 0
        self.fail: Exception | None = None

    def reset(self, reason: str) -> None:
        self.resets += 1

    def step(self, frame: FrameInput) -> StepResult:
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.frames.append(frame)
        empty = TrackSet(np.zeros(0, np.int64), np.zeros((0, 3), np.float32), np.zeros(0, bool),
                         np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, np.int64),
                         np.zeros((0, 1, 3), np.float32))
        return StepResult(frame.stamp_ns, len(self.frames), np.eye(4), True, np.eye(3), np.zeros((2, 2), np.float32),
                          np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), empty,
                          None, None, False, 0, False, 0, {})


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    mp.setenv("ROS_LOG_DIR", str(tmp_path_factory.mktemp("ros_log")))
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(os.getpid() + 53))
    yield ctx
    rclpy.shutdown(context=ctx)
    mp.undo()


def _make(context: Context, **params: Any) -> TrackerNode:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    n = TrackerNode(tracker=StandInTracker(), context=context, parameter_overrides=overrides)
    assert n.bring_up()
    return n


@pytest.fixture
def node(context: Context) -> Iterator[TrackerNode]:
    n = _make(context, **{"ros.camera_info_topic": "/cam/info", "ros.depth_topic": "/cam/depth"})
    yield n
    n.trigger_shutdown()
    n.destroy_node()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    return wait_until(cond, timeout)


def image(sec: int, enc: str = "rgb8", data: bytes | None = None, w: int = W, h: int = H,
          step: int | None = None) -> Image:
    m = Image()
    m.header.stamp.sec, m.header.frame_id = sec, "cam"
    m.width, m.height, m.encoding = w, h, enc
    m.step = w * 3 if step is None else step
    m.data = RGB.tobytes() if data is None else data
    return m


def feed_good(node: TrackerNode, sec: int) -> None:
    """A good frame reaches the tracker (the worker runs in its own thread)."""
    tracker: StandInTracker = node.tracker
    before = len(tracker.frames)
    node.frame_pipeline.on_image(image(sec))
    assert _wait(lambda: len(tracker.frames) > before), "the good frame after the faults was not tracked"


def faults(node: TrackerNode) -> dict[str, int]:
    return node.counters.faults.snapshot()


def test_each_bad_image_is_rejected_counted_and_logged_once_per_cause(node: TrackerNode,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    png = cv2.imencode(".png", RGB)[1].tobytes()
    bad_jpeg = CompressedImage()
    bad_jpeg.header.stamp.sec, bad_jpeg.format, bad_jpeg.data = NOW_S, "jpeg", png[:60]
    cases = {
        "unsupported_encoding": image(NOW_S, "no_such_encoding"),
        "step_mismatch": image(NOW_S, step=W * 3 - 4),
        "truncated": image(NOW_S, data=RGB.tobytes()[:500]),
        "empty": image(NOW_S, data=b""),
        "too_small": image(NOW_S, w=8, h=8, data=bytes(8 * 8 * 3), step=24),
        "corrupt_compressed": bad_jpeg,
        "future_stamp": image(int(time.time()) + 3 * 86400),
    }
    for msg in cases.values():
        node.frame_pipeline.on_image(msg)
    node.frame_pipeline.on_image(cases["step_mismatch"])  # a second one of the same cause: counted, not logged again
    assert faults(node) == {f"image.{c}": 1 + (c == "step_mismatch") for c in cases}
    assert node.counters.rejected == len(cases) + 1 and node.counters.received == len(cases) + 1
    feed_good(node, NOW_S)
    err = capfd.readouterr().err
    for c in cases:
        assert err.count(f"image rejected ({c})") == 1, (c, err)
    assert "step 92 < width*3=96" in err


def test_image_pixel_limit_is_a_runtime_parameter(node: TrackerNode) -> None:
    assert node.set_parameters([Parameter("ros.max_image_pixels", value=W * H - 1)])[0].successful
    node.frame_pipeline.on_image(image(NOW_S))
    assert faults(node) == {"image.too_large": 1}
    assert node.set_parameters([Parameter("ros.max_image_pixels", value=0)])[0].successful  # 0 = no limit
    feed_good(node, NOW_S)


def _info(k: list[float], w: int = W, h: int = H) -> CameraInfo:
    m = CameraInfo()
    m.k, m.width, m.height = [float(v) for v in k], w, h
    return m


def _depth(values: np.ndarray, sec: int, enc: str = "32FC1") -> Image:
    arr = np.ascontiguousarray(values, "<f4" if enc == "32FC1" else "<u2")
    m = Image()
    m.header.stamp.sec = sec
    m.height, m.width, m.encoding, m.step = arr.shape[0], arr.shape[1], enc, arr.shape[1] * arr.itemsize
    m.data = arr.tobytes()
    return m


def test_camera_info_with_zeros_or_nan_is_ignored_and_the_last_good_k_kept(node: TrackerNode) -> None:
    node.frame_pipeline.on_camera_info(_info([0.0] * 9))
    assert node.frame_pipeline.info.latest() is None
    good = [40.0, 0, 16, 0, 40, 12, 0, 0, 1]
    node.frame_pipeline.on_camera_info(_info(good))
    node.frame_pipeline.on_camera_info(_info([float("nan")] * 9))
    k = node.frame_pipeline.info.latest()
    assert k is not None and k[0][0, 0] == 40.0
    assert faults(node) == {"camera_info.invalid": 2}
    feed_good(node, NOW_S)
    assert node.tracker.frames[-1].k is not None
    node.frame_pipeline.on_camera_info(_info(good, 64, 48))  # for another image size: K not used, counted per frame
    feed_good(node, NOW_S + 1)
    assert node.tracker.frames[-1].k is None and faults(node)["camera_info.size_mismatch"] == 1


def test_depth_nan_becomes_holes_wrong_units_and_all_invalid_are_ignored(node: TrackerNode) -> None:
    d = np.full((H, W), 2.0, np.float32)
    d[0, :3] = [np.nan, np.inf, -1.0]
    node.frame_pipeline.on_depth(_depth(d, NOW_S))
    node.frame_pipeline.on_depth(_depth(np.full((H, W), 1500.0), NOW_S + 1))  # millimetres in a 32FC1 image
    node.frame_pipeline.on_depth(_depth(np.full((H, W), np.nan), NOW_S + 2))
    node.frame_pipeline.on_depth(_depth(np.full((H // 2, W // 2), 2.0), NOW_S + 3))  # another resolution
    node.frame_pipeline.on_depth(_depth(np.full((H, W), 1500), NOW_S + 4, "16UC1"))  # correct millimetres
    assert faults(node) == {"depth.units": 1, "depth.all_invalid": 1}
    feed_good(node, NOW_S)
    used = node.tracker.frames[-1].depth
    assert used is not None and np.isfinite(used).all() and (used[0, :3] == 0).all() and used[1, 1] == 2.0
    feed_good(node, NOW_S + 1)
    assert node.tracker.frames[-1].depth is None  # its depth image was refused
    feed_good(node, NOW_S + 3)
    assert node.tracker.frames[-1].depth is None and faults(node)["depth.size_mismatch"] == 1
    feed_good(node, NOW_S + 4)
    assert node.tracker.frames[-1].depth[0, 0] == pytest.approx(1.5)


def test_stamps_backwards_reset_and_size_changes_are_counted(node: TrackerNode) -> None:
    feed_good(node, NOW_S + 10)
    feed_good(node, NOW_S + 5)  # backwards (a looping bag): tracker reset, frame still tracked
    assert node.tracker.resets == 1 and faults(node) == {"stamp.backwards": 1}
    big = np.zeros((H * 2, W * 2, 3), np.uint8)
    node.frame_pipeline.on_image(image(NOW_S + 6, data=big.tobytes(), w=W * 2, h=H * 2, step=W * 6))
    assert _wait(lambda: node.tracker.frames[-1].rgb.shape == (H * 2, W * 2, 3))
    assert faults(node)["image.size_changed"] == 1


def test_tracker_refusals_and_errors_are_counted_and_the_node_goes_on(node: TrackerNode) -> None:
    node.tracker.fail = BadInput("nonfinite_output", "the network returned NaN/Inf")
    node.frame_pipeline.on_image(image(NOW_S))
    assert _wait(lambda: "frame.nonfinite_output" in faults(node))
    node.tracker.fail = RuntimeError("boom")
    node.frame_pipeline.on_image(image(NOW_S + 1))
    assert _wait(lambda: "frame.error" in faults(node))
    feed_good(node, NOW_S + 2)
    assert node.counters.rejected == 2 and node.counters.processed == 1


def test_diagnostics_carry_a_counter_per_cause(node: TrackerNode) -> None:
    node.frame_pipeline.on_image(image(NOW_S, step=10))
    node.frame_pipeline.on_camera_info(_info([0.0] * 9))
    sent: list[Any] = []
    node.pub_diag.publish = sent.append  # type: ignore[method-assign]
    node._publish_diagnostics()
    values = {kv.key: kv.value for kv in sent[0].status[0].values}
    assert values["image.step_mismatch"] == "1" and values["camera_info.invalid"] == "1"
    assert values["frames_rejected"] == "1"


@pytest.mark.parametrize(("name", "value", "why"), [
    ("ros.max_cloud_points", 0, "out of range"),
    ("ros.max_image_pixels", "many", "expecting type 'INTEGER'"),
    ("ros.marker_color", "rainbow", "must be one of"),
    ("ros.max_future_stamp_s", -1.0, "out of range"),
    ("ros.camera_frame", "st4r_world", "must differ"),
])
def test_bad_parameters_refuse_to_start(context: Context, name: str, value: Any, why: str) -> None:
    with pytest.raises(NodeStartError, match=why):
        _make(context, **{name: value})


def test_bad_runtime_updates_are_refused_with_a_reason(node: TrackerNode) -> None:
    bad = node.set_parameters([Parameter("ros.max_image_pixels", value=-5)])[0]
    assert not bad.successful and "ros.max_image_pixels" in bad.reason
    assert not node.set_parameters([Parameter("ros.marker_color", value="rainbow")])[0].successful
    ro = node.set_parameters([Parameter("tracking.window_size", value=4)])[0]
    assert not ro.successful and "structural" in ro.reason and "unconfigured" in ro.reason
    assert node.get_parameter("ros.max_image_pixels").value == 8294400  # unchanged


def _run_node(tmp_path: Path, *params: str) -> subprocess.CompletedProcess[str]:
    from st4rtrack_ros.ros.live_eval import NODE_CMD
    from st4rtrack_ros.ros.params import defaults_file

    args = [*NODE_CMD, "--ros-args", "--params-file", str(defaults_file())]
    for p in params:
        args += ["-p", p]
    env = ros_env(domain_id=domain_id_for(os.getpid() + 71), localhost_only=True, log_dir=tmp_path / "ros")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(sys.platform != "linux", reason="the node's console script is tested on Linux")
def test_node_process_exits_1_on_a_bad_parameter(tmp_path: Path) -> None:
    bad = _run_node(tmp_path, "ros.max_cloud_points:=0")
    assert bad.returncode == 1 and "bad parameter ros.max_cloud_points" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the node's console script is tested on Linux")
def test_a_bad_checkpoint_fails_configure_and_the_node_stays_up(tmp_path: Path) -> None:
    """A lifecycle node: configure fails with the reason, the process stays up (unconfigured) until stopped."""
    from st4rtrack_ros.ros.live_eval import NodeProcess

    cut = tmp_path / "cut.pth"
    cut.write_bytes(b"PK\x03\x04 truncated")
    node = NodeProcess({"model.checkpoint": str(cut), "model.device": "cpu"},
                       domain_id=domain_id_for(os.getpid() + 73), log_dir=tmp_path / "node")
    try:
        assert _wait(lambda: "not active" in node.log(), timeout=60.0), node.log()
        time.sleep(0.5)
        assert node.alive(), node.log()
    finally:
        rc = node.stop()
    out = node.log()
    assert "configure failed" in out and "cut.pth" in out and "truncated" in out and "Traceback" not in out
    assert rc == 0, out
