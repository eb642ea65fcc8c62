"""Matching an image with its aligned depth image and CameraInfo by stamp, with a bounded wait (no rclpy here).

Behaves like message_filters' ApproximateTimeSynchronizer for one driving topic: a companion matches an image when
their stamps differ by at most ``slop``; the closest one wins. Companions may arrive before or after their image
(a depth camera's driver often publishes depth tens of milliseconds after colour), so the tracker thread waits up to
``max_wait`` for a late one — the callbacks keep filling the buffers meanwhile — and then goes on without it, counted.
message_filters has no wheel for the pip venv, and it would queue images, which the node must not do (it keeps only
the newest frame so latency never grows): so this small buffer, not the library.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class SyncCounts:
    """How images found their companion: at once, after waiting, or not at all (``missed``)."""

    matched: int = 0
    waited: int = 0
    missed: int = 0


class StampBuffer(Generic[T]):
    """The last ``size`` messages of one companion topic, keyed by stamp (ns)."""

    def __init__(self, size: int, slop_s: float) -> None:
        self._items: deque[tuple[int, T]] = deque(maxlen=max(1, size))
        self._slop_ns = int(slop_s * 1e9)
        self._cond = threading.Condition()
        self.counts = SyncCounts()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._cond:
            self._items.append((stamp_ns, item))
            self._cond.notify_all()

    def latest(self) -> T | None:
        with self._cond:
            return self._items[-1][1] if self._items else None

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    def _closest(self, stamp_ns: int) -> T | None:
        best: tuple[int, T] | None = None
        for s, item in self._items:
            d = abs(s - stamp_ns)
            if d <= self._slop_ns and (best is None or d < best[0]):
                best = (d, item)
        return None if best is None else best[1]

    def match(self, stamp_ns: int, max_wait_s: float = 0.0) -> T | None:
        """The message closest to ``stamp_ns`` within the slop; waits up to ``max_wait_s`` for one to arrive."""
        deadline = time.monotonic() + max_wait_s
        with self._cond:
            item = self._closest(stamp_ns)
            if item is not None:
                self.counts.matched += 1
                return item
            while (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
                item = self._closest(stamp_ns)
                if item is not None:
                    self.counts.waited += 1
                    return item
            self.counts.missed += 1
            return None
