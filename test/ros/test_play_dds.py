"""st4rtrack-play over real DDS: the player runs as a subprocess, this process subscribes with rclpy.

Each run uses its own ROS_DOMAIN_ID (from the pid) and localhost-only discovery, so parallel runs on one machine do
not see each other; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing (run scripts/setup_env.sh)"
)

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from st4rtrack_ros.data.bag_io import BenchmarkBagWriter  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for, ros_env  # noqa: E402

# rclpy's type-description code imports lark, which imports deprecated sre_* modules on Python 3.11.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

_SCRIPT = Path(sys.executable).parent / "st4rtrack-play"  # the console script setup.py registers
PLAY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "st4rtrack_ros.cli.play"]
T0 = 1_700_000_000 * 10**9 + 123_456_789
STEP = 200_000_000  # 5 Hz: 6 frames span 1.0 s of bag time
N_FRAMES = 6
DOMAIN = domain_id_for()
RUN_TIMEOUT = 20.0


@dataclass
class Recorded:
    """The frames written to the bag, for comparison."""

    path: Path
    stamps: list[int]
    images: list[np.ndarray]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("play_dds") / "bag"
    k = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])
    stamps = [T0 + i * STEP for i in range(N_FRAMES)]
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in stamps]
    with BenchmarkBagWriter(path) as w:
        for s, img in zip(stamps, images, strict=True):
            w.write_frame(s, img, k, depth=rng.random((24, 32), dtype=np.float32), pose=np.eye(4))
    return Recorded(path, stamps, images)


@dataclass
class Inbox:
    """Messages received per topic, with their arrival times (monotonic seconds)."""

    msgs: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)

    def callback(self, topic: str) -> Callable[[Any], None]:
        self.msgs.setdefault(topic, [])
        return lambda msg: self.msgs[topic].append((time.monotonic(), msg))

    def count(self, topic: str) -> int:
        return len(self.msgs.get(topic, []))


class Listener:
    """An rclpy node in its own context, spun from the test thread."""

    def __init__(self, tmp: Path) -> None:
        self._mp = pytest.MonkeyPatch()
        self._mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self._mp.setenv("ROS_LOG_DIR", str(tmp / "ros_log_test"))
        self._mp.delenv("ROS_STATIC_PEERS", raising=False)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN)
        self.node = rclpy.create_node(f"play_listener_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.inbox = Inbox()

    def subscribe(self, msg_type: type, topic: str, reliable: bool = True) -> None:
        rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=100, reliability=rel)
        self.node.create_subscription(msg_type, topic, self.inbox.callback(topic), qos)

    def run(
        self, args: list[str], tmp: Path, done: Callable[[], bool], on_spin: Callable[[], None] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the player until it exits, spinning meanwhile; then spin until ``done`` (at most 2 s more)."""
        env = ros_env(domain_id=DOMAIN, localhost_only=True, log_dir=tmp / "ros_log_play")
        proc = subprocess.Popen([*PLAY, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + RUN_TIMEOUT
        try:
            while proc.poll() is None and time.monotonic() < end:
                self.executor.spin_once(timeout_sec=0.01)
                if on_spin is not None:
                    on_spin()
            if proc.poll() is None:
                proc.kill()
                out, err = proc.communicate(timeout=5)
                pytest.fail(f"st4rtrack-play did not finish in {RUN_TIMEOUT} s:\n{err}")
            grace = time.monotonic() + 2.0
            while not done() and time.monotonic() < grace:
                self.executor.spin_once(timeout_sec=0.01)
            out, err = proc.communicate(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._mp.undo()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    lis = Listener(tmp_path)
    yield lis
    lis.close()


def _stamp_ns(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _image_span(lis: Listener) -> float:
    arrivals = [t for t, _ in lis.inbox.msgs["/camera/image_raw"]]
    return arrivals[-1] - arrivals[0]


def test_play_delivers_every_frame_with_stamps_content_and_clock(
    bag: Recorded, listener: Listener, tmp_path: Path
) -> None:
    listener.subscribe(Image, "/camera/image_raw")
    listener.subscribe(CameraInfo, "/camera/camera_info")
    listener.subscribe(Clock, "/clock", reliable=False)  # as rclpy's TimeSource subscribes
    inbox = listener.inbox
    args = [
        str(bag.path),
        "--clock",
        "50",
        "--wait-for-subscribers",
        "10",
        "--topics",
        "/camera/image_raw",
        "/camera/camera_info",
    ]
    res = listener.run(
        args,
        tmp_path,
        done=lambda: inbox.count("/camera/image_raw") == N_FRAMES and inbox.count("/camera/camera_info") == N_FRAMES,
    )
    assert res.returncode == 0, res.stderr
    assert f"frames {N_FRAMES}/{N_FRAMES}" in res.stderr

    images = [msg for _, msg in inbox.msgs["/camera/image_raw"]]
    assert [_stamp_ns(x) for x in images] == bag.stamps
    for msg, expected in zip(images, bag.images, strict=True):
        assert (msg.width, msg.height, msg.encoding, msg.step) == (32, 24, "rgb8", 32 * 3)
        assert msg.header.frame_id == "camera_optical_frame"
        np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(24, 32, 3), expected)
    infos = [msg for _, msg in inbox.msgs["/camera/camera_info"]]
    assert [_stamp_ns(x) for x in infos] == bag.stamps
    assert infos[0].k[0] == pytest.approx(30.0)
    assert "/gt/depth" not in inbox.msgs  # --topics left it out

    clock = [msg.clock.sec * 10**9 + msg.clock.nanosec for _, msg in inbox.msgs["/clock"]]
    assert len(clock) >= 10, "expected /clock ticks at 50 Hz over 1 s of playback"
    assert clock == sorted(clock)
    assert bag.stamps[0] <= clock[0] and clock[-1] == bag.stamps[-1]
    # real time at rate 1: 1.0 s between the first and the last frame (loose bounds for loaded CI machines)
    assert 0.8 < _image_span(listener) < 1.8


def test_play_rate_two_takes_about_half_the_time(bag: Recorded, listener: Listener, tmp_path: Path) -> None:
    listener.subscribe(Image, "/camera/image_raw")
    inbox = listener.inbox
    args = [str(bag.path), "--rate", "2", "--wait-for-subscribers", "10", "--topics", "/camera/image_raw", "-q"]
    res = listener.run(args, tmp_path, done=lambda: inbox.count("/camera/image_raw") == N_FRAMES)
    assert res.returncode == 0, res.stderr
    assert [_stamp_ns(m) for _, m in inbox.msgs["/camera/image_raw"]] == bag.stamps
    assert 0.35 < _image_span(listener) < 0.85  # 0.5 s expected


def test_play_sensor_qos_is_best_effort(bag: Recorded, listener: Listener, tmp_path: Path) -> None:
    listener.subscribe(Image, "/camera/image_raw", reliable=False)
    inbox = listener.inbox
    seen: list[Any] = []

    def look_at_publisher() -> None:
        if not seen and inbox.count("/camera/image_raw"):
            seen.extend(listener.node.get_publishers_info_by_topic("/camera/image_raw"))

    args = [
        str(bag.path),
        "--qos-profile",
        "sensor",
        "--wait-for-subscribers",
        "10",
        "--topics",
        "/camera/image_raw",
        "-q",
    ]
    res = listener.run(
        args, tmp_path, done=lambda: inbox.count("/camera/image_raw") == N_FRAMES, on_spin=look_at_publisher
    )
    assert res.returncode == 0, res.stderr
    assert inbox.count("/camera/image_raw") >= 1
    assert seen and seen[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def test_play_loop_ends_cleanly_on_sigint(bag: Recorded, tmp_path: Path) -> None:
    env = ros_env(domain_id=DOMAIN, localhost_only=True, log_dir=tmp_path / "ros_log")
    proc = subprocess.Popen(
        [*PLAY, str(bag.path), "--loop", "--rate", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)  # start-up (< 1 s) and then passes of 0.25 s each
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "loop 2" in err
    assert "Traceback" not in err


def test_play_reports_bad_input(tmp_path: Path, bag: Recorded) -> None:
    env = ros_env(domain_id=DOMAIN, localhost_only=True, log_dir=tmp_path / "ros_log")
    res = subprocess.run([*PLAY, str(tmp_path / "missing")], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = subprocess.run(
        [*PLAY, str(bag.path), "--topics", "/nope"], env=env, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2 and "/nope" in res.stderr


def test_play_start_paused_waits_for_sigusr1(bag: Recorded, tmp_path: Path) -> None:
    env = ros_env(domain_id=DOMAIN, localhost_only=True, log_dir=tmp_path / "ros_log")
    proc = subprocess.Popen(
        [*PLAY, str(bag.path), "--start-paused", "--rate", "8", "--topics", "/camera/image_raw"],
        env=env,
        stdin=subprocess.DEVNULL,  # end of file must not count as Enter
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, err
    assert "paused" in err and f"frames {N_FRAMES}/{N_FRAMES}" in err
