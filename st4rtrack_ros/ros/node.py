"""`st4rtrack-node`: the ROS 2 lifecycle node around :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker`.

Lifecycle (REP 2002 managed node): ``configure`` reads the parameters and loads the model (a bad checkpoint fails
the transition with the reason; the node stays up, unconfigured); ``activate`` subscribes and publishes;
``deactivate`` stops processing and keeps the world; ``cleanup`` frees the model (and GPU memory); ``shutdown``
stops the workers and saves adapted weights. ``st4rtrack-node`` alone (``ros.autostart``) drives itself to active;
the launch file drives the transitions instead. Structural parameters (model, tracking, topics, frames) change only
while the node is unconfigured and take effect at the next ``configure``.

Threading (why): a camera publishes faster than the tracker may run, and queueing frames only adds latency. So the
image callback only decodes the image and puts it into a one-frame slot — a newer frame replaces an unprocessed one
and counts as dropped — and one worker thread runs the tracker on whatever is newest. A publisher thread builds and
sends that frame's outputs while the tracker steps the next one (a one-item hand-over with back-pressure: never more
than one frame behind, nothing dropped, order kept); tracks, clouds, markers and the path go out as CDR bytes written
from the arrays (``publishing``). Per-stage timings are in /diagnostics (``timing``). Depth and CameraInfo are
matched to the image by stamp with a bounded wait (``sync.StampBuffer``). Background adaptation runs in the
tracker's own worker.

Frames (REP 103/105): the tracker's world is the first anchor's optical frame; the node publishes it as
``world_frame`` with REP 103 axes and the camera as its own ``camera_frame`` (optical axes), never the robot's
camera frame, so /tf never gets a second parent. With ``ros.fixed_frame`` (e.g. ``odom``) the node looks up the
camera's pose in that frame at the first frame of each world and publishes ``fixed_frame → world_frame`` on
/tf_static, so every output lands in the robot's tree.

Size (why one module of ~900 lines): the lifecycle transitions, the input callbacks and the tracker and publisher
threads share one state (slot, buffers, counters, publishers) that each transition creates or tears down; outputs,
diagnostics, sync, TF and launch rules already live in their own modules. Splitting the inputs and the two threads
into a class of their own is the next step (issue 19).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from st4rtrack_ros.data.messages import check_depth, check_stamp, depth_from_msg, image_to_rgb, intrinsics_from_msg
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.diagnostics import OK, WARN, Task, diagnostic_array, frequency_task, timing_task
from st4rtrack_ros.ros.env import PARENT_PID_ENV
from st4rtrack_ros.ros.faults import FaultLog
from st4rtrack_ros.ros.sync import StampBuffer
from st4rtrack_ros.ros.world_anchor import WorldAnchor
from st4rtrack_ros.tracking.types import MIN_SIDE, BadInput, FrameDropped, FrameInput, StepResult

try:  # generated from msg/ by colcon or scripts/setup_env.sh (step 'messages')
    from st4rtrack_ros.msg import TrackerStatus
    from st4rtrack_ros.ros.publishing import Outputs
except ImportError:  # pragma: no cover - reported at start-up
    TrackerStatus = Outputs = None  # type: ignore[assignment,misc]

NODE_NAME = "st4rtrack"
LATENCY_WINDOW = 300  # frames in the diagnostics' latency percentiles
RATE_WINDOW_S = 5.0
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class Tracker(Protocol):
    """What the node needs of a tracker (``OnlineTracker``; tests pass a small stand-in)."""

    resets: int
    device: Any
    adaptation: Any

    def step(self, frame: FrameInput) -> StepResult: ...
    def reset(self, reason: str = ...) -> None: ...


class NodeStartError(RuntimeError):
    """The node cannot be configured (no model, bad parameters); the message says what to do."""


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
            self._taken(item)
            return item

    def _taken(self, item: Any) -> None:
        """Called under the lock with what ``take`` returns (a subclass's bookkeeping)."""

    def wake(self) -> None:
        """Wake waiting calls now (a stopping worker need not wait out its timeout)."""
        with self._cond:
            self._cond.notify_all()


class Handoff(LatestSlot):
    """A one-item hand-over with back-pressure: ``put`` waits until the previous item was taken *and* handled (the
    tracker thread steps frame N+1 while the publisher thread publishes frame N, never further ahead, so no
    result is dropped or queued); ``idle`` waits until nothing is pending (before a reset of the outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self._busy = False

    def put(self, item: Any, stop: threading.Event) -> bool:  # type: ignore[override]
        """False if ``stop`` was set before the slot freed up (the item is not handed over)."""
        with self._cond:
            while self._item is not None or self._busy:
                if stop.is_set():
                    return False
                self._cond.wait(0.05)
            self._item = item
            self._cond.notify_all()
            return True

    def _taken(self, item: Any) -> None:
        self._busy = item is not None  # ``done()`` must follow once the item is handled

    def done(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._item is None and not self._busy, timeout)

    def clear(self) -> None:
        with self._cond:
            self._item, self._busy = None, False
            self._cond.notify_all()


@dataclass
class _Frame:
    stamp: TimeMsg
    stamp_ns: int
    rgb: np.ndarray
    received: float  # time.monotonic() at receipt
    frame_id: str = ""
    decode_ms: float = 0.0  # image_to_rgb in the image callback


@dataclass
class _Stepped:
    """A tracker result on its way to the publisher thread."""

    frame: _Frame
    res: StepResult
    times_ms: dict[str, float]  # stages so far: queue, sync, the tracker's own stages


class StageTimes:
    """The last ``LATENCY_WINDOW`` durations (ms) of each stage of the node's frame path, for /diagnostics."""

    def __init__(self) -> None:
        self._d: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, times: dict[str, float]) -> None:
        with self._lock:
            for k, v in times.items():
                self._d.setdefault(k, deque(maxlen=LATENCY_WINDOW)).append(float(v))

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """stage → (p50, p95) ms."""
        with self._lock:
            items = [(k, np.array(v)) for k, v in self._d.items()]
        return {k: (float(np.percentile(a, 50)), float(np.percentile(a, 95))) for k, a in items if len(a)}


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
        self.t: deque[float] = deque(maxlen=1000)

    def tick(self, t: float) -> None:
        self.t.append(t)

    def hz(self, now: float) -> float:
        recent = [t for t in self.t if now - t <= RATE_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def _descriptor(name: str, default: Any) -> ParameterDescriptor:
    spec = P.spec_for(name)
    text = spec.description if spec.read_only is False else f"{spec.description} [structural: set while unconfigured]"
    d = ParameterDescriptor(name=name, description=text)
    if spec.choices:
        d.additional_constraints = f"one of {list(spec.choices)}"
    if isinstance(default, bool) or spec.min is None or spec.max is None:
        return d
    if isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
    elif isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


def _adaptation_status(adaptation: Any) -> dict[str, Any]:
    """The adaptation worker's status dict, or an empty one when there is none or it fails."""
    if adaptation is None:
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


class TrackerNode(LifecycleNode):
    """Subscribes a camera, runs the tracker in a worker, publishes clouds, tracks, markers, pose, TF, status."""

    def __init__(self, tracker: Tracker | None = None, **kwargs: Any) -> None:
        """Declare and check the parameters (config/tracker.yaml); nothing is loaded before ``configure``.
        ``tracker``: use this one instead of building one from ``model.*`` (tests, benchmarks)."""
        super().__init__(NODE_NAME, **kwargs)
        if TrackerStatus is None:
            raise NodeStartError("st4rtrack_ros.msg is not importable: run scripts/setup_env.sh (step 'messages') or "
                                 "`colcon build` this package")
        self._defaults = P.defaults()
        for name, default in self._defaults.items():
            try:
                self.declare_parameter(name, default, _descriptor(name, default))
            except ParameterException as e:  # a -p/--params-file value of the wrong type or out of range
                raise NodeStartError(f"bad parameter {name}: {e}") from e
        self._p = {name: self.get_parameter(name).value for name in self._defaults}
        why = self._check(self._p)
        if why:
            raise NodeStartError(f"bad parameter: {why}")
        self._given_tracker = tracker
        self.tracker: Tracker | None = None
        self.outputs: Any = None
        self.counters = _Counters()
        self._entities: list[Any] = []  # created by configure, destroyed by cleanup
        self._subs: list[Any] = []  # created by activate, destroyed by deactivate
        self._lock = threading.Lock()  # held around tracker.step and reset
        self._slot = LatestSlot()
        self._handoff = Handoff()  # tracker thread → publisher thread
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._publisher: threading.Thread | None = None
        self.stage_times = StageTimes()
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._in_rate, self._out_rate = _Rate(), _Rate()
        self._last_status: dict[str, Any] = {}
        self._state = "unconfigured"
        self.configuring = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if hasattr(self, "add_post_set_parameters_callback"):  # Jazzy and later; Humble applies in the validator
            self.add_post_set_parameters_callback(self._after_set_parameters)

    # -- parameters ------------------------------------------------------------------------------------------------

    def _check(self, values: dict[str, Any]) -> str | None:
        for name, value in values.items():
            why = P.validate(name, value, self._defaults[name])
            if why:
                return why
        if values["ros.world_frame"] == values["ros.camera_frame"]:
            return "ros.world_frame and ros.camera_frame must differ"
        return None

    def _param(self, name: str) -> Any:
        return self._p[name]

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Validate changes: ranges and choices always; structural ones only while unconfigured."""
        for p in params:
            if p.name not in self._defaults:
                continue  # use_sim_time etc.
            why = P.validate(p.name, p.value, self._defaults[p.name])
            if why is None and P.spec_for(p.name).read_only and self._state != "unconfigured":
                why = (f"{p.name} is structural: change it while the node is unconfigured "
                       f"(`ros2 lifecycle set {self.get_fully_qualified_name()} cleanup`), now {self._state}")
            if why is None and p.name == "adaptation.enabled" and p.value and self.tracker is not None \
                    and self.tracker.adaptation is None:
                why = "adaptation.enabled: this tracker has no adaptation worker"
            if why:
                return SetParametersResult(successful=False, reason=why)
        if not hasattr(self, "add_post_set_parameters_callback"):
            self._after_set_parameters(params)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: Sequence[Parameter]) -> None:
        for p in params:
            if p.name in self._defaults:
                self._p[p.name] = p.value
                if p.name == "adaptation.enabled":
                    self._apply_adaptation(bool(p.value))
                elif p.name == "ros.max_path_length" and self.outputs is not None:
                    self.outputs.set_path_length(int(p.value))

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def bring_up(self) -> bool:
        """configure + activate (what ``ros.autostart`` does); False, with the reason logged, if one fails."""
        return self.trigger_configure() == SUCCESS and self.trigger_activate() == SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.configuring = True  # main()'s signal handler interrupts a configure (a model load can take seconds)
        try:
            self._configure()
        except NodeStartError as e:
            self.get_logger().error(f"configure failed: {e}")
            self._teardown()
            return FAILURE
        except KeyboardInterrupt:
            self.get_logger().warning("configure interrupted by a signal")
            self._teardown()
            return FAILURE
        finally:
            self.configuring = False
        self._state = "inactive"
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._make_inputs()
        self._slot.take(timeout=0.0)
        self._stop.clear()
        self._handoff.clear()
        self._worker = threading.Thread(target=self._work, name="st4rtrack-tracker", daemon=True)
        self._publisher = threading.Thread(target=self._publish_loop, name="st4rtrack-publisher", daemon=True)
        self._worker.start()
        self._publisher.start()
        self._state = "active"
        self.get_logger().info(
            f"ready: active, input {self._subs[0].topic_name} "
            f"({'CompressedImage' if self._p['ros.compressed'] else 'Image'}), "
            f"depth {self._p['ros.depth_topic'] or 'none'}, world frame '{self.outputs.world_frame}', camera frame "
            f"'{self.outputs.camera_frame}', fixed frame {self._p['ros.fixed_frame'] or 'none'}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._state = "inactive"
        self.get_logger().info("inactive: processing stopped, the world is kept")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self.get_logger().info("cleaned up: model freed")
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        # bounded: supervisors escalate to SIGKILL, which would lose the adapted weights
        self._teardown(budget_s=1.2)
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return SUCCESS

    def _configure(self) -> None:
        self._p = {name: self.get_parameter(name).value for name in self._defaults}
        why = self._check(self._p)
        if why:
            raise NodeStartError(f"bad parameter: {why}")
        prefix = str(self._p["ros.frame_prefix"])
        self.tracker = self._given_tracker if self._given_tracker is not None else self._build_tracker()
        self.outputs = Outputs(self, prefix + str(self._p["ros.world_frame"]),
                               prefix + str(self._p["ros.camera_frame"]), self._param)
        self._seen_resets = int(self.tracker.resets)
        self._last_stamp_ns: int | None = None
        self._pending_reset: str | None = None
        self._size: tuple[int, int] | None = None  # (w, h) of the last processed image
        slop, depth_n = float(self._p["ros.sync_slop_s"]), max(8, int(self._p["ros.input_depth"]) * 4)
        self._depth: StampBuffer[np.ndarray] = StampBuffer(depth_n, slop)
        self._info: StampBuffer[tuple[np.ndarray, int, int]] = StampBuffer(depth_n, slop)
        self.anchor = WorldAnchor(self, str(self._p["ros.fixed_frame"]), str(self._p["ros.robot_camera_frame"]),
                                  float(self._p["ros.tf_timeout_s"]))
        self.pub_status = self.create_lifecycle_publisher(TrackerStatus, "~/status", 5)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._entities += [
            self.pub_diag,
            self.create_service(Trigger, "~/reset", self._on_reset),
            self.create_service(Trigger, "~/save_adaptation", self._on_save_adaptation),
            self.create_service(Trigger, "~/revert_adaptation", self._on_revert_adaptation),
            self.create_timer(float(self._p["ros.diagnostics_period_s"]), self._publish_diagnostics),
            *self.anchor.subscriptions,
        ]
        self._jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_time_jump)
        self._apply_adaptation(bool(self._p["adaptation.enabled"]), startup=True)
        if self.outputs.tf is None and self._p["ros.publish_tf"]:
            self.get_logger().info("tf2_msgs is not installed: no /tf output (pose and path are published)")

    def _teardown(self, budget_s: float = 10.0) -> None:
        """Stop inputs and workers (adapted weights saved), destroy what configure made, free the model. Within
        ``budget_s`` a thread still busy is left to end with the process (it is a daemon)."""
        end = time.monotonic() + budget_s
        ad = getattr(self.tracker, "adaptation", None)
        if ad is not None:
            ad.request_stop()  # both threads wind down at once
        self._stop_inputs(join_s=0.5 * budget_s)
        tracker, self.tracker = self.tracker, None
        if ad is not None:
            if ad.stop(timeout=max(0.05, end - time.monotonic())):
                self.get_logger().info(f"adaptation worker stopped cleanly (weights version {ad.version} kept)")
            else:
                self.get_logger().warning("adaptation worker still in a round: it ends with the process")
        publishers = self.outputs.all() if self.outputs is not None else []
        for p in [*publishers, getattr(self, "pub_status", None)]:
            if p is not None:
                self.destroy_lifecycle_publisher(p)
        self.pub_status = None
        for e in self._entities:
            for destroy in (self.destroy_publisher, self.destroy_service, self.destroy_timer,
                            self.destroy_subscription):
                if destroy(e):
                    break
        self._entities, self.outputs = [], None
        self._jump = None
        if tracker is not None and self._given_tracker is None and getattr(tracker.device, "type", "") == "cuda":
            import torch

            del tracker
            torch.cuda.empty_cache()
        self._state = "unconfigured"

    def _build_tracker(self) -> Tracker:
        from st4rtrack_ros.adaptation.persistence import AdaptedCheckpointError
        from st4rtrack_ros.model.checkpoint import CheckpointError
        from st4rtrack_ros.pipeline import TrackerSpec, build_tracker

        try:
            spec = TrackerSpec.from_params(self._p)
            tracker = build_tracker(spec, log=self.get_logger().info)
        except (CheckpointError, AdaptedCheckpointError, FileNotFoundError, TypeError, ValueError, KeyError) as e:
            raise NodeStartError(str(e)) from e
        if tracker.adaptation is not None:
            tracker.adaptation.start()
        return tracker

    # -- inputs (cheap: decode and hand over) ----------------------------------------------------------------------

    def _make_inputs(self) -> None:
        rel, depth = P.parse_input_qos(str(self._p["ros.input_reliability"]), int(self._p["ros.input_depth"]))
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.BEST_EFFORT if rel == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        compressed = bool(self._p["ros.compressed"])
        topic = str(self._p["ros.image_topic"])
        self._image_topic = P.compressed_topic(topic) if compressed else topic
        self._subs = [self.create_subscription(CompressedImage if compressed else Image, self._image_topic,
                                               self._on_image, qos)]
        if self._p["ros.camera_info_topic"]:
            # best effort matches both reliable and best-effort CameraInfo publishers
            self._subs.append(self.create_subscription(CameraInfo, str(self._p["ros.camera_info_topic"]),
                                                       self._on_camera_info, QoSProfile(
                                                           depth=4, reliability=ReliabilityPolicy.BEST_EFFORT)))
        if self._p["ros.depth_topic"]:
            self._subs.append(self.create_subscription(
                Image, str(self._p["ros.depth_topic"]), self._on_depth,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(depth, 4), reliability=qos.reliability)))

    def _stop_inputs(self, join_s: float = 10.0) -> None:
        """Unsubscribe and stop the tracker thread after its current frame."""
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._stop.set()
        self._slot.wake()
        self._handoff.wake()
        end = time.monotonic() + join_s
        for attr, what in (("_worker", "tracker worker still busy with a frame"),
                           ("_publisher", "publisher thread still busy with a frame")):
            thread = getattr(self, attr)
            if thread is not None:
                thread.join(timeout=max(0.0, end - time.monotonic()))
                if thread.is_alive():
                    self.get_logger().warning(what)
                setattr(self, attr, None)
        self._slot.take(timeout=0.0)  # a frame of the old activation is not processed later
        self._handoff.clear()

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
        if self._state != "active":  # a message already queued when the node was deactivated
            return
        now = time.monotonic()
        self.counters.received += 1
        self._in_rate.tick(now)
        try:
            stamp_ns = cv.ns_from_stamp(msg.header.stamp)
            check_stamp(stamp_ns, self.get_clock().now().nanoseconds, float(self._p["ros.max_future_stamp_s"]))
            t0 = time.perf_counter()
            rgb = image_to_rgb(msg, int(self._p["ros.max_image_pixels"]), MIN_SIDE)
            decode_ms = (time.perf_counter() - t0) * 1e3
        except BadInput as e:
            self._fault("image", "rejected", e.cause, str(e), frame=True)
            return
        except Exception as e:  # image_to_rgb promises BadInput only; a decoder surprise must not stop the node
            self._fault("image", "rejected", "decode_error", f"{type(e).__name__}: {e}", frame=True)
            return
        if self._slot.put(_Frame(msg.header.stamp, stamp_ns, rgb, now, msg.header.frame_id, decode_ms)):
            self.counters.dropped += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Keep K by stamp; an invalid CameraInfo is ignored (a matching good one, or the estimate, is used)."""
        try:
            self._info.add(cv.ns_from_stamp(msg.header.stamp), intrinsics_from_msg(msg))
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
        self._depth.add(cv.ns_from_stamp(msg.header.stamp), depth)

    # -- services --------------------------------------------------------------------------------------------------

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.reset("reset service")
        resp.success, resp.message = True, f"tracker reset ({self.tracker.resets} resets so far)"
        return resp

    def _on_save_adaptation(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        ad = self.tracker.adaptation if self.tracker is not None else None
        try:
            if ad is None:
                raise ValueError("this tracker has no adaptation worker")
            path = ad.save()
            resp.success, resp.message = True, f"saved adapted weights version {ad.version} to {path}"
        except (ValueError, OSError) as e:
            resp.success, resp.message = False, f"not saved: {e}"
        return resp

    def _on_revert_adaptation(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        ad = self.tracker.adaptation if self.tracker is not None else None
        if ad is None:
            resp.success, resp.message = False, "this tracker has no adaptation worker"
        else:
            ad.restore_initial()
            resp.success, resp.message = True, f"reverted to the base weights (version {ad.version})"
        return resp

    def _on_time_jump(self, jump: TimeJump) -> None:
        if jump.delta.nanoseconds < 0:
            self._pending_reset = "ROS time jumped backwards"

    def _apply_adaptation(self, enabled: bool, startup: bool = False) -> None:
        ad = self.tracker.adaptation if self.tracker is not None else None
        if ad is None:
            if enabled and startup:
                self.get_logger().warning("adaptation.enabled is true but this tracker has no adaptation worker")
            return
        ad.set_enabled(enabled)
        self.get_logger().info(f"adaptation {'enabled' if enabled else 'disabled'}")

    # -- the worker ------------------------------------------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Reset the tracker and the node's own history (path, map throttle, world anchor)."""
        with self._lock:
            self._reset_locked(reason)

    def _reset_locked(self, reason: str, log: bool = True) -> None:
        self._new_world()
        self.tracker.reset(reason)
        self._seen_resets = int(self.tracker.resets)
        self._last_stamp_ns = None
        if log:
            self.get_logger().info(f"tracker reset: {reason}")

    def _new_world(self) -> None:
        """Path, map throttle and world anchor start again — after the publisher thread has published the frame
        it holds (that frame belongs to the old world)."""
        if not self._handoff.idle(timeout=5.0):
            self.get_logger().warning("publisher thread busy for 5 s: resetting the outputs anyway")
        self.outputs.reset()
        self.anchor.new_world()

    def _work(self) -> None:
        """The tracker thread: step the newest frame, hand the result to the publisher thread, repeat."""
        while not self._stop.is_set():
            frame = self._slot.take(timeout=0.1)
            if frame is None:
                continue
            try:
                stepped = self._step(frame)
            except Exception as e:  # keep the node alive; the error is logged and counted
                self._fault("frame", "failed", "error", f"at {frame.stamp_ns} ns: {type(e).__name__}: {e}",
                            frame=True, error=True)
                continue
            if stepped is not None:
                t0 = time.perf_counter()
                if self._handoff.put(stepped, self._stop):  # waits while the previous frame is being published
                    self.stage_times.add({"handoff_wait": (time.perf_counter() - t0) * 1e3})

    def _publish_loop(self) -> None:
        """The publisher thread: messages of frame N are built and sent while the tracker steps frame N+1."""
        while not self._stop.is_set():
            stepped = self._handoff.take(timeout=0.1)
            if stepped is None:
                continue
            try:
                self._emit(stepped)
            except Exception as e:  # keep the node alive; the error is logged and counted
                self._fault("frame", "failed", "error", f"publishing {stepped.frame.stamp_ns} ns: "
                            f"{type(e).__name__}: {e}", frame=True, error=True)
            finally:
                self._handoff.done()

    def _companions(self, f: _Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """K and depth for this image, matched by stamp (depth waited for, bounded)."""
        h, w = f.rgb.shape[:2]
        info = self._info.match(f.stamp_ns) if self._p["ros.camera_info_topic"] else None
        if info is None and self._p["ros.camera_info_topic"]:
            info = self._info.latest()  # intrinsics rarely change: an unmatched stamp still gives a K (counted)
        k = None
        if info is not None:
            k, kw, kh = info
            if (kw, kh) != (w, h):
                self._fault("camera_info", "not used", "size_mismatch", f"CameraInfo is {kw}×{kh} but images are "
                            f"{w}×{h}: K is estimated instead")
                k = None
        depth = None
        if self._p["ros.depth_topic"]:
            # wait for a late depth image while the depth stream is alive, and always on a world's first frame
            # (the first frame sets the metric scale)
            first = self.anchor.pending
            wait = float(self._p["ros.sync_max_wait_s"]) if first or self._depth.latest() is not None else 0.0
            depth = self._depth.match(f.stamp_ns, wait)
            if depth is not None and depth.shape != (h, w):
                self._fault("depth", "not used", "size_mismatch", f"depth {depth.shape[1]}×{depth.shape[0]} is not "
                            f"aligned with the {w}×{h} image: frame tracked without depth")
                depth = None
        return k, depth

    def _process(self, f: _Frame) -> None:
        """Step and publish one frame in the calling thread (tests; the node itself pipelines the two)."""
        stepped = self._step(f)
        if stepped is not None:
            self._emit(stepped)

    def _step(self, f: _Frame) -> _Stepped | None:
        """Run the tracker on a frame; None when the frame gives no output (refused, out of memory)."""
        times = {"decode": f.decode_ms, "queue": (time.monotonic() - f.received) * 1e3 - f.decode_ms}
        t_sync = time.perf_counter()
        h, w = f.rgb.shape[:2]
        if self._size is not None and self._size != (w, h):
            self._fault("image", "size changed", "size_changed", f"{self._size[0]}×{self._size[1]} → {w}×{h}: the "
                        "tracker restarts its window and world")
        self._size = (w, h)
        k, depth = self._companions(f)
        times["sync"] = (time.perf_counter() - t_sync) * 1e3
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
                return None
            except FrameDropped as e:  # out of memory: the tracker freed its caches, the next frame works
                self.counters.oom_dropped += 1
                self.get_logger().warning(str(e), throttle_duration_sec=5.0)
                return None
            times["step"] = (time.perf_counter() - t0) * 1e3
            times.update({f"step.{k}": v for k, v in (getattr(res, "timings_ms", None) or {}).items()
                          if k != "total"})
            self._last_stamp_ns = f.stamp_ns
            if int(self.tracker.resets) != self._seen_resets:  # the tracker reset itself (e.g. image size)
                self._seen_resets = int(self.tracker.resets)
                self._new_world()
        return _Stepped(f, res, times)

    def _emit(self, s: _Stepped) -> None:
        """Every output of a stepped frame, the status last (its receipt marks the frame done)."""
        f, res, times = s.frame, s.res, s.times_ms
        t0 = time.perf_counter()
        self.anchor.on_frame(f.stamp, f.stamp_ns, f.frame_id, self.outputs)
        times["anchor"] = (time.perf_counter() - t0) * 1e3
        times.update({f"publish.{k}": v for k, v in (self.outputs.publish(res, f.stamp) or {}).items()})
        latency = time.monotonic() - f.received
        self._latency.append(latency)
        self.counters.processed += 1
        self._out_rate.tick(time.monotonic())
        t0 = time.perf_counter()
        self._publish_status(f.stamp, res, latency, times["step"])
        times["publish.status"] = (time.perf_counter() - t0) * 1e3
        times["latency"] = latency * 1e3
        self.stage_times.add(times)

    # -- status and diagnostics ------------------------------------------------------------------------------------

    def _publish_status(self, stamp: TimeMsg, res: StepResult, latency: float, step_ms: float) -> None:
        ad = self.tracker.adaptation
        st = _adaptation_status(ad)
        c = self.counters
        s = TrackerStatus(frames_received=c.received, frames_processed=c.processed, frames_dropped=c.dropped,
                          frames_rejected=c.rejected, resets=int(self.tracker.resets),
                          latency_ms=float(latency * 1e3), step_ms=float(step_ms),
                          metric_scale=bool(res.metric_scale), num_tracks=len(res.tracks),
                          adaptation_available=ad is not None, adaptation_enabled=bool(st.get("enabled", False)),
                          adaptation_busy=bool(st.get("busy", False)),
                          weights_version=int(st.get("version", res.weights_version) or 0),
                          adaptation_rounds=int(st.get("rounds", 0) or 0),
                          adaptation_accepted=int(st.get("accepted", 0) or 0),
                          adaptation_rolled_back=int(st.get("rolled_back", 0) or 0))
        s.header.stamp, s.header.frame_id = stamp, self.outputs.world_frame
        s.last_loss_names, s.last_loss_values = _losses(st.get("last_losses"))
        self._last_status = st
        self.pub_status.publish(s)

    def _publish_diagnostics(self) -> None:
        if self.tracker is None:
            return
        now = time.monotonic()
        lat = np.array(self._latency) * 1e3 if self._latency else np.zeros(0)
        c = self.counters
        tracker = Task("tracker", values={
            "state": self._state,
            "input_rate_hz": f"{self._in_rate.hz(now):.2f}", "output_rate_hz": f"{self._out_rate.hz(now):.2f}",
            "latency_p50_ms": f"{np.percentile(lat, 50):.1f}" if len(lat) else "n/a",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}" if len(lat) else "n/a",
            "frames_received": str(c.received), "frames_processed": str(c.processed),
            "frames_dropped": str(c.dropped), "frames_rejected": str(c.rejected),
            "resets": str(self.tracker.resets), "frames_oom_dropped": str(c.oom_dropped),
            "gpu_memory_mb": self._gpu_memory(),
            **{key: str(n) for key, n in c.faults.snapshot().items()},  # e.g. image.step_mismatch: 3
        })
        idle = c.received == 0 or now - (self._in_rate.t[-1] if self._in_rate.t else now) > 5.0
        if c.received and c.processed == 0 and not idle:
            tracker.summary(WARN, "receiving images but no output yet")
        else:
            tracker.summary(OK, f"{self._state}: waiting for images" if idle else "tracking")
        inputs = Task("input sync", values={
            **{f"depth_{k}": str(v) for k, v in vars(self._depth.counts).items()},
            **{f"camera_info_{k}": str(v) for k, v in vars(self._info.counts).items()},
            "depth_topic": str(self._p["ros.depth_topic"]) or "none",
            "metric_scale_from": "depth" if self._p["ros.depth_topic"] and self._p["tracking.use_depth_scale"]
            else "tracking.metric_scale" if self._p["tracking.metric_scale"] > 0 else "none (model units)"})
        inputs.summary(WARN if self._depth.counts.missed else OK,
                       f"{self._depth.counts.missed} frames without their depth image" if self._depth.counts.missed
                       else "inputs in sync")
        ad = self.tracker.adaptation
        adapt = Task("adaptation", values={k: str(v) for k, v in self._last_status.items() if k != "last_losses"})
        adapt.summary(OK, "unavailable" if ad is None else "enabled" if self._last_status.get("enabled")
                      else "disabled")
        if self._last_status.get("disabled_reason"):
            adapt.summary(WARN, str(self._last_status["disabled_reason"]))
        tasks = [tracker, frequency_task(f"{self._p['ros.image_topic']} topic status", self._in_rate.hz(now),
                                         c.received, RATE_WINDOW_S, 0.0), inputs, self.anchor.task(), adapt,
                 timing_task("timing", self.stage_times.percentiles())]
        self.pub_diag.publish(diagnostic_array(self.get_name(), str(self.tracker.device), tasks,
                                               self.get_clock().now().to_msg()))

    def _gpu_memory(self) -> str:
        dev = self.tracker.device
        if getattr(dev, "type", "cpu") != "cuda":
            return "n/a (cpu)"
        import torch

        mib = 2**20
        return f"{torch.cuda.memory_allocated(dev) / mib:.0f} allocated, {torch.cuda.memory_reserved(dev) / mib:.0f} " \
               "reserved"


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
    instead of 0.1 s. The callbacks only decode and hand over; the tracker and adaptation run in their own threads.
    """
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor


def main(argv: list[str] | None = None) -> int:
    """Console script `st4rtrack-node`; ROS arguments after --ros-args.

    SIGINT and SIGTERM stop it the same way, within ~2 s, with rc 0: the lifecycle shutdown transition (workers
    first, adapted weights saved), then the executor, the node and the context. Our own handlers rather than
    rclpy's: rclpy's SIGTERM handler shuts the context down under the spinning executor (an RCLError, rc 1) while
    the tracker worker may still publish. A signal during start-up abandons it at once (rc 130), and one during a
    configure (the model load, seconds) fails that transition at once, so a supervisor never has to escalate.
    Signals within one second count as one (a terminal's Ctrl-C and the one launch forwards); a second one later
    kills the process at once.
    """
    args = list(sys.argv if argv is None else ["st4rtrack-node", *argv])
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    log = get_logger(NODE_NAME)

    stop = threading.Event()
    first: list[float] = []
    node: TrackerNode | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        # A terminal's Ctrl-C reaches the whole process group, and a non-interactive launch forwards its own SIGINT
        # too: signals within a second are one request to stop. A later one means "now" (default action).
        if first and time.monotonic() - first[0] > 1.0:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first[:] = first or [time.monotonic()]
        stop.set()
        if node is None or node.configuring:
            raise KeyboardInterrupt  # abandon the start-up or the model load at once (launch escalates after 5 s)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    _stop_with_parent()
    try:
        node = TrackerNode()
    except (NodeStartError, KeyboardInterrupt) as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        log.info("interrupted during start-up") if interrupted else log.error(str(e))
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
        return 130 if interrupted else 1
    if node.get_parameter("ros.autostart").value and not node.bring_up() and not stop.is_set():
        log.warning(f"not active; fix the cause above, then `ros2 lifecycle set {node.get_fully_qualified_name()} "
                    "configure` and `... activate` (the node stays up)")
    executor = node_executor(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # returns at least every 0.1 s, so a signal is seen promptly
    except ExternalShutdownException:
        pass
    finally:
        t0 = time.monotonic()
        node.trigger_shutdown()
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
