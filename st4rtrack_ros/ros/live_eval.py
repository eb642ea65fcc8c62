"""`st4rtrack-eval --live BAG --out DIR`: replay a bag into a running node over DDS and measure what comes back.

The node is a separate process (started here with ``--start-node``, or already running). This process publishes the
bag's camera topics (``st4rtrack-play``'s timing loop, :func:`~st4rtrack_ros.ros.play.play_once`) and records the
node's outputs. Same machine, so latency is the wall time (monotonic clock) of the ``~/status`` receipt minus the
time the image with that stamp was published — status is the node's last output of a frame, so this covers every
topic. Inputs with no output are drops. With ``--duration`` the bag loops with stamps shifted forward, so a long run
measures steady state rather than tracker resets.

The command line is ``cli/eval.py`` (``live_main``); the demo and the DDS tests reuse :class:`NodeProcess`,
:class:`OutputRecorder` and :func:`replay`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from st4rtrack_ros.data.bag_format import MSG_CAMERA_INFO, MSG_COMPRESSED, MSG_IMAGE, Topics
from st4rtrack_ros.ros import cdr
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros.env import PARENT_PID_ENV, ros_env
from st4rtrack_ros.ros.play import BagMessage, BagSource, message_class, play_once

NODE_NS = "/st4rtrack"
_NODE_SCRIPT = Path(sys.executable).parent / "st4rtrack-node"
NODE_CMD = [str(_NODE_SCRIPT)] if _NODE_SCRIPT.exists() else [sys.executable, "-m", "st4rtrack_ros.ros.node"]
REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """The tracker node as a subprocess with its own domain id and log directory; SIGINT on stop."""

    def __init__(self, params: dict[str, Any], *, domain_id: int, log_dir: Path,
                 params_file: Path | None = None, extra_args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        """``params`` become ``-p name:=value`` after ``--params-file`` (default: the package's tracker.yaml);
        ``env``: extra environment variables (e.g. PYTHONPATH of another checkout, for before/after benchmarks)."""
        from st4rtrack_ros.ros.params import defaults_file

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pf = params_file or defaults_file()
        args = [*NODE_CMD, "--ros-args", "--params-file", str(pf)]
        for k, v in params.items():
            val = ("true" if v else "false") if isinstance(v, bool) else str(v) or "''"  # rcl refuses `name:=`
            args += ["-p", f"{k}:={val}"]
        args += list(extra_args)
        self.args = args
        self.log_path = self.log_dir / "node.log"
        self._log = open(self.log_path, "w")  # closed in stop()
        full_env = ros_env(domain_id=domain_id, localhost_only=True, log_dir=self.log_dir / "ros")
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env[PARENT_PID_ENV] = str(os.getpid())  # the node stops if this process dies without stop()
        self.proc = subprocess.Popen(args, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


@dataclass
class Inbox:
    """Per topic: (monotonic receipt time, message) in arrival order."""

    msgs: dict[str, list[tuple[float, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, topic: str, msg: Any) -> None:
        t = time.monotonic()
        with self.lock:
            self.msgs.setdefault(topic, []).append((t, msg))

    def get(self, topic: str) -> list[tuple[float, Any]]:
        with self.lock:
            return list(self.msgs.get(topic, []))

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.msgs.get(topic, []))


#: output topic (relative to the node namespace) → message type name.
OUTPUTS = {
    "points": "sensor_msgs/msg/PointCloud2", "map": "sensor_msgs/msg/PointCloud2",
    "tracks": "st4rtrack_ros/msg/Track3DArray", "track_markers": "visualization_msgs/msg/MarkerArray",
    "camera_pose": "geometry_msgs/msg/PoseStamped", "path": "nav_msgs/msg/Path",
    "status": "st4rtrack_ros/msg/TrackerStatus",
}


class OutputRecorder:
    """An rclpy node in its own context, spun in a background thread: subscribes to the node's outputs and
    publishes camera topics for :func:`replay`."""

    def __init__(self, domain_id: int, *, node_ns: str = NODE_NS, outputs: Sequence[str] = tuple(OUTPUTS),
                 diagnostics: bool = True, name: str = "st4rtrack_recorder", raw: Sequence[str] = ()) -> None:
        """``raw``: outputs received as serialised bytes, not deserialised into Python objects (a benchmark
        that only counts them keeps the recorder's CPU off the 2 cores it shares with the node; every byte still
        crosses DDS)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.inbox = Inbox()
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.node_ns = node_ns.rstrip("/")
        for out in outputs:
            topic = f"{self.node_ns}/{out}"
            self.node.create_subscription(message_class(OUTPUTS[out]), topic,
                                          lambda m, t=topic: self.inbox.add(t, m), qos, raw=out in raw)
        if diagnostics:
            from diagnostic_msgs.msg import DiagnosticArray

            self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                          lambda m: self.inbox.add("/diagnostics", m), qos)
        self.pubs: dict[str, Any] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True, name="recorder-spin")
        self._thread.start()

    def topic(self, out: str) -> str:
        return f"{self.node_ns}/{out}"

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down underneath
                break

    def publisher(self, topic: str, msg_type: type, reliable: bool = True, depth: int = 10) -> Any:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        if topic not in self.pubs:
            rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
            self.pubs[topic] = self.node.create_publisher(msg_type, topic, QoSProfile(depth=depth, reliability=rel))
        return self.pubs[topic]

    def wait_for(self, cond: Any, timeout: float) -> bool:
        """Poll ``cond()`` until true or ``timeout`` s pass."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.02)
        return bool(cond())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


@dataclass(frozen=True)
class _Shifted(BagMessage):
    offset_ns: int = 0  # added to the header stamp (looped passes)


class _StampingSink:
    """Publishes camera messages with shifted stamps and notes the send time of every image stamp. The bag's bytes
    go out as they are, only the header stamp patched (``cdr.restamped``), as a C++ camera driver or ``ros2 bag
    play`` costs: no Python message objects on the 2 cores the node uses."""

    def __init__(self, rec: OutputRecorder, types: dict[str, str], reliable: bool, image_topic: str) -> None:
        self.types, self.image_topic = types, image_topic  # only the camera image is timed (depth shares its stamps)
        self.classes = {t: message_class(ty) for t, ty in types.items()}
        self.pubs = {t: rec.publisher(t, self.classes[t], reliable) for t in types}
        self.sent: dict[int, float] = {}
        self.order: list[int] = []
        self.bag_stamp: dict[int, int] = {}  # sent image stamp → the stamp it has in the bag (loops are shifted)

    def publish(self, msg: BagMessage) -> None:
        off = getattr(msg, "offset_ns", 0)
        data = cdr.restamped(msg.cdr, off) if off else msg.cdr
        if msg.topic == self.image_topic:
            stamp = cdr.header_stamp_ns(data)
            self.sent[stamp] = time.monotonic()
            self.order.append(stamp)
            self.bag_stamp[stamp] = stamp - off
        self.pubs[msg.topic].publish(data)

    def clock(self, bag_time_ns: int) -> None:
        """No /clock: the node runs on wall time here."""


def camera_topics(source: BagSource, image_topic: str | None = None, depth: bool = False) -> dict[str, str]:
    """The bag's image topic (given or the frame topic) and its CameraInfo topic(s); with ``depth`` also its aligned
    depth images (the benchmark format's ``/gt/depth``, as an RGB-D camera's depth topic)."""
    img = image_topic or source.frame_topic
    if img is None or img not in source.types:
        raise ValueError(f"{source.path}: no camera image topic")
    out = {img: source.types[img]}
    out.update({t: ty for t, ty in source.types.items() if ty == MSG_CAMERA_INFO})
    if depth:
        if Topics().gt_depth not in source.types:
            raise ValueError(f"{source.path}: no depth images ({Topics().gt_depth})")
        out[Topics().gt_depth] = source.types[Topics().gt_depth]
    return out


def node_inputs_for_bag(bag: Path, image_topic: str | None = None, depth: bool = False) -> dict[str, Any]:
    """The node's input parameters that match the bag's camera topics: a bag with only compressed images starts the
    node on ``<image>/compressed``; a bag without CameraInfo starts it without one (K estimated); with ``depth`` the
    node subscribes the bag's depth images as an RGB-D camera's."""
    source = BagSource(bag)
    try:
        types = camera_topics(source, image_topic, depth)
    finally:
        source.close()
    img = next(t for t, ty in types.items() if ty in (MSG_IMAGE, MSG_COMPRESSED))
    compressed = types[img] == MSG_COMPRESSED
    info = sorted(t for t, ty in types.items() if ty == MSG_CAMERA_INFO)
    return {"ros.image_topic": img.removesuffix("/compressed") if compressed else img, "ros.compressed": compressed,
            "ros.camera_info_topic": info[0] if info else "", "ros.depth_topic": Topics().gt_depth if depth else ""}


def bag_fps(source: BagSource, topic: str) -> float:
    """Frame rate of ``topic`` from its log times."""
    times = [m.log_time_ns for m in source.messages(only=topic)]
    return (len(times) - 1) / ((times[-1] - times[0]) / 1e9) if len(times) > 1 and times[-1] > times[0] else 10.0


def _looped(source: BagSource, topics: Sequence[str], duration_s: float | None, fps: float) -> Iterator[BagMessage]:
    """The camera messages, once (duration None) or looped with stamps and log times shifted until duration_s."""
    first = last = None
    for m in source.messages():
        if m.topic in topics:
            first = m.log_time_ns if first is None else first
            last = m.log_time_ns
    if first is None or last is None:
        return
    span = last - first + int(1e9 / fps)
    loop = 0
    while True:
        off = loop * span
        for m in source.messages():
            if m.topic not in topics:
                continue
            if duration_s is not None and (m.log_time_ns + off - first) / 1e9 > duration_s:
                return
            yield _Shifted(m.topic, m.msgtype, m.log_time_ns + off, m.cdr, off)
        loop += 1
        if duration_s is None:
            return


def replay(rec: OutputRecorder, bag: Path, *, hz: float | None = None, rate: float = 1.0,
           duration_s: float | None = None, image_topic: str | None = None, reliable: bool = True,
           wait_subscribers_s: float = 20.0, stop: threading.Event | None = None, depth: bool = False
           ) -> _StampingSink:
    """Publish the bag's camera topics from ``rec``'s node at the bag timing × ``rate`` (or at ``hz`` frames/s);
    returns the sink with the send time of every image stamp. ``depth``: the bag's depth images go out too."""
    source = BagSource(bag)
    try:
        types = camera_topics(source, image_topic, depth)
        img = next(t for t, ty in types.items() if ty in (MSG_IMAGE, MSG_COMPRESSED))
        fps = bag_fps(source, img)
        if hz is not None:
            rate = hz / fps
        sink = _StampingSink(rec, types, reliable, img)
        end = time.monotonic() + wait_subscribers_s
        while sink.pubs[img].get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        if sink.pubs[img].get_subscription_count() == 0:
            raise TimeoutError(f"nothing subscribed to {img} within {wait_subscribers_s:g} s (is the node running "
                               "with the same ROS_DOMAIN_ID?)")
        time.sleep(0.5)  # let discovery settle in both directions before the first frame
        bag_span = None if duration_s is None else duration_s * rate  # duration is wall time; the loop counts bag time
        play_once(_looped(source, list(types), bag_span, fps), sink, rate=rate, stop=stop)
        return sink
    finally:
        source.close()


@dataclass
class LiveStats:
    """What a live run measured."""

    frames_sent: int
    frames_out: int
    dropped: int
    latency_ms: np.ndarray  # per output, in send order
    input_hz: float
    output_hz: float
    wall_s: float
    node_latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the node's own receipt → publish

    def summary(self) -> dict[str, Any]:
        lat = self.latency_ms
        third = max(len(lat) // 3, 1)

        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) if len(a) else None

        return {
            "frames_sent": self.frames_sent, "frames_out": self.frames_out, "dropped": self.dropped,
            "drop_fraction": self.dropped / max(self.frames_sent, 1),
            "latency_p50_ms": pct(lat, 50), "latency_p95_ms": pct(lat, 95), "latency_max_ms": pct(lat, 100),
            "latency_p50_first_third_ms": pct(lat[:third], 50), "latency_p50_last_third_ms": pct(lat[-third:], 50),
            "node_latency_p50_ms": pct(self.node_latency_ms, 50), "node_latency_p95_ms": pct(self.node_latency_ms, 95),
            "input_hz": self.input_hz, "output_hz": self.output_hz, "wall_s": self.wall_s,
        }


def live_stats(sink: _StampingSink, rec: OutputRecorder, wall_s: float) -> LiveStats:
    """Match ~/status receipts to send times by stamp."""
    got: dict[int, float] = {}
    for t, m in rec.inbox.get(rec.topic("status")):
        got.setdefault(cv.ns_from_stamp(m.header.stamp), t)
    lat = [1e3 * (got[s] - sink.sent[s]) for s in sink.order if s in got]
    times = sorted(got.values())
    out_hz = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    sends = sorted(sink.sent.values())
    in_hz = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else 0.0
    n_out = sum(1 for s in sink.order if s in got)
    node_lat = np.array([m.latency_ms for _, m in rec.inbox.get(rec.topic("status"))])
    return LiveStats(len(sink.order), n_out, len(sink.order) - n_out, np.array(lat), in_hz, out_hz, wall_s, node_lat)
