"""Per-cause fault counting with a per-cause log throttle (NumPy/ROS-free, so it is tested without DDS).

Why not rclpy's ``throttle_duration_sec``: it throttles per call site, so one noisy cause (say a camera sending a
wrong ``step`` at 30 Hz) would hide a second one logged from the same line. Here every key — ``<source>.<cause>``,
e.g. ``image.step_mismatch`` — gets its own line at most once per period, saying how many were not logged since.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LOG_PERIOD_S = 5.0


class FaultLog:
    """Counts of faults by key (published in /diagnostics) and the decision when to log one."""

    def __init__(self, period_s: float = LOG_PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}
        self._lock = threading.Lock()  # the input callbacks and the tracker worker both report

    def add(self, key: str) -> int | None:
        """Count one fault; None = stay quiet, else log now (the number not logged since the last line)."""
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._quiet[key] = self._quiet.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._quiet.pop(key, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts, sorted by key (for diagnostics)."""
        with self._lock:
            return dict(sorted(self.counts.items()))
