"""What launch/tracker.launch.py passes to the node and RViz, as plain functions (no launch or rclpy import), so the
rules are tested where the launch stack is not installed.

- A launch argument overrides the parameters file only when it is given (non-empty): a user's params file keeps its
  image topic, CameraInfo topic, compression, device, checkpoint and fixed frame otherwise.
- ``image``, ``camera_info`` and ``depth`` are remappings of the node's topics (the ROS way), not parameters.
- RViz gets a config that follows the namespace (topics and frame prefix) and the robot's fixed frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: launch argument → node parameter (string arguments, set only when non-empty).
PARAM_ARGS = {"device": "model.device", "checkpoint": "model.checkpoint", "fixed_frame": "ros.fixed_frame"}
#: the node's default input topics (config/tracker.yaml), the names the remappings replace.
IMAGE, CAMERA_INFO, DEPTH = "/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw"
RVIZ_NODE_NS = "/st4rtrack/"
RVIZ_FRAME = "st4r_world"


def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "on")


def node_setup(args: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Launch arguments (strings, '' = not given) → (parameter overrides, remappings) for the tracker node.

    ``ros.autostart`` is always false: the launch file drives the lifecycle transitions itself.
    """
    ns = args.get("namespace", "").strip("/")
    params: dict[str, Any] = {"ros.autostart": False}
    if ns:
        params["ros.frame_prefix"] = f"{ns}/"
    for arg, name in PARAM_ARGS.items():
        if args.get(arg, ""):
            params[name] = args[arg]
    if args.get("compressed", ""):
        params["ros.compressed"] = _true(args["compressed"])
    if args.get("bag", "") or args.get("use_sim_time", ""):
        params["use_sim_time"] = bool(args.get("bag", "")) or _true(args["use_sim_time"])
    # a given topic argument remaps the node's own name for that input (set too, so a params file that renamed or
    # switched off the input does not hide the remapping)
    remaps: list[tuple[str, str]] = []
    for arg, name, own in (("image", "ros.image_topic", IMAGE), ("camera_info", "ros.camera_info_topic", CAMERA_INFO),
                           ("depth", "ros.depth_topic", DEPTH)):
        if args.get(arg, ""):
            params[name] = own
            remaps.append((own, args[arg]))
    if args.get("image", ""):
        remaps.append((f"{IMAGE}/compressed", f"{args['image'].rstrip('/')}/compressed"))
    return params, remaps


def rviz_config(template: str, namespace: str, fixed_frame: str = "") -> str:
    """The RViz config for a node in ``namespace``: its topics and its (prefixed) world frame, or the robot's fixed
    frame when the world is joined to it."""
    ns = namespace.strip("/")
    text = template.replace(f"Value: {RVIZ_NODE_NS}", f"Value: /{ns}{RVIZ_NODE_NS}" if ns else f"Value: {RVIZ_NODE_NS}")
    frame = fixed_frame or (f"{ns}/{RVIZ_FRAME}" if ns else RVIZ_FRAME)
    return text.replace(f"Fixed Frame: {RVIZ_FRAME}", f"Fixed Frame: {frame}")


def record_topics(namespace: str) -> list[str]:
    """The node's outputs, for ``ros2 bag record``."""
    ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    mine = [f"{ns}/st4rtrack/{t}" for t in ("points", "map", "tracks", "track_markers", "camera_pose", "path",
                                            "status")]
    return [*mine, "/tf", "/tf_static", "/diagnostics"]
