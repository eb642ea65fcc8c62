"""/diagnostics as diagnostic_updater shapes it: one DiagnosticStatus per task, named ``<node>: <task>``, with the
node's hardware id, a level, a one-line message and key/value pairs; the input topic as a frequency/timestamp task
like diagnostic_updater's TopicDiagnostic. diagnostic_updater has no wheel for the pip venv, and the node needs only
its message shape, so this builds it (rclpy messages, no other ROS library)."""

from __future__ import annotations

from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass
class Task:
    """One diagnostic task's result."""

    name: str
    level: int = OK
    message: str = ""
    values: dict[str, str] = field(default_factory=dict)

    def summary(self, level: int, message: str) -> None:
        """Like DiagnosticStatusWrapper.mergeSummary: keep the worst level; messages of that level are joined."""
        if level > self.level:
            self.level, self.message = level, message
        elif level == self.level and message and message not in self.message:
            self.message = f"{self.message}; {message}" if self.message else message


def frequency_task(name: str, rate_hz: float, events_total: int, window_s: float, min_hz: float) -> Task:
    """diagnostic_updater.FrequencyStatus's keys; WARN below ``min_hz`` once events came (0 = no bound)."""
    t = Task(name, values={"Events since startup": str(events_total), "Duration of window (s)": f"{window_s:.1f}",
                           "Actual frequency (Hz)": f"{rate_hz:.2f}", "Minimum acceptable frequency (Hz)":
                           f"{min_hz:.2f}"})
    if events_total and min_hz > 0 and rate_hz < min_hz:
        t.summary(WARN, "frequency too low")
    else:
        t.summary(OK, "no events yet" if not events_total else "desired frequency met")
    return t


def timing_task(name: str, stages: dict[str, tuple[float, float]]) -> Task:
    """Per-stage durations of the node's frame path (ms, p50 / p95 over the recent frames): where a frame's time
    goes (decode, queue, sync, step and the tracker's own stages, anchor, publish.* per output, status, latency)."""
    t = Task(name, values={f"{k}_ms": f"{p50:.1f} / {p95:.1f}" for k, (p50, p95) in stages.items()})
    t.summary(OK, "p50 / p95 ms per stage" if stages else "no frames yet")
    return t


def diagnostic_array(node_name: str, hardware_id: str, tasks: list[Task], stamp: object) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    for t in tasks:
        st = DiagnosticStatus(level=t.level, name=f"{node_name}: {t.name}", message=t.message,
                              hardware_id=hardware_id)
        st.values = [KeyValue(key=k, value=v) for k, v in t.values.items()]
        arr.status.append(st)
    return arr
