"""The node's frame path: input callbacks, the tracker thread and the publisher thread, and the state they share.

Threading (why): a camera publishes faster than the tracker may run, and queueing frames only adds latency. So the
image callback only decodes the image and puts it into a one-frame slot — a newer frame replaces an unprocessed one
and counts as dropped — and the tracker thread runs the tracker on whatever is newest. The publisher thread builds
and sends that frame's outputs while the tracker steps the next one (``handover.Handoff``: never more than one frame
behind, nothing dropped, order kept); tracks, clouds, markers and the path go out as CDR bytes written from the
arrays (``publishing``). Per-stage timings are in /diagnostics (``timing``). Depth and CameraInfo are matched to the
image by stamp with a bounded wait (``sync.StampBuffer``). Background adaptation runs in the tracker's own worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.clock import JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from st4rtrack_ros.data.messages import check_depth, check_stamp, depth_from_msg, image_to_rgb, intrinsics_from_msg
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.diagnostics import Task, frequency_task, timing_task
from st4rtrack_ros.ros.frame_stats import RATE_WINDOW_S, FrameStats, inputs_task
from st4rtrack_ros.ros.handover import Handoff, LatestSlot
from st4rtrack_ros.ros.sync import StampBuffer
from st4rtrack_ros.ros.world_anchor import WorldAnchor
from st4rtrack_ros.tracking.types import MIN_SIDE, BadInput, FrameDropped, FrameInput, StepResult


class Tracker(Protocol):
    """What the node needs of a tracker (``OnlineTracker``; tests pass a small stand-in)."""

    resets: int
    device: Any
    adaptation: Any

    def step(self, frame: FrameInput) -> StepResult: ...
    def reset(self, reason: str = ...) -> None: ...


@dataclass
class Frame:
    stamp: TimeMsg
    stamp_ns: int
    rgb: np.ndarray
    received: float  # time.monotonic() at receipt
    frame_id: str = ""
    decode_ms: float = 0.0  # image_to_rgb in the image callback


@dataclass
class Stepped:
    """A tracker result on its way to the publisher thread."""

    frame: Frame
    res: StepResult
    times_ms: dict[str, float]  # stages so far: queue, sync, the tracker's own stages


class FramePipeline:
    """One configuration's frame path: made by ``configure`` (with its tracker, outputs and world anchor), started by
    ``activate``, stopped by ``deactivate`` and dropped by ``cleanup``. ``p`` is the node's live parameter dict, so
    run-time parameter changes reach the callbacks."""

    def __init__(self, node: LifecycleNode, p: dict[str, Any], tracker: Tracker, outputs: Any, anchor: WorldAnchor,
                 pub_status: Any, stats: FrameStats) -> None:
        self.node, self.p, self.tracker, self.outputs, self.anchor = node, p, tracker, outputs, anchor
        self.pub_status, self.stats, self.counters = pub_status, stats, stats.counters
        self.subs: list[Any] = []  # created by start, destroyed by stop
        self.active = False  # a message already queued when the node was deactivated is not processed
        self._lock = threading.Lock()  # held around tracker.step and reset
        self._slot = LatestSlot()
        self._handoff = Handoff()  # tracker thread → publisher thread
        self._stop = threading.Event()
        self.worker: threading.Thread | None = None
        self.publisher: threading.Thread | None = None
        self._seen_resets = int(tracker.resets)
        self._last_stamp_ns: int | None = None
        self._pending_reset: str | None = None
        self._size: tuple[int, int] | None = None  # (w, h) of the last processed image
        slop, depth_n = float(p["ros.sync_slop_s"]), max(8, int(p["ros.input_depth"]) * 4)
        self.depth: StampBuffer[np.ndarray] = StampBuffer(depth_n, slop)
        self.info: StampBuffer[tuple[np.ndarray, int, int]] = StampBuffer(depth_n, slop)
        self._jump: Any = node.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=False),
            post_callback=self._on_time_jump)

    # -- start and stop (activate, deactivate) ---------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe the inputs and start the tracker and publisher threads."""
        self._make_inputs()
        self._slot.take(timeout=0.0)
        self._stop.clear()
        self._handoff.clear()
        self.worker = threading.Thread(target=self._work, name="st4rtrack-tracker", daemon=True)
        self.publisher = threading.Thread(target=self._publish_loop, name="st4rtrack-publisher", daemon=True)
        self.worker.start()
        self.publisher.start()
        self.active = True

    def stop(self, join_s: float = 10.0) -> None:
        """Unsubscribe and stop the tracker thread after its current frame."""
        for s in self.subs:
            self.node.destroy_subscription(s)
        self.subs = []
        self._stop.set()
        self._slot.wake()
        self._handoff.wake()
        end = time.monotonic() + join_s
        for attr, what in (("worker", "tracker worker still busy with a frame"),
                           ("publisher", "publisher thread still busy with a frame")):
            thread = getattr(self, attr)
            if thread is not None:
                thread.join(timeout=max(0.0, end - time.monotonic()))
                if thread.is_alive():
                    self.node.get_logger().warning(what)
                setattr(self, attr, None)
        self._slot.take(timeout=0.0)  # a frame of the old activation is not processed later
        self._handoff.clear()
        self.active = False

    def close(self) -> None:
        """Unregister the clock-jump callback (the clock would otherwise keep this pipeline alive after cleanup)."""
        if self._jump is not None:
            self._jump.unregister()
            self._jump = None

    # -- inputs (cheap: decode and hand over) ----------------------------------------------------------------------

    def _make_inputs(self) -> None:
        p, node = self.p, self.node
        rel, depth = P.parse_input_qos(str(p["ros.input_reliability"]), int(p["ros.input_depth"]))
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                         reliability=ReliabilityPolicy.BEST_EFFORT if rel == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        compressed = bool(p["ros.compressed"])
        topic = str(p["ros.image_topic"])
        image_topic = P.compressed_topic(topic) if compressed else topic
        self.subs = [node.create_subscription(CompressedImage if compressed else Image, image_topic,
                                              self.on_image, qos)]
        if p["ros.camera_info_topic"]:
            # best effort matches both reliable and best-effort CameraInfo publishers
            self.subs.append(node.create_subscription(CameraInfo, str(p["ros.camera_info_topic"]),
                                                      self.on_camera_info, QoSProfile(
                                                          depth=4, reliability=ReliabilityPolicy.BEST_EFFORT)))
        if p["ros.depth_topic"]:
            self.subs.append(node.create_subscription(
                Image, str(p["ros.depth_topic"]), self.on_depth,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(depth, 4), reliability=qos.reliability)))

    def fault(self, source: str, what: str, cause: str, detail: str, *, frame: bool = False,
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
                self.node.get_logger().error(line)
            else:
                self.node.get_logger().warning(line)

    def on_image(self, msg: Image | CompressedImage) -> None:
        if not self.active:  # a message already queued when the node was deactivated
            return
        now = time.monotonic()
        self.counters.received += 1
        self.stats.in_rate.tick(now)
        try:
            stamp_ns = cv.ns_from_stamp(msg.header.stamp)
            check_stamp(stamp_ns, self.node.get_clock().now().nanoseconds, float(self.p["ros.max_future_stamp_s"]))
            t0 = time.perf_counter()
            rgb = image_to_rgb(msg, int(self.p["ros.max_image_pixels"]), MIN_SIDE)
            decode_ms = (time.perf_counter() - t0) * 1e3
        except BadInput as e:
            self.fault("image", "rejected", e.cause, str(e), frame=True)
            return
        except Exception as e:  # image_to_rgb promises BadInput only; a decoder surprise must not stop the node
            self.fault("image", "rejected", "decode_error", f"{type(e).__name__}: {e}", frame=True)
            return
        if self._slot.put(Frame(msg.header.stamp, stamp_ns, rgb, now, msg.header.frame_id, decode_ms)):
            self.counters.dropped += 1

    def on_camera_info(self, msg: CameraInfo) -> None:
        """Keep K by stamp; an invalid CameraInfo is ignored (a matching good one, or the estimate, is used)."""
        try:
            self.info.add(cv.ns_from_stamp(msg.header.stamp), intrinsics_from_msg(msg))
        except BadInput as e:
            self.fault("camera_info", "ignored", e.cause, str(e))

    def on_depth(self, msg: Image) -> None:
        """Keep decoded depth by stamp; NaN/Inf pixels are holes, unusable images are ignored and counted."""
        try:
            depth = depth_from_msg(msg, int(self.p["ros.max_image_pixels"]))
            check_depth(depth, str(msg.encoding))
        except BadInput as e:
            self.fault("depth", "ignored", e.cause, str(e))
            return
        self.depth.add(cv.ns_from_stamp(msg.header.stamp), depth)

    def _on_time_jump(self, jump: TimeJump) -> None:
        if jump.delta.nanoseconds < 0:
            self._pending_reset = "ROS time jumped backwards"

    # -- resets ----------------------------------------------------------------------------------------------------

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
            self.node.get_logger().info(f"tracker reset: {reason}")

    def _new_world(self) -> None:
        """Path, map throttle and world anchor start again — after the publisher thread has published the frame
        it holds (that frame belongs to the old world)."""
        if not self._handoff.idle(timeout=5.0):
            self.node.get_logger().warning("publisher thread busy for 5 s: resetting the outputs anyway")
        self.outputs.reset()
        self.anchor.new_world()

    # -- the two threads -------------------------------------------------------------------------------------------

    def _work(self) -> None:
        """The tracker thread: step the newest frame, hand the result to the publisher thread, repeat."""
        while not self._stop.is_set():
            frame = self._slot.take(timeout=0.1)
            if frame is None:
                continue
            try:
                stepped = self._step(frame)
            except Exception as e:  # keep the node alive; the error is logged and counted
                self.fault("frame", "failed", "error", f"at {frame.stamp_ns} ns: {type(e).__name__}: {e}",
                           frame=True, error=True)
                continue
            if stepped is not None:
                t0 = time.perf_counter()
                if self._handoff.put(stepped, self._stop):  # waits while the previous frame is being published
                    self.stats.stage_times.add({"handoff_wait": (time.perf_counter() - t0) * 1e3})

    def _publish_loop(self) -> None:
        """The publisher thread: messages of frame N are built and sent while the tracker steps frame N+1."""
        while not self._stop.is_set():
            stepped = self._handoff.take(timeout=0.1)
            if stepped is None:
                continue
            try:
                self._emit(stepped)
            except Exception as e:  # keep the node alive; the error is logged and counted
                self.fault("frame", "failed", "error", f"publishing {stepped.frame.stamp_ns} ns: "
                           f"{type(e).__name__}: {e}", frame=True, error=True)
            finally:
                self._handoff.done()

    def _companions(self, f: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """K and depth for this image, matched by stamp (depth waited for, bounded)."""
        h, w = f.rgb.shape[:2]
        info = self.info.match(f.stamp_ns) if self.p["ros.camera_info_topic"] else None
        if info is None and self.p["ros.camera_info_topic"]:
            info = self.info.latest()  # intrinsics rarely change: an unmatched stamp still gives a K (counted)
        k = None
        if info is not None:
            k, kw, kh = info
            if (kw, kh) != (w, h):
                self.fault("camera_info", "not used", "size_mismatch", f"CameraInfo is {kw}×{kh} but images are "
                           f"{w}×{h}: K is estimated instead")
                k = None
        depth = None
        if self.p["ros.depth_topic"]:
            # wait for a late depth image while the depth stream is alive, and always on a world's first frame
            # (the first frame sets the metric scale)
            first = self.anchor.pending
            wait = float(self.p["ros.sync_max_wait_s"]) if first or self.depth.latest() is not None else 0.0
            depth = self.depth.match(f.stamp_ns, wait)
            if depth is not None and depth.shape != (h, w):
                self.fault("depth", "not used", "size_mismatch", f"depth {depth.shape[1]}×{depth.shape[0]} is not "
                           f"aligned with the {w}×{h} image: frame tracked without depth")
                depth = None
        return k, depth

    def process(self, f: Frame) -> None:
        """Step and publish one frame in the calling thread (tests; the node itself pipelines the two)."""
        stepped = self._step(f)
        if stepped is not None:
            self._emit(stepped)

    def _step(self, f: Frame) -> Stepped | None:
        """Run the tracker on a frame; None when the frame gives no output (refused, out of memory)."""
        times = {"decode": f.decode_ms, "queue": (time.monotonic() - f.received) * 1e3 - f.decode_ms}
        t_sync = time.perf_counter()
        h, w = f.rgb.shape[:2]
        if self._size is not None and self._size != (w, h):
            self.fault("image", "size changed", "size_changed", f"{self._size[0]}×{self._size[1]} → {w}×{h}: the "
                       "tracker restarts its window and world")
        self._size = (w, h)
        k, depth = self._companions(f)
        times["sync"] = (time.perf_counter() - t_sync) * 1e3
        with self._lock:
            if self._pending_reset:
                self._reset_locked(self._pending_reset)
                self._pending_reset = None
            if self._last_stamp_ns is not None and f.stamp_ns < self._last_stamp_ns:
                self.fault("stamp", "reset the tracker", "backwards", f"{f.stamp_ns} ns after {self._last_stamp_ns}"
                           " ns (looping bag?): new world")
                self._reset_locked("image stamps jumped backwards (looping bag?)", log=False)
            t0 = time.perf_counter()
            try:
                res = self.tracker.step(FrameInput(f.stamp_ns, f.rgb, k, depth))
            except ValueError as e:  # BadInput (cause given) or another refusal of the tracker
                self.fault("frame", "skipped", getattr(e, "cause", "invalid"), str(e), frame=True)
                return None
            except FrameDropped as e:  # out of memory: the tracker freed its caches, the next frame works
                self.counters.oom_dropped += 1
                self.node.get_logger().warning(str(e), throttle_duration_sec=5.0)
                return None
            times["step"] = (time.perf_counter() - t0) * 1e3
            times.update({f"step.{k}": v for k, v in (getattr(res, "timings_ms", None) or {}).items()
                          if k != "total"})
            self._last_stamp_ns = f.stamp_ns
            if int(self.tracker.resets) != self._seen_resets:  # the tracker reset itself (e.g. image size)
                self._seen_resets = int(self.tracker.resets)
                self._new_world()
        return Stepped(f, res, times)

    def _emit(self, s: Stepped) -> None:
        """Every output of a stepped frame, the status last (its receipt marks the frame done)."""
        f, res, times = s.frame, s.res, s.times_ms
        t0 = time.perf_counter()
        self.anchor.on_frame(f.stamp, f.stamp_ns, f.frame_id, self.outputs)
        times["anchor"] = (time.perf_counter() - t0) * 1e3
        times.update({f"publish.{k}": v for k, v in (self.outputs.publish(res, f.stamp) or {}).items()})
        latency = time.monotonic() - f.received
        self.stats.latency.append(latency)
        self.counters.processed += 1
        self.stats.out_rate.tick(time.monotonic())
        t0 = time.perf_counter()
        status = self.stats.status_message(res, latency, times["step"], int(self.tracker.resets),
                                           self.tracker.adaptation)
        status.header.stamp, status.header.frame_id = f.stamp, self.outputs.world_frame
        self.pub_status.publish(status)
        times["publish.status"] = (time.perf_counter() - t0) * 1e3
        times["latency"] = latency * 1e3
        self.stats.stage_times.add(times)

    # -- /diagnostics ----------------------------------------------------------------------------------------------

    def diagnostic_tasks(self, state: str) -> list[Task]:
        """The node's /diagnostics tasks: tracker, input rate, input sync, world anchor, adaptation, timing."""
        now, s = time.monotonic(), self.stats
        return [s.tracker_task(state, self.tracker.resets, self.tracker.device, now),
                frequency_task(f"{self.p['ros.image_topic']} topic status", s.in_rate.hz(now), s.counters.received,
                               RATE_WINDOW_S, 0.0),
                inputs_task(self.depth.counts, self.info.counts, self.p), self.anchor.task(),
                s.adaptation_task(self.tracker.adaptation is not None),
                timing_task("timing", s.stage_times.percentiles())]
