"""st4rtrack-play without DDS: bag reading in log-time order, type lookup, and the timing loop on a fake clock."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from st4rtrack_ros.cli.play import build_parser
from st4rtrack_ros.data.bag_io import BenchmarkBagWriter
from st4rtrack_ros.data.messages import TrackSample
from st4rtrack_ros.ros.play import BagMessage, BagSource, message_class, play_once

T0 = 1_700_000_000 * 10**9
STEP = 100_000_000  # 10 Hz


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 16x12 frames with camera info, pose and tracks: five topics interleaved by log time."""
    path = tmp_path_factory.mktemp("play_sched") / "bag"
    rng = np.random.default_rng(0)
    k = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    with BenchmarkBagWriter(path) as w:
        for i in range(4):
            tracks = TrackSample(
                np.arange(3, dtype=np.uint32), rng.random((3, 3), dtype=np.float32), np.ones(3, bool), None
            )
            w.write_frame(
                T0 + i * STEP,
                rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
                k,
                depth=rng.random((12, 16), dtype=np.float32),
                pose=np.eye(4),
                tracks=tracks,
            )
    return path


class FakeTime:
    """A monotonic clock that only moves when the player waits, so timing is exact and instant."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


class FakeStop(threading.Event):
    """stop.wait(dt) advances the fake clock instead of sleeping."""

    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.t += timeout or 0.0
        return self.is_set()


class Recorder:
    """Sink that records (wall time, topic / clock value)."""

    def __init__(self, clock: FakeTime) -> None:
        self.time = clock
        self.msgs: list[tuple[float, BagMessage]] = []
        self.ticks: list[tuple[float, int]] = []

    def publish(self, msg: BagMessage) -> None:
        self.msgs.append((self.time.t, msg))

    def clock(self, bag_time_ns: int) -> None:
        self.ticks.append((self.time.t, bag_time_ns))


def _msgs(times_ms: list[int], topic: str = "/a") -> list[BagMessage]:
    return [BagMessage(topic, "std_msgs/msg/Empty", T0 + t * 10**6, b"") for t in times_ms]


def test_source_yields_all_topics_in_log_time_order(small_bag: Path) -> None:
    src = BagSource(small_bag)
    try:
        msgs = list(src.messages())
        assert len(msgs) == src.total == 4 * 5
        assert src.frame_topic == "/camera/image_raw"
        assert src.counts["/camera/image_raw"] == 4
        times = [x.log_time_ns for x in msgs]
        assert times == sorted(times)
        assert {x.topic for x in msgs[:5]} == set(src.types)  # the first frame's five topics come first
        assert all(x.cdr[:2] == b"\x00\x01" for x in msgs)  # CDR little-endian encapsulation header
        again = [x.log_time_ns for x in src.messages()]  # re-iterable for --loop
        assert again == times
    finally:
        src.close()


def test_source_topic_selection_and_errors(small_bag: Path) -> None:
    src = BagSource(small_bag, ["/camera/image_raw", "/gt/camera_pose"])
    try:
        assert set(src.types) == {"/camera/image_raw", "/gt/camera_pose"}
        assert src.total == 8
        assert [x.topic for x in src.messages(only="/gt/camera_pose")] == ["/gt/camera_pose"] * 4
        assert all(x.topic == "/camera/image_raw" for x in src.messages(skip=frozenset({"/gt/camera_pose"})))
    finally:
        src.close()
    with pytest.raises(ValueError, match="/nope"):
        BagSource(small_bag, ["/nope"])


def test_message_class_lookup() -> None:
    pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message wheels not installed (scripts/setup_env.sh)")
    from sensor_msgs.msg import Image

    assert message_class("sensor_msgs/msg/Image") is Image
    assert message_class("sensor_msgs/Image") is Image
    with pytest.raises(ImportError):
        message_class("no_such_pkg/msg/Thing")
    with pytest.raises(ValueError):
        message_class("Image")


@pytest.mark.parametrize("rate", [1.0, 2.0, 0.5])
def test_play_once_scales_recorded_timing(rate: float) -> None:
    clock = FakeTime()
    stop, sink = FakeStop(clock), Recorder(clock)
    start = clock.t
    offsets_ms = [0, 0, 50, 120, 400]
    n, finished = play_once(iter(_msgs(offsets_ms)), sink, rate=rate, stop=stop, now=clock.now)
    assert (n, finished) == (5, True)
    sent = [t - start for t, _ in sink.msgs]
    np.testing.assert_allclose(sent, np.array(offsets_ms) / 1000 / rate, atol=1e-9)
    assert sink.ticks == []  # no clock unless asked


def test_play_once_clock_ticks_are_periodic_and_monotonic() -> None:
    clock = FakeTime()
    stop, sink = FakeStop(clock), Recorder(clock)
    play_once(iter(_msgs([0, 500, 1000])), sink, rate=2.0, clock_period_s=0.05, stop=stop, now=clock.now)
    values = [v for _, v in sink.ticks]
    assert values == sorted(values)
    assert values[0] == T0 and values[-1] == T0 + 10**9
    # 0.5 s of wall time at 20 Hz, plus one tick at each message: about 10 + 3
    assert 10 <= len(values) <= 16
    # the clock reaches each stamp no later than its message is published
    for t_pub, msg in sink.msgs:
        assert any(v >= msg.log_time_ns and t <= t_pub for t, v in sink.ticks)


def test_play_once_stops_when_asked() -> None:
    clock = FakeTime()
    stop, sink = FakeStop(clock), Recorder(clock)
    msgs = iter(_msgs([0, 100, 10_000_000]))  # the last message is ~3 h later
    original_publish = sink.publish

    def publish_then_stop(msg: BagMessage) -> None:
        original_publish(msg)
        if len(sink.msgs) == 2:
            stop.set()

    sink.publish = publish_then_stop  # type: ignore[method-assign]
    n, finished = play_once(msgs, sink, stop=stop, now=clock.now)
    assert (n, finished) == (2, False)
    assert clock.t - 100.0 < 1.0  # did not wait for the far message


def test_play_once_rejects_bad_rate_and_handles_empty() -> None:
    with pytest.raises(ValueError):
        play_once(iter([]), Recorder(FakeTime()), rate=0)
    assert play_once(iter([]), Recorder(FakeTime())) == (0, True)


def test_parser_defaults() -> None:
    a = build_parser().parse_args(["bag"])
    assert (a.rate, a.loop, a.clock, a.topics, a.qos_profile, a.qos_depth) == (1.0, False, None, None, "reliable", 10)
    a = build_parser().parse_args(["bag", "--clock", "--rate", "2", "--topics", "/a", "/b", "--qos-profile", "sensor"])
    assert (a.clock, a.rate, a.topics, a.qos_profile) == (40.0, 2.0, ["/a", "/b"], "sensor")
