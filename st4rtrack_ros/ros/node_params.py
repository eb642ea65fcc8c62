"""The node's parameters on the rclpy side: descriptors built from the ROS-free schema (``params``) and the checks
its set-parameters callback and ``configure`` apply."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from st4rtrack_ros.ros import params as P


def descriptor(name: str, default: Any) -> ParameterDescriptor:
    """Description, choices and range of a parameter as ``ros2 param describe`` shows them."""
    spec = P.spec_for(name)
    text = spec.description if spec.read_only is False else f"{spec.description} [structural: set while unconfigured]"
    d = ParameterDescriptor(name=name, description=text)
    if spec.choices:
        d.additional_constraints = f"one of {list(spec.choices)}"
    if isinstance(default, bool) or spec.min is None or spec.max is None:
        return d
    if isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=0)]
    elif isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)]
    return d


def check_all(values: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    """Why this full set of values cannot be configured, or None (at start-up and at each ``configure``)."""
    for name, value in values.items():
        why = P.validate(name, value, defaults[name])
        if why:
            return why
    if values["ros.world_frame"] == values["ros.camera_frame"]:
        return "ros.world_frame and ros.camera_frame must differ"
    return None


def refuse_change(name: str, value: Any, default: Any, state: str, node_name: str,
                  without_adaptation: bool) -> str | None:
    """Why one run-time change is refused, or None: ranges and choices always; structural parameters only while
    unconfigured; ``adaptation.enabled`` needs an adaptation worker (``without_adaptation``: the tracker has none)."""
    why = P.validate(name, value, default)
    if why is None and P.spec_for(name).read_only and state != "unconfigured":
        why = (f"{name} is structural: change it while the node is unconfigured "
               f"(`ros2 lifecycle set {node_name} cleanup`), now {state}")
    if why is None and name == "adaptation.enabled" and value and without_adaptation:
        why = "adaptation.enabled: this tracker has no adaptation worker"
    return why
