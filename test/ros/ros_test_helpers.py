"""Helpers shared by the DDS tests in this folder (not collected: no ``test_`` prefix)."""

from __future__ import annotations

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
