"""What the node reports about its frame path: counts, rates and per-stage timings, and the ``~/status`` message and
/diagnostics tasks built from them. One :class:`FrameStats` lives as long as the node, so its counts run on across
deactivate/activate and cleanup/configure."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from st4rtrack_ros.ros.diagnostics import OK, WARN, Task
from st4rtrack_ros.ros.faults import FaultLog
from st4rtrack_ros.ros.sync import SyncCounts
from st4rtrack_ros.tracking.types import StepResult

try:  # generated from msg/ by colcon or scripts/setup_env.sh (step 'messages'); the node reports its absence
    from st4rtrack_ros.msg import TrackerStatus
except ImportError:  # pragma: no cover - reported at start-up
    TrackerStatus = None  # type: ignore[assignment,misc]

LATENCY_WINDOW = 300  # frames in the diagnostics' latency percentiles
RATE_WINDOW_S = 5.0


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
class Counters:
    received: int = 0
    processed: int = 0
    dropped: int = 0
    rejected: int = 0
    oom_dropped: int = 0  # the tracker ran out of device memory on the frame (FrameDropped)
    faults: FaultLog = field(default_factory=FaultLog)  # bad input by '<source>.<cause>' (/diagnostics)


class Rate:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self.t: deque[float] = deque(maxlen=1000)

    def tick(self, t: float) -> None:
        self.t.append(t)

    def hz(self, now: float) -> float:
        recent = [t for t in self.t if now - t <= RATE_WINDOW_S]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0


def adaptation_status(adaptation: Any) -> dict[str, Any]:
    """The adaptation worker's status dict, or an empty one when there is none or it fails."""
    if adaptation is None:
        return {}
    try:
        s = adaptation.status()
        return dict(s) if isinstance(s, dict) else {}
    except Exception:  # a status read must never take the node down
        return {}


def losses(value: Any) -> tuple[list[str], list[float]]:
    """last_losses as (names, values): accepts a dict, a sequence or None."""
    if isinstance(value, dict):
        return [str(k) for k in value], [float(v) for v in value.values()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [f"loss{i}" for i in range(len(value))], [float(v) for v in value]
    return [], []


def gpu_memory(device: Any) -> str:
    """Allocated and reserved CUDA memory (MiB) of the tracker's device, for /diagnostics."""
    if getattr(device, "type", "cpu") != "cuda":
        return "n/a (cpu)"
    import torch  # only on CUDA: the node itself never needs torch at import

    mib = 2**20
    return f"{torch.cuda.memory_allocated(device) / mib:.0f} allocated, " \
           f"{torch.cuda.memory_reserved(device) / mib:.0f} reserved"


def inputs_task(depth: SyncCounts, info: SyncCounts, p: dict[str, Any]) -> Task:
    """How depth and CameraInfo matched the images, and where the metric scale comes from."""
    task = Task("input sync", values={
        **{f"depth_{k}": str(v) for k, v in vars(depth).items()},
        **{f"camera_info_{k}": str(v) for k, v in vars(info).items()},
        "depth_topic": str(p["ros.depth_topic"]) or "none",
        "metric_scale_from": "depth" if p["ros.depth_topic"] and p["tracking.use_depth_scale"]
        else "tracking.metric_scale" if p["tracking.metric_scale"] > 0 else "none (model units)"})
    task.summary(WARN if depth.missed else OK,
                 f"{depth.missed} frames without their depth image" if depth.missed else "inputs in sync")
    return task


@dataclass
class FrameStats:
    """Counts, rates, latencies and stage timings of the frame path (written by its threads, read by /diagnostics),
    and the adaptation status last published."""

    counters: Counters = field(default_factory=Counters)
    stage_times: StageTimes = field(default_factory=StageTimes)
    latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))  # seconds, receipt → status
    in_rate: Rate = field(default_factory=Rate)
    out_rate: Rate = field(default_factory=Rate)
    last_status: dict[str, Any] = field(default_factory=dict)

    def status_message(self, res: StepResult, latency: float, step_ms: float, resets: int,
                       adaptation: Any) -> Any:
        """The ``~/status`` message of a published frame (header left to the caller); remembers the adaptation
        status it carries for /diagnostics."""
        st = adaptation_status(adaptation)
        c = self.counters
        s = TrackerStatus(frames_received=c.received, frames_processed=c.processed, frames_dropped=c.dropped,
                          frames_rejected=c.rejected, resets=resets,
                          latency_ms=float(latency * 1e3), step_ms=float(step_ms),
                          metric_scale=bool(res.metric_scale), num_tracks=len(res.tracks),
                          adaptation_available=adaptation is not None,
                          adaptation_enabled=bool(st.get("enabled", False)),
                          adaptation_busy=bool(st.get("busy", False)),
                          weights_version=int(st.get("version", res.weights_version) or 0),
                          adaptation_rounds=int(st.get("rounds", 0) or 0),
                          adaptation_accepted=int(st.get("accepted", 0) or 0),
                          adaptation_rolled_back=int(st.get("rolled_back", 0) or 0))
        s.last_loss_names, s.last_loss_values = losses(st.get("last_losses"))
        self.last_status = st
        return s

    def tracker_task(self, state: str, resets: Any, device: Any, now: float) -> Task:
        """Rates, latency percentiles, frame counts and per-cause faults; warns when images give no output."""
        lat = np.array(self.latency) * 1e3 if self.latency else np.zeros(0)
        c = self.counters
        task = Task("tracker", values={
            "state": state,
            "input_rate_hz": f"{self.in_rate.hz(now):.2f}", "output_rate_hz": f"{self.out_rate.hz(now):.2f}",
            "latency_p50_ms": f"{np.percentile(lat, 50):.1f}" if len(lat) else "n/a",
            "latency_p95_ms": f"{np.percentile(lat, 95):.1f}" if len(lat) else "n/a",
            "frames_received": str(c.received), "frames_processed": str(c.processed),
            "frames_dropped": str(c.dropped), "frames_rejected": str(c.rejected),
            "resets": str(resets), "frames_oom_dropped": str(c.oom_dropped),
            "gpu_memory_mb": gpu_memory(device),
            **{key: str(n) for key, n in c.faults.snapshot().items()},  # e.g. image.step_mismatch: 3
        })
        idle = c.received == 0 or now - (self.in_rate.t[-1] if self.in_rate.t else now) > 5.0
        if c.received and c.processed == 0 and not idle:
            task.summary(WARN, "receiving images but no output yet")
        else:
            task.summary(OK, f"{state}: waiting for images" if idle else "tracking")
        return task

    def adaptation_task(self, available: bool) -> Task:
        """The adaptation status last published, and why adaptation switched itself off (if it did)."""
        st = self.last_status
        task = Task("adaptation", values={k: str(v) for k, v in st.items() if k != "last_losses"})
        task.summary(OK, "unavailable" if not available else "enabled" if st.get("enabled") else "disabled")
        if st.get("disabled_reason"):
            task.summary(WARN, str(st["disabled_reason"]))
        return task
