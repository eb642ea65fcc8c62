"""Thread hand-over primitives of the node's frame path (ROS-free): the image callback's one-frame slot and the
tracker thread's one-result hand-over to the publisher thread."""

from __future__ import annotations

import threading
from typing import Any


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
