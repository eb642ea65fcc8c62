"""`st4rtrack-node`: the ROS 2 lifecycle node around :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker`.

Lifecycle (REP 2002 managed node): ``configure`` reads the parameters and loads the model (a bad checkpoint fails
the transition with the reason; the node stays up, unconfigured); ``activate`` subscribes and publishes;
``deactivate`` stops processing and keeps the world; ``cleanup`` frees the model (and GPU memory); ``shutdown``
stops the workers and saves adapted weights. ``st4rtrack-node`` alone (``ros.autostart``) drives itself to active;
the launch file drives the transitions instead. Structural parameters (model, tracking, topics, frames) change only
while the node is unconfigured and take effect at the next ``configure``.

Frames (REP 103/105): the tracker's world is the first anchor's optical frame; the node publishes it as
``world_frame`` with REP 103 axes and the camera as its own ``camera_frame`` (optical axes), never the robot's
camera frame, so /tf never gets a second parent. With ``ros.fixed_frame`` (e.g. ``odom``) the node looks up the
camera's pose in that frame at the first frame of each world and publishes ``fixed_frame → world_frame`` on
/tf_static, so every output lands in the robot's tree.

This module only wires (under 400 lines): transitions, services, parameter callbacks, the executor and ``main``
with its signal handling. The frame path — input callbacks, a tracker thread and a publisher thread, and why it is
threaded — is ``frame_pipeline.FramePipeline``, one per configuration (``node.frame_pipeline``, where in-process
tests feed messages and frames); what it reports is ``frame_stats``; parameter descriptors and checks are
``node_params``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.diagnostics import diagnostic_array
from st4rtrack_ros.ros.env import PARENT_PID_ENV
from st4rtrack_ros.ros.frame_pipeline import FramePipeline, Tracker
from st4rtrack_ros.ros.frame_stats import FrameStats
from st4rtrack_ros.ros.node_params import check_all, descriptor, refuse_change
from st4rtrack_ros.ros.world_anchor import WorldAnchor

try:  # generated from msg/ by colcon or scripts/setup_env.sh (step 'messages')
    from st4rtrack_ros.msg import TrackerStatus
    from st4rtrack_ros.ros.publishing import Outputs
except ImportError:  # pragma: no cover - reported at start-up
    TrackerStatus = Outputs = None  # type: ignore[assignment,misc]

NODE_NAME = "st4rtrack"
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class NodeStartError(RuntimeError):
    """The node cannot be configured (no model, bad parameters); the message says what to do."""


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
                self.declare_parameter(name, default, descriptor(name, default))
            except ParameterException as e:  # a -p/--params-file value of the wrong type or out of range
                raise NodeStartError(f"bad parameter {name}: {e}") from e
        self._p = {name: self.get_parameter(name).value for name in self._defaults}
        why = check_all(self._p, self._defaults)
        if why:
            raise NodeStartError(f"bad parameter: {why}")
        self._given_tracker = tracker
        self.tracker: Tracker | None = None
        self.outputs: Any = None
        self.anchor: WorldAnchor | None = None
        self.pub_status: Any = None
        self.frame_pipeline: FramePipeline | None = None  # made by configure, dropped by cleanup
        self.stats = FrameStats()  # outlives the pipelines: counts run on across transitions
        self.counters = self.stats.counters
        self._entities: list[Any] = []  # created by configure, destroyed by cleanup
        self._state = "unconfigured"
        self.configuring = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if hasattr(self, "add_post_set_parameters_callback"):  # Jazzy and later; Humble applies in the validator
            self.add_post_set_parameters_callback(self._after_set_parameters)

    # -- parameters ------------------------------------------------------------------------------------------------

    def _param(self, name: str) -> Any:
        return self._p[name]

    def _on_set_parameters(self, params: Sequence[Parameter]) -> SetParametersResult:
        """Validate changes: ranges and choices always; structural ones only while unconfigured."""
        for p in params:
            if p.name not in self._defaults:
                continue  # use_sim_time etc.
            why = refuse_change(p.name, p.value, self._defaults[p.name], self._state, self.get_fully_qualified_name(),
                                self.tracker is not None and self.tracker.adaptation is None)
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
        self.frame_pipeline.start()
        self._state = "active"
        self.get_logger().info(
            f"ready: active, input {self.frame_pipeline.subs[0].topic_name} "
            f"({'CompressedImage' if self._p['ros.compressed'] else 'Image'}), "
            f"depth {self._p['ros.depth_topic'] or 'none'}, world frame '{self.outputs.world_frame}', camera frame "
            f"'{self.outputs.camera_frame}', fixed frame {self._p['ros.fixed_frame'] or 'none'}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.frame_pipeline.stop()
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
        why = check_all(self._p, self._defaults)
        if why:
            raise NodeStartError(f"bad parameter: {why}")
        prefix = str(self._p["ros.frame_prefix"])
        self.tracker = self._given_tracker if self._given_tracker is not None else self._build_tracker()
        self.outputs = Outputs(self, prefix + str(self._p["ros.world_frame"]),
                               prefix + str(self._p["ros.camera_frame"]), self._param)
        self.anchor = WorldAnchor(self, str(self._p["ros.fixed_frame"]), str(self._p["ros.robot_camera_frame"]),
                                  float(self._p["ros.tf_timeout_s"]))
        self.pub_status = self.create_lifecycle_publisher(TrackerStatus, "~/status", 5)
        self.frame_pipeline = FramePipeline(self, self._p, self.tracker, self.outputs, self.anchor, self.pub_status,
                                            self.stats)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._entities += [
            self.pub_diag,
            self.create_service(Trigger, "~/reset", self._on_reset),
            self.create_service(Trigger, "~/save_adaptation", self._on_save_adaptation),
            self.create_service(Trigger, "~/revert_adaptation", self._on_revert_adaptation),
            self.create_timer(float(self._p["ros.diagnostics_period_s"]), self._publish_diagnostics),
            *self.anchor.subscriptions,
        ]
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
        if self.frame_pipeline is not None:
            self.frame_pipeline.stop(join_s=0.5 * budget_s)
            self.frame_pipeline.close()
            self.frame_pipeline = None  # it holds the tracker too: dropped before the model is freed below
        tracker, self.tracker = self.tracker, None
        if ad is not None:
            if ad.stop(timeout=max(0.05, end - time.monotonic())):
                self.get_logger().info(f"adaptation worker stopped cleanly (weights version {ad.version} kept)")
            else:
                self.get_logger().warning("adaptation worker still in a round: it ends with the process")
        publishers = self.outputs.all() if self.outputs is not None else []
        for p in [*publishers, self.pub_status]:
            if p is not None:
                self.destroy_lifecycle_publisher(p)
        self.pub_status = None
        for e in self._entities:
            for destroy in (self.destroy_publisher, self.destroy_service, self.destroy_timer,
                            self.destroy_subscription):
                if destroy(e):
                    break
        self._entities, self.outputs = [], None
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

    # -- services, adaptation switch, /diagnostics -----------------------------------------------------------------

    def reset(self, reason: str) -> None:
        """Reset the tracker and the node's own history (path, map throttle, world anchor)."""
        self.frame_pipeline.reset(reason)

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

    def _apply_adaptation(self, enabled: bool, startup: bool = False) -> None:
        ad = self.tracker.adaptation if self.tracker is not None else None
        if ad is None:
            if enabled and startup:
                self.get_logger().warning("adaptation.enabled is true but this tracker has no adaptation worker")
            return
        ad.set_enabled(enabled)
        self.get_logger().info(f"adaptation {'enabled' if enabled else 'disabled'}")

    def _publish_diagnostics(self) -> None:
        if self.frame_pipeline is None or self.tracker is None:
            return
        tasks = self.frame_pipeline.diagnostic_tasks(self._state)
        self.pub_diag.publish(diagnostic_array(self.get_name(), str(self.tracker.device), tasks,
                                               self.get_clock().now().to_msg()))


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
