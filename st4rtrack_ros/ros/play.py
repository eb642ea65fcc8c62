"""`st4rtrack-play`: publish a benchmark bag over ROS 2 with its recorded timing, for machines without `ros2 bag play`.

rosbag2 stores messages as CDR, which is exactly what rmw sends, so each message is published as its raw bytes
(``Publisher.publish(bytes)``) without a Python round trip; ROS 1 bags are converted to CDR with the rosbags
typestore first. Messages of all selected topics go out in log-time order, each at
``start + (log_time - first_log_time) / rate``; ``--clock`` adds rosgraph_msgs/Clock on /clock carrying that bag
time, so nodes with ``use_sim_time`` follow the bag. The timing loop (:func:`play_once`) knows nothing of rclpy,
so it is tested without DDS.
The command line (parser, signals, rclpy set-up) is ``cli/play.py``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection

from st4rtrack_ros.data import messages as m
from st4rtrack_ros.data.bag_format import MSG_COMPRESSED, MSG_IMAGE, Topics

PROG = "st4rtrack-play"
CLOCK_TOPIC = "/clock"


@dataclass(frozen=True)
class BagMessage:
    """One message ready to publish: topic, ROS type name, log time and CDR bytes."""

    topic: str
    msgtype: str
    log_time_ns: int
    cdr: bytes


class BagSource:
    """The selected topics of a bag as CDR messages in log-time order; re-iterable (for --loop)."""

    def __init__(self, path: str | Path, topics: Sequence[str] | None = None) -> None:
        """Open the bag (rosbag2 directory, or ROS 1 .bag) and select ``topics`` (default: all)."""
        self.path = Path(path)
        self._reader = AnyReader([self.path], default_typestore=m.default_typestore())
        self._reader.open()
        by_topic: dict[str, list[Connection]] = {}
        for c in self._reader.connections:
            by_topic.setdefault(c.topic, []).append(c)
        if topics:
            missing = [t for t in topics if t not in by_topic]
            if missing:
                self._reader.close()
                raise ValueError(f"{self.path}: no topic(s) {missing}; the bag has {sorted(by_topic)}")
            by_topic = {t: by_topic[t] for t in topics}
        self.connections = [c for conns in by_topic.values() for c in conns]
        #: topic → ROS type name (one type per topic, as rosbag2 requires).
        self.types = {t: conns[0].msgtype for t, conns in by_topic.items()}
        self.counts = {t: sum(c.msgcount for c in conns) for t, conns in by_topic.items()}
        self.total = sum(self.counts.values())
        self.frame_topic = _frame_topic(self.types)
        self._needs_cdr = not self._reader.is2

    def messages(self, skip: frozenset[str] = frozenset(), only: str | None = None) -> Iterator[BagMessage]:
        """Yield the selected messages (minus topics in ``skip``, or just topic ``only``) in log-time order, as CDR."""
        conns = [c for c in self.connections if c.topic not in skip and only in (None, c.topic)]
        if not conns:
            return
        ts = self._reader.typestore
        for conn, log_time, raw in self._reader.messages(connections=conns):
            if self._needs_cdr:  # ROS 1 serialization → CDR via the typestore
                data = ts.serialize_cdr(self._reader.deserialize(raw, conn.msgtype), conn.msgtype)
            else:
                data = raw
            yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(data))

    def close(self) -> None:
        """Close the bag."""
        self._reader.close()


def _frame_topic(types: dict[str, str]) -> str | None:
    """The camera topic whose messages count as frames in the progress line (benchmark defaults first)."""
    t = Topics()
    for name in (t.image, t.compressed):
        if types.get(name) in (MSG_IMAGE, MSG_COMPRESSED):
            return name
    images = sorted(n for n, ty in types.items() if ty in (MSG_IMAGE, MSG_COMPRESSED))
    return images[0] if images else None


class Sink(Protocol):
    """Where :func:`play_once` sends messages and clock ticks (rclpy publishers, or a recorder in tests)."""

    def publish(self, msg: BagMessage) -> None:
        """Publish one bag message."""

    def clock(self, bag_time_ns: int) -> None:
        """Publish the bag time on /clock."""


def play_once(
    messages: Iterator[BagMessage],
    sink: Sink,
    *,
    rate: float = 1.0,
    clock_period_s: float | None = None,
    stop: threading.Event | None = None,
    now: Callable[[], float] = time.monotonic,
    on_message: Callable[[BagMessage], None] | None = None,
) -> tuple[int, bool]:
    """Publish ``messages`` in order, each at its log-time offset divided by ``rate``.

    Between messages the bag time goes out on /clock every ``clock_period_s`` (None: no clock). Returns
    (messages published, finished); finished is False when ``stop`` was set. Waiting uses ``stop.wait`` so a
    Ctrl-C ends the run at once, however long the gap in the bag.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    stop = stop or threading.Event()
    first = next(messages, None)
    if first is None:
        return 0, True
    t0_log = first.log_time_ns
    wall0 = now()
    last_clock = t0_log

    def bag_now() -> int:
        return t0_log + int((now() - wall0) * rate * 1e9)

    def tick(bag_ns: int) -> None:
        nonlocal last_clock
        last_clock = max(last_clock, bag_ns)  # /clock never runs backwards within one pass
        sink.clock(last_clock)

    next_clock = wall0
    count = 0
    msg: BagMessage | None = first
    while msg is not None:
        due = wall0 + (msg.log_time_ns - t0_log) / 1e9 / rate
        while True:
            if stop.is_set():
                return count, False
            t = now()
            if clock_period_s is not None and t >= next_clock:
                tick(min(bag_now(), msg.log_time_ns))
                next_clock = t + clock_period_s
            if t >= due:
                break
            wake = due if clock_period_s is None else min(due, next_clock)
            stop.wait(max(0.0, wake - t))
        if clock_period_s is not None:
            tick(msg.log_time_ns)  # use_sim_time nodes see the clock reach a stamp before its message
        sink.publish(msg)
        count += 1
        if on_message is not None:
            on_message(msg)
        msg = next(messages, None)
    return count, True


def message_class(msgtype: str) -> type:
    """ROS type name ('sensor_msgs/msg/Image' or 'sensor_msgs/Image') → the rclpy message class."""
    parts = msgtype.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        pkg, name = parts[0], parts[2]
    elif len(parts) == 2:
        pkg, name = parts
    else:
        raise ValueError(f"not a message type name: {msgtype!r}")
    module = importlib.import_module(f"{pkg}.msg")
    return getattr(module, name)


class Progress:
    """Frames/messages published so far, on one stderr line refreshed at most ~5 times a second."""

    def __init__(self, source: BagSource, enabled: bool = True) -> None:
        """Track counts against the totals of ``source``."""
        self.enabled = enabled
        self.frame_topic = source.frame_topic
        self.total_frames = source.counts.get(self.frame_topic, 0) if self.frame_topic else 0
        self.total = source.total
        self.frames = self.msgs = 0
        self.loop = 1
        self._last = 0.0

    def start_pass(self, loop: int) -> None:
        """Reset the per-pass counters."""
        self.loop, self.frames, self.msgs = loop, 0, 0

    def __call__(self, msg: BagMessage) -> None:
        """Count a published message."""
        self.msgs += 1
        if msg.topic == self.frame_topic:
            self.frames += 1
        t = time.monotonic()
        if self.enabled and (t - self._last > 0.2 or self.msgs == self.total):
            self._last = t
            self.show()

    def show(self, end: str = "") -> None:
        """Write the progress line."""
        if not self.enabled:
            return
        loop = f"  loop {self.loop}" if self.loop > 1 else ""
        frames = f"frames {self.frames}/{self.total_frames}  " if self.frame_topic else ""
        print(f"\r[{PROG}] {frames}messages {self.msgs}/{self.total}{loop}", end=end, file=sys.stderr, flush=True)


class RclpySink:
    """Publishers for the bag's topics (raw CDR) and /clock."""

    def __init__(self, node: Any, source: BagSource, qos: Any, with_clock: bool) -> None:
        """Create one publisher per topic whose type has a Python message package; others are skipped."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.serialization import deserialize_message

        self.pubs: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        for topic, msgtype in sorted(source.types.items()):
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self.skipped[topic] = f"{msgtype}: no message package ({exc})"
                continue
            first_msgs = source.messages(only=topic)
            first = next(first_msgs, None)
            first_msgs.close()
            if first is not None:  # catch a bag type that differs from the installed one before publishing
                try:
                    deserialize_message(first.cdr, cls)
                except Exception as exc:  # rclpy raises various types for bad CDR
                    self.skipped[topic] = f"{msgtype}: recorded data does not match the installed type ({exc})"
                    continue
            self.pubs[topic] = node.create_publisher(cls, topic, qos)
        self.clock_pub = None
        self._clock_cls = None
        if with_clock:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            # Reliable matches both reliable and best-effort (rclpy's TimeSource) subscribers.
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            self.clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, qos)

    def publish(self, msg: BagMessage) -> None:
        """Publish the CDR bytes as they are."""
        pub = self.pubs.get(msg.topic)
        if pub is not None:
            pub.publish(msg.cdr)

    def clock(self, bag_time_ns: int) -> None:
        """Publish the bag time on /clock."""
        if self.clock_pub is None or self._clock_cls is None:
            return
        c = self._clock_cls()
        c.clock.sec, c.clock.nanosec = divmod(int(bag_time_ns), 10**9)
        self.clock_pub.publish(c)

    def flush(self, timeout_s: float) -> bool:
        """Wait until reliable subscribers acknowledged everything, so exiting right after the last message does
        not lose it (DDS would drop unsent data when the process ends)."""
        from rclpy.duration import Duration

        end = time.monotonic() + timeout_s
        ok = True
        for pub in self.all_publishers():
            left = max(0.0, end - time.monotonic())
            ok = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        return ok

    def all_publishers(self) -> list[Any]:
        """Topic publishers plus the clock publisher."""
        return [*self.pubs.values(), *([self.clock_pub] if self.clock_pub is not None else [])]


def publisher_qos(profile: str, depth: int) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.RELIABLE if profile == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=DurabilityPolicy.VOLATILE
    )


def wait_for_subscribers(sink: RclpySink, timeout: float, stop: threading.Event) -> bool:
    """Wait until every publisher has matched at least one subscription (True) or ``timeout`` passes (False)."""
    end = time.monotonic() + timeout
    pubs = sink.all_publishers()
    while not stop.is_set():
        if all(p.get_subscription_count() > 0 for p in pubs):
            return True
        if time.monotonic() >= end:
            return False
        stop.wait(0.02)
    return False


def resume_on_enter(resume: threading.Event) -> None:
    """Set ``resume`` when a line arrives on stdin; end of file (stdin closed or /dev/null) leaves it paused."""
    try:
        if sys.stdin is not None and sys.stdin.readline():
            resume.set()
    except (OSError, ValueError):
        pass
