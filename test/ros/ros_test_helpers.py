"""Helpers shared by the DDS tests in this folder (not collected: no ``test_`` prefix)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from st4rtrack_ros.ros.conversions import stamp_from_ns


def rgb8_image(rgb: np.ndarray, stamp_ns: int) -> Image:
    """A camera frame as the node receives it: rgb8, tightly packed rows."""
    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = stamp_from_ns(stamp_ns)
    m.header.frame_id = "camera_optical_frame"
    m.height, m.width = rgb.shape[:2]
    m.encoding, m.step, m.data = "rgb8", rgb.shape[1] * 3, rgb.tobytes()
    return m


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``cond`` every 10 ms until it holds or ``timeout`` s pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@contextmanager
def shut_down_after(node: Any, context: Any) -> Iterator[Any]:
    """Yield ``node``; then the lifecycle shutdown (workers stopped), the node and its context are destroyed."""
    import rclpy

    try:
        yield node
    finally:
        node.trigger_shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
