"""st4rtrack_ros: online St4RTrack+ 4D perception for ROS 2.

The core (model, geometry, adaptation, tracking, data, evaluation, training) imports no rclpy; ``ros/`` is the
thin adapter and ``cli/`` the command-line tools. The front door (``pipeline``) is re-exported here:

    from st4rtrack_ros import FrameInput, TrackerSpec, build_tracker

    tracker = build_tracker(TrackerSpec(device="cpu"))
    result = tracker.step(FrameInput(stamp_ns, rgb, k))

The names load on first use, so ``import st4rtrack_ros`` (the generated messages do) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from st4rtrack_ros.adaptation.config import AdaptationConfig
    from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
    from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
    from st4rtrack_ros.tracking.types import FrameInput, StepResult

__version__ = "0.1.0"

_EXPORTS = {
    "TrackerSpec": "st4rtrack_ros.pipeline",
    "build_tracker": "st4rtrack_ros.pipeline",
    "OnlineTracker": "st4rtrack_ros.tracking.tracker",
    "TrackerConfig": "st4rtrack_ros.tracking.tracker",
    "FrameInput": "st4rtrack_ros.tracking.types",
    "StepResult": "st4rtrack_ros.tracking.types",
    "AdaptationConfig": "st4rtrack_ros.adaptation.worker",
}
__all__ = ["AdaptationConfig", "FrameInput", "OnlineTracker", "StepResult", "TrackerConfig", "TrackerSpec",
           "__version__", "build_tracker"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
