"""`st4rtrack-node`: the ROS 2 adapter around :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker`.

Threading (why): a camera publishes faster than the tracker may run, and queueing frames only adds latency. So the
input callbacks (one mutually exclusive group) only decode the image and put it into a one-frame slot — a newer
frame replaces an unprocessed one and counts as dropped — and one worker thread runs the tracker on whatever is
newest and publishes. Background adaptation runs in the tracker's own worker (``tracker.adaptation``). Services and
the diagnostics timer have their own groups, so a reset or a parameter change is answered while the tracker works.

Frames (REP 103/105): the tracker's world is the first anchor's optical frame; the node publishes it as
``world_frame`` with REP 103 axes (x forward, y left, z up; conversions.R_REP103_FROM_OPTICAL) and the camera as
``camera_frame`` with optical axes. ``camera_frame`` is the node's own frame (default ``st4r_camera_optical``), never
the robot's camera frame, so /tf never gets a second parent for it.

Every output carries the input image's stamp. Visualisation outputs (points, map, markers, path) are only built when
something subscribes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped, TransformStamped
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from st4rtrack_ros.data.messages import check_depth, check_stamp, depth_from_msg, image_to_rgb, intrinsics_from_msg
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.env import PARENT_PID_ENV
from st4rtrack_ros.ros.faults import FaultLog
from st4rtrack_ros.tracking.types import MIN_SIDE, BadInput, FrameDropped

try:  # built from msg/ by scripts/setup_env.sh or colcon
    from st4rtrack_ros.msg import Track3D, Track3DArray, TrackerStatus
except ImportError:  # pragma: no cover - reported at start-up
    Track3D = Track3DArray = TrackerStatus = None  # type: ignore[assignment,misc]

NODE_NAME = "st4rtrack"
LATENCY_WINDOW = 300  # frames in the diagnostics' latency percentiles
RATE_WINDOW_S = 5.0


class NodeStartError(RuntimeError):
    """The node cannot start (no model, bad parameters); the message says what to do."""


class LatestSlot:
    """A one-item mailbox: ``put`` replaces an untaken item (returns True = one dropped); ``take`` waits."""

    def __init__(self) -> None:
        self._item: Any = None
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        with self._cond:
            dropped = self._item is not None
            self._item = item
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Any:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> bool:
        with self._cond:
            had, self._item = self._item is not None, None
            return had


@dataclass
class _Frame:
    stamp: TimeMsg
    stamp_ns: int
    rgb: np.ndarray
    received: float  # time.monotonic() at receipt


@dataclass
class _Counters:
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    oom_dropped: int = 0  # the tracker ran out of device memory on the frame (FrameDropped)
    faults: FaultLog = field(default_factory=FaultLog)  # bad input by '<source>.<cause>' (/diagnostics)


class _Rate:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self._t: deque[float] = deque(maxlen=1000)

    def tick(self, t: float) -> None:
        self._t.append(t)

    def hz(self, now: float) -> float:
        recent = [t for t in self._t if now - t <= RATE_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def _descriptor(name: str, default: Any) -> ParameterDescriptor:
    spec = P.spec_for(name)
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = f"one of {list(spec.choices)}"
    if isinstance(default, bool) or spec.min is None or spec.max is None:
        return d
    if isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
    elif isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


def _qos_out(depth: int = 5) -> QoSProfile:
    """Outputs: reliable + volatile, what RViz subscribes with by default."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def _header(stamp: TimeMsg, frame_id: str) -> Header:
    h = Header()
    h.stamp, h.frame_id = stamp, frame_id
    return h


def _adaptation_status(adaptation: Any) -> dict[str, Any]:
    """The adaptation worker's status dict, or a neutral one when there is none or it fails."""
    if adaptation is None or not hasattr(adaptation, "status"):
        return {}
    try:
        s = adaptation.status()
        return dict(s) if isinstance(s, dict) else {}
    except Exception:  # a status read must never take the node down
        return {}


def _losses(value: Any) -> tuple[list[str], list[float]]:
    """last_losses as (names, values): accepts a dict, a sequence or None."""
    if isinstance(value, dict):
        return [str(k) for k in value], [float(v) for v in value.values()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [f"loss{i}" for i in range(len(value))], [float(v) for v in value]
    return [], []


class TrackerNode(Node):
    """Subscribes a camera, runs the tracker in a worker, publishes clouds, tracks, markers, pose, TF, status."""

    def __init__(self, tracker: Any = None, **kwargs: Any) -> None:
        """Declare parameters from config/tracker.yaml, build the tracker (unless given), create the interface."""
        super().__init__(NODE_NAME, **kwargs)
        if Track3DArray is None:
            raise NodeStartError("st4rtrack_ros.msg is not importable: run scripts/setup_env.sh (step 'messages') or "
                                 "`colcon build` the msg/ package")
        self._defaults = P.defaults()
        for name, default in self._defaults.items():
            try:
                self.declare_parameter(name, default, _descriptor(name, default))
            except ParameterException as e:  # a -p/--params-file value of the wrong type or out of range
                raise NodeStartError(f"bad parameter {name}: {e}") from e
        self._p = {name: self.get_parameter(name).value for name in self._defaults}
        for name, value in self._p.items():
            why = P.validate(name, value, self._defaults[name])
            if why:
                raise NodeStartError(f"bad parameter: {why}")
        prefix = str(self._p["ros.frame_prefix"])
        self.world_frame = prefix + str(self._p["ros.world_frame"])
        self.camera_frame = prefix + str(self._p["ros.camera_frame"])
        if self.world_frame == self.camera_frame:
            raise NodeStartError("ros.world_frame and ros.camera_frame must differ")

        self.tracker = tracker if tracker is not None else self._build_tracker()
        self._lock = threading.Lock()  # held around tracker.step and reset
        self._slot = LatestSlot()
        self.counters = _Counters()
        self._k: np.ndarray | None = None
        self._k_size: tuple[int, int] | None = None
        self._depth: deque[tuple[int, np.ndarray]] = deque(maxlen=8)
        self._last_stamp_ns: int | None = None
        self._seen_resets = int(getattr(self.tracker, "resets", 0))
        self._pending_reset: str | None = None
        self._path: deque[PoseStamped] = deque(maxlen=int(self._p["ros.max_path_length"]))
        self._last_map = -1e18
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._in_rate, self._out_rate = _Rate(), _Rate()
        self._last_status: dict[str, Any] = {}
        self._size: tuple[int, int] | None = None  # (w, h) of the last processed image

        self._make_inputs()
        self._make_outputs()
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/save_adaptation", self._on_save_adaptation)
        self.create_service(Trigger, "~/revert_adaptation", self._on_revert_adaptation)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self._jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_time_jump)
        self.create_timer(float(self._p["ros.diagnostics_period_s"]), self._publish_diagnostics)
        self._apply_adaptation(bool(self._p["adaptation.enabled"]), startup=True)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="st4rtrack-tracker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: input {self._image_topic} ({'CompressedImage' if self._compressed else 'Image'}, "
            f"{self._p['ros.input_reliability']} depth {self._p['ros.input_depth']}), world frame "
            f"'{self.world_frame}', camera frame '{self.camera_frame}', tf {'on' if self._tf_pub else 'off'}")

    # -- construction ----------------------------------------------------------------------------------------------

    def _build_tracker(self) -> Any:
        import torch

        from st4rtrack_ros.adaptation.persistence import AdaptedCheckpointError
        from st4rtrack_ros.adaptation.worker import AdaptationConfig, AdaptationWorker
        from st4rtrack_ros.model.checkpoint import CheckpointError, load_checkpoint
        from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine
        from st4rtrack_ros.settings import default_checkpoint
        from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

        ckpt = Path(self._p["model.checkpoint"]) if self._p["model.checkpoint"] else default_checkpoint()
        if not ckpt.exists():
            raise NodeStartError(f"model checkpoint {ckpt} does not exist; pass one with "
                                 "`--ros-args -p model.checkpoint:=/path/to/weights.safetensors`"
                                 + (" (the embedded default model is not installed)" if
                                    not self._p["model.checkpoint"] else ""))
        device = torch.device(self._p["model.device"] or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            net = load_checkpoint(ckpt, device=device)
        except CheckpointError as e:
            raise NodeStartError(str(e)) from e
        section = P.unflatten(self._p, "tracking")
        try:
            cfg = TrackerConfig.from_dict(section)
        except (TypeError, ValueError) as e:
            raise NodeStartError(f"bad tracking parameters: {e}") from e
        cfg = dataclasses.replace(cfg, fit=self._p["model.fit"])
        self.get_logger().info(f"model {ckpt} on {device}")
        try:
            adapt_cfg = AdaptationConfig.from_dict(P.unflatten(self._p, "adaptation"))
        except (TypeError, ValueError, KeyError) as e:
            raise NodeStartError(f"bad adaptation parameters: {e}") from e
        try:
            worker = AdaptationWorker(net, adapt_cfg)
        except (FileNotFoundError, ValueError) as e:  # a configured plug-in that is missing or not TorchScript
            raise NodeStartError(f"adaptation: {e}") from e
        self.get_logger().info(f"adaptation pseudo-labels: {worker.label_sources()}")
        if adapt_cfg.resume and adapt_cfg.save_path and Path(adapt_cfg.save_path).exists():
            try:
                worker.load()
                self.get_logger().info(f"adaptation: resumed weights version {worker.version} from "
                                       f"{adapt_cfg.save_path}")
            except AdaptedCheckpointError as e:
                self.get_logger().error(f"adaptation: not resuming: {e}")
        worker.start()
        return OnlineTracker(StreamingEngine(net, EngineOptions.fastest(device)), cfg, worker)

    def _make_inputs(self) -> None:
        rel, depth = P.parse_input_qos(str(self._p["ros.input_reliability"]), int(self._p["ros.input_depth"]))
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.BEST_EFFORT if rel == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        self._compressed = bool(self._p["ros.compressed"])
        topic = str(self._p["ros.image_topic"])
        self._image_topic = P.compressed_topic(topic) if self._compressed else topic
        self.create_subscription(CompressedImage if self._compressed else Image, self._image_topic, self._on_image,
                                 qos)
        if self._p["ros.camera_info_topic"]:
            # CameraInfo is often latched-ish and reliable; best effort subscribers match both kinds of publisher.
            info_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.create_subscription(CameraInfo, str(self._p["ros.camera_info_topic"]), self._on_camera_info,
                                     info_qos)
        if self._p["ros.depth_topic"]:
            self.create_subscription(Image, str(self._p["ros.depth_topic"]), self._on_depth,
                                     QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(depth, 4),
                                                reliability=qos.reliability))

    def _make_outputs(self) -> None:
        q = _qos_out()
        self.pub_points = self.create_publisher(PointCloud2, "~/points", q)
        self.pub_map = self.create_publisher(PointCloud2, "~/map", _qos_out(1))
        self.pub_tracks = self.create_publisher(Track3DArray, "~/tracks", q)
        self.pub_markers = self.create_publisher(MarkerArray, "~/track_markers", q)
        self.pub_pose = self.create_publisher(PoseStamped, "~/camera_pose", q)
        self.pub_path = self.create_publisher(PathMsg, "~/path", _qos_out(1))
        self.pub_status = self.create_publisher(TrackerStatus, "~/status", q)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", _qos_out(10))
        self._tf_pub = None
        self._tf_cls: Any = None
        if self._p["ros.publish_tf"]:
            try:
                from tf2_msgs.msg import TFMessage
            except ImportError:
                self.get_logger().info("tf2_msgs is not installed: no /tf output (pose and path are published)")
            else:
                self._tf_cls = TFMessage
                self._tf_pub = self.create_publisher(TFMessage, "/tf", _qos_out(100))

    # -- callbacks (cheap: decode and hand over) -------------------------------------------------------------------

    def _fault(self, source: str, what: str, cause: str, detail: str, *, frame: bool = False,
               error: bool = False) -> None:
        """Count a fault as '<source>.<cause>' (and as a rejected frame when ``frame``); log it rate-limited per
        cause, e.g. "image rejected (step_mismatch): step 100 < width*3=192 bytes for rgb8"."""
        if frame:
            self.counters.rejected += 1
        quiet = self.counters.faults.add(f"{source}.{cause}")
        if quiet is not None:
            more = f" ({quiet} more since the last report)" if quiet else ""
            line = f"{source} {what} ({cause}): {detail}{more}"
            if error:  # two call sites: rclpy refuses a severity change at one site ("cannot be changed")
                self.get_logger().error(line)
            else:
                self.get_logger().warning(line)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self.counters.received += 1
        self._in_rate.tick(now)
        try:
            stamp_ns = cv.ns_from_stamp(msg.header.stamp)
            check_stamp(stamp_ns, self.get_clock().now().nanoseconds, float(self._p["ros.max_future_stamp_s"]))
            rgb = image_to_rgb(msg, int(self._p["ros.max_image_pixels"]), MIN_SIDE)
        except BadInput as e:
            self._fault("image", "rejected", e.cause, str(e), frame=True)
            return
        except Exception as e:  # image_to_rgb promises BadInput only; a decoder surprise must not stop the node
            self._fault("image", "rejected", "decode_error", f"{type(e).__name__}: {e}", frame=True)
            return
        if self._slot.put(_Frame(msg.header.stamp, stamp_ns, rgb, now)):
            self.counters.dropped += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Cache K; an invalid CameraInfo is ignored (the last good K, or the estimate, stays in use)."""
        try:
            k, w, h = intrinsics_from_msg(msg)
            self._k, self._k_size = k, (w, h)
        except BadInput as e:
            self._fault("camera_info", "ignored", e.cause, str(e))

    def _on_depth(self, msg: Image) -> None:
        """Keep decoded depth by stamp; NaN/Inf pixels are holes, unusable images are ignored and counted."""
        try:
            depth = depth_from_msg(msg, int(self._p["ros.max_image_pixels"]))
            check_depth(depth, str(msg.encoding))
        except BadInput as e:
            self._fault("depth", "ignored", e.cause, str(e))
            return
        self._depth.append((cv.ns_from_stamp(msg.header.stamp), depth))

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.reset("reset service")
        resp.success, resp.message = True, f"tracker reset ({self.tracker.resets} resets so far)"
        return resp

    def _on_save_adaptation(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        ad = getattr(self.tracker, "adaptation", None)
        try:
            if ad is None:
                raise ValueError("this tracker has no adaptation worker")
            path = ad.save()
            resp.success, resp.message = True, f"saved adapted weights version {ad.version} to {path}"
        except (ValueError, OSError) as e:
            resp.success, resp.message = False, f"not saved: {e}"
        return resp

    def _on_revert_adaptation(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        ad = getattr(self.tracker, "adaptation", None)
        if ad is None:
            resp.success, resp.message = False, "this tracker has no adaptation worker"
        else:
            ad.restore_initial()
            resp.success, resp.message = True, f"reverted to the base weights (version {ad.version})"
        return resp

    def _on_time_jump(self, jump: TimeJump) -> None:
        if jump.delta.nanoseconds < 0:
            self._pending_reset = "ROS time jumped backwards"

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Validate run-time changes (read-only ones are refused by rclpy before this runs)."""
        for p in params:
            if p.name not in self._defaults:
                continue  # use_sim_time etc.
            why = P.validate(p.name, p.value, self._defaults[p.name])
            if why is None and p.name == "adaptation.enabled" and p.value and \
                    getattr(self.tracker, "adaptation", None) is None:
                why = "adaptation.enabled: this tracker has no adaptation worker (tracker.adaptation is None)"
            if why:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: Sequence[Parameter]) -> None:
        for p in params:
            if p.name in self._defaults:
                self._p[p.name] = p.value
                if p.name == "adaptation.enabled":
                    self._apply_adaptation(bool(p.value))
                elif p.name == "ros.max_path_length":
                    self._path = deque(self._path, maxlen=int(p.value))

    def _apply_adaptation(self, enabled: bool, startup: bool = False) -> None:
        ad = getattr(self.tracker, "adaptation", None)
        if ad is None:
            if enabled and startup:
                self.get_logger().warning("adaptation.enabled is true but this tracker has no adaptation worker")
            return
        setter = getattr(ad, "set_enabled", None)
        if setter is not None:
            setter(enabled)
            self.get_logger().info(f"adaptation {'enabled' if enabled else 'disabled'}")

    # -- the worker ------------------------------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Reset the tracker and the node's own history (path, map throttle, pending frame)."""
        with self._lock:
            self._reset_locked(reason)

    def _reset_locked(self, reason: str, log: bool = True) -> None:
        self.tracker.reset(reason)
        self._seen_resets = int(self.tracker.resets)
        self._path.clear()
        self._last_stamp_ns = None
        self._last_map = -1e18
        if log:
            self.get_logger().info(f"tracker reset: {reason}")

    def _work(self) -> None:
        while not self._stop.is_set():
            frame = self._slot.take(timeout=0.1)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as e:  # keep the node alive; the error is logged and counted
                self._fault("frame", "failed", "error", f"at {frame.stamp_ns} ns: {type(e).__name__}: {e}",
                            frame=True, error=True)

    def _depth_for(self, stamp_ns: int) -> np.ndarray | None:
        for s, d in reversed(self._depth):
            if s == stamp_ns:
                return d
        return None

    def _process(self, f: _Frame) -> None:
        from st4rtrack_ros.tracking.types import FrameInput

        h, w = f.rgb.shape[:2]
        k = self._k if self._k is not None and self._k_size == (w, h) else None
        if self._k is not None and k is None:
            self._fault("camera_info", "not used", "size_mismatch", f"CameraInfo is {self._k_size[0]}×"
                        f"{self._k_size[1]} but images are {w}×{h}: K is estimated instead")
        if self._size is not None and self._size != (w, h):
            self._fault("image", "size changed", "size_changed", f"{self._size[0]}×{self._size[1]} → {w}×{h}: the "
                        "tracker restarts its window and world")
        self._size = (w, h)
        depth = self._depth_for(f.stamp_ns)
        if depth is not None and depth.shape != (h, w):
            self._fault("depth", "not used", "size_mismatch", f"depth {depth.shape[1]}×{depth.shape[0]} is not "
                        f"aligned with the {w}×{h} image: frame tracked without depth")
            depth = None
        with self._lock:
            if self._pending_reset:
                self._reset_locked(self._pending_reset)
                self._pending_reset = None
            if self._last_stamp_ns is not None and f.stamp_ns < self._last_stamp_ns:
                self._fault("stamp", "reset the tracker", "backwards", f"{f.stamp_ns} ns after {self._last_stamp_ns}"
                            " ns (looping bag?): new world")
                self._reset_locked("image stamps jumped backwards (looping bag?)", log=False)
            t0 = time.perf_counter()
            try:
                res = self.tracker.step(FrameInput(f.stamp_ns, f.rgb, k, depth))
            except ValueError as e:  # BadInput (cause given) or another refusal of the tracker
                self._fault("frame", "skipped", getattr(e, "cause", "invalid"), str(e), frame=True)
                return
            except FrameDropped as e:  # out of memory: the tracker freed its caches, the next frame works
                self.counters.oom_dropped += 1
                self.get_logger().warning(str(e), throttle_duration_sec=5.0)
                return
            step_ms = (time.perf_counter() - t0) * 1e3
            self._last_stamp_ns = f.stamp_ns
            if int(self.tracker.resets) != self._seen_resets:  # the tracker reset itself (e.g. image size)
                self._seen_resets = int(self.tracker.resets)
                self._path.clear()
        self._publish(res, f, step_ms)

    # -- publishing ------------------------------------------------------------------------------------------------

    def _publish(self, res: Any, f: _Frame, step_ms: float) -> None:
        hdr = _header(f.stamp, self.world_frame)
        pose = cv.to_rep103_pose(res.pose_world_cam)
        qx, qy, qz, qw = cv.quaternion_from_matrix(pose[:3, :3])
        ps = PoseStamped()
        ps.header = hdr
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(v) for v in pose[:3, 3])
        ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = qx, qy, qz, qw
        self.pub_pose.publish(ps)
        self._path.append(ps)
        if self.pub_path.get_subscription_count():
            path = PathMsg()
            path.header, path.poses = hdr, list(self._path)
            self.pub_path.publish(path)
        if self._tf_pub is not None:
            tf = TransformStamped()
            tf.header, tf.child_frame_id = hdr, self.camera_frame
            tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = \
                ps.pose.position.x, ps.pose.position.y, ps.pose.position.z
            tf.transform.rotation = ps.pose.orientation
            self._tf_pub.publish(self._tf_cls(transforms=[tf]))

        tr = res.tracks
        positions = cv.to_rep103_points(np.asarray(tr.positions, np.float64))
        arr = Track3DArray()
        arr.header = hdr
        items = []
        for i in range(len(tr)):
            t = Track3D()
            t.id = int(tr.ids[i])
            t.position.x, t.position.y, t.position.z = (float(v) for v in positions[i])
            t.visible, t.dynamic = bool(tr.visible[i]), bool(tr.dynamic[i])
            t.confidence, t.sigma2, t.age = float(tr.confidence[i]), float(tr.sigma2[i]), int(max(tr.age[i], 0))
            items.append(t)
        arr.tracks = items
        self.pub_tracks.publish(arr)

        if self.pub_points.get_subscription_count():
            cloud = cv.cloud_array(cv.to_rep103_points(res.points), res.colors, res.point_confidence,
                                   int(self._p["ros.max_cloud_points"]))
            msg = PointCloud2()
            msg.header = hdr
            self.pub_points.publish(cv.fill_cloud(msg, PointField, cloud))
        now = time.monotonic()
        if (res.map_points is not None and self.pub_map.get_subscription_count()
                and now - self._last_map >= float(self._p["ros.map_period_s"])):
            self._last_map = now
            cloud = cv.cloud_array(cv.to_rep103_points(res.map_points), res.map_colors, None,
                                   int(self._p["ros.max_map_points"]))
            msg = PointCloud2()
            msg.header = hdr
            self.pub_map.publish(cv.fill_cloud(msg, PointField, cloud))
        if self.pub_markers.get_subscription_count():
            self.pub_markers.publish(self._markers(hdr, tr, positions, pose[:3, 3]))

        latency = time.monotonic() - f.received
        self._latency.append(latency)
        self.counters.processed += 1
        self._out_rate.tick(time.monotonic())
        self._publish_status(hdr, res, latency, step_ms)

    def _markers(self, hdr: Header, tr: Any, positions: np.ndarray, cam: np.ndarray) -> MarkerArray:
        hist = cv.to_rep103_points(np.asarray(tr.history, np.float64)) if len(tr) else np.zeros((0, 1, 3))
        dist = np.linalg.norm(positions - cam, axis=1) if len(tr) else np.ones(1)
        scale = max(1e-4, 0.004 * float(np.nanmedian(dist)) if np.isfinite(dist).any() else 0.01)
        ma = MarkerArray()
        ma.markers = cv.build_markers(
            Marker, Point, ColorRGBA, hdr, tr.ids, positions, hist, tr.visible, tr.dynamic, tr.confidence,
            cap=int(self._p["ros.max_marker_tracks"]), trail=int(self._p["ros.marker_history"]),
            scheme=str(self._p["ros.marker_color"]), scale=scale)
        return ma

    def _publish_status(self, hdr: Header, res: Any, latency: float, step_ms: float) -> None:
        ad = getattr(self.tracker, "adaptation", None)
        st = _adaptation_status(ad)
        s = TrackerStatus()
        s.header = hdr
        c = self.counters
        s.frames_received, s.frames_processed = c.received, c.processed
        s.frames_dropped, s.frames_rejected = c.dropped, c.rejected
        s.resets = int(getattr(self.tracker, "resets", 0))
        s.latency_ms, s.step_ms = float(latency * 1e3), float(step_ms)
        s.metric_scale = bool(res.metric_scale)
        s.num_tracks = len(res.tracks)
        s.adaptation_available = ad is not None
        s.adaptation_enabled = bool(st.get("enabled", False))
        s.adaptation_busy = bool(st.get("busy", False))
        s.weights_version = int(st.get("version", getattr(res, "weights_version", 0)) or 0)
        s.adaptation_rounds = int(st.get("rounds", 0) or 0)
        s.adaptation_accepted = int(st.get("accepted", 0) or 0)
        s.adaptation_rolled_back = int(st.get("rolled_back", 0) or 0)
        s.last_loss_names, s.last_loss_values = _losses(st.get("last_losses"))
        self._last_status = st
        self.pub_status.publish(s)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        lat = np.array(self._latency) * 1e3 if self._latency else np.zeros(0)
        c = self.counters
        values = {
            "input_rate_hz": f"{self._in_rate.hz(now):.2f}",
            "output_rate_hz": f"{self._out_rate.hz(now):.2f}",
            "latency_p50_ms": f"{np.percentile(lat, 50):.1f}" if len(lat) else "n/a",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}" if len(lat) else "n/a",
            "frames_received": str(c.received), "frames_processed": str(c.processed),
            "frames_dropped": str(c.dropped), "frames_rejected": str(c.rejected),
            "resets": str(getattr(self.tracker, "resets", 0)),
            "frames_oom_dropped": str(c.oom_dropped),
            "gpu_memory_mb": self._gpu_memory(),
        }
        ad = getattr(self.tracker, "adaptation", None)
        values["adaptation"] = "unavailable" if ad is None else "enabled" if self._last_status.get("enabled") \
            else "disabled"
        for key in ("rounds", "accepted", "rolled_back", "version", "busy", "oom", "window_frames", "disabled_reason"):
            if key in self._last_status:
                values[f"adaptation_{key}"] = str(self._last_status[key])
        values.update({key: str(n) for key, n in c.faults.snapshot().items()})  # e.g. image.step_mismatch: 3
        st = DiagnosticStatus()
        st.name = f"{self.get_fully_qualified_name()}: tracker"
        st.hardware_id = str(getattr(self.tracker, "device", "unknown"))
        idle = c.received == 0 or now - (self._in_rate._t[-1] if self._in_rate._t else now) > 5.0
        if c.received and c.processed == 0 and not idle:
            st.level, st.message = DiagnosticStatus.WARN, "receiving images but no output yet"
        elif idle:
            st.level, st.message = DiagnosticStatus.OK, "waiting for images"
        else:
            st.level, st.message = DiagnosticStatus.OK, "tracking"
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.pub_diag.publish(arr)

    def _gpu_memory(self) -> str:
        dev = getattr(self.tracker, "device", None)
        if dev is None or getattr(dev, "type", "cpu") != "cuda":
            return "n/a (cpu)"
        import torch

        mib = 2**20
        alloc, reserved = torch.cuda.memory_allocated(dev) / mib, torch.cuda.memory_reserved(dev) / mib
        return f"{alloc:.0f} allocated, {reserved:.0f} reserved"

    def shutdown(self, timeout: float = 1.2) -> bool:
        """Stop the tracker worker (after its current frame) and the adaptation worker (keeps and saves its weights)
        within ``timeout`` s — bounded because supervisors escalate to SIGKILL, which would lose the adapted weights.
        Returns True when both threads ended; a thread still busy is a daemon and ends with the process."""
        end = time.monotonic() + timeout
        self._stop.set()
        ad = getattr(self.tracker, "adaptation", None)
        if hasattr(ad, "request_stop"):
            ad.request_stop()  # both threads wind down at once
        self._worker.join(timeout=max(0.05, min(0.5 * timeout, end - time.monotonic())))
        ok = not self._worker.is_alive()
        if not ok:
            self.get_logger().warning("tracker worker still busy with a frame at shutdown")
        if ad is not None and hasattr(ad, "stop"):
            if ad.stop(timeout=max(0.05, end - time.monotonic())):
                self.get_logger().info(f"adaptation worker stopped cleanly (weights version "
                                       f"{getattr(ad, 'version', 0)} kept)")
            else:
                ok = False
                self.get_logger().warning("adaptation worker still in a round at shutdown: it ends with the process")
        return ok


def _stop_with_parent() -> None:
    """A node started by a test, the demo or ``st4rtrack-eval --live`` gets SIGTERM (our clean stop) when the process
    (strictly: the thread) that started it dies, even by SIGKILL. Otherwise it stays on its DDS domain and answers the
    next run's messages: a killed test run once left a node that doubled the next run's outputs. Linux only."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() != int(parent):  # it died before the request: stop now
        os.kill(os.getpid(), signal.SIGTERM)


def node_executor(node: TrackerNode, context: rclpy.context.Context | None = None) -> SingleThreadedExecutor:
    """The executor the node is spun on, here and by benchmarks/soak.py (which must measure the node as it runs).

    One thread for every callback. rclpy's MultiThreadedExecutor busy-loops while a callback group is occupied and
    messages wait (ros2/rclpy#1223): under a camera flood it held the GIL so much that tracker steps took 1-2 s
    instead of 0.1 s and the first burst of test_node_load failed. The callbacks only decode and hand over; the
    tracker and adaptation run in their own threads, so nothing here needs a second executor thread.
    """
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor


def main(argv: list[str] | None = None) -> int:
    """Console script `st4rtrack-node`; ROS arguments after --ros-args.

    SIGINT and SIGTERM stop it the same way, within ~2 s, with rc 0: workers first (adapted weights saved), then
    the executor, the node and the context. Our own handlers rather than rclpy's: rclpy's SIGTERM handler shuts the
    context down under the spinning executor (an RCLError, rc 1) while the tracker worker may still publish. A second
    signal during shutdown kills the process at once.
    """
    args = list(sys.argv if argv is None else ["st4rtrack-node", *argv])
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    log = get_logger(NODE_NAME)
    try:
        node = TrackerNode()
    except NodeStartError as e:
        log.error(str(e))
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:  # SIGINT while the model loads: nothing to save yet
        rclpy.try_shutdown()
        return 130
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    _stop_with_parent()
    executor = node_executor(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # returns at least every 0.1 s, so a signal is seen promptly
    except ExternalShutdownException:
        pass
    finally:
        t0 = time.monotonic()
        node.shutdown()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
        left = [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        log.info(f"stopped in {time.monotonic() - t0:.2f} s; non-daemon threads left: {', '.join(left) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
