"""The launch file compiles and the RViz config is a valid config on the world frame (no ROS install needed)."""

from __future__ import annotations

import py_compile
from pathlib import Path

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "tracker.launch.py"


def test_launch_file_compiles() -> None:
    py_compile.compile(str(LAUNCH), doraise=True)


def test_rviz_config_is_yaml_with_world_fixed_frame() -> None:
    import yaml

    cfg = yaml.safe_load((LAUNCH.parents[1] / "rviz" / "tracker.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "st4r_world"
    classes = {d["Class"] for d in vm["Displays"]}
    assert {"rviz_default_plugins/PointCloud2", "rviz_default_plugins/MarkerArray", "rviz_default_plugins/Path",
            "rviz_default_plugins/Pose"} <= classes


def test_launch_arguments_override_the_params_file_only_when_given() -> None:
    from st4rtrack_ros.ros.launch_args import node_setup

    empty = dict.fromkeys(("namespace", "image", "camera_info", "depth", "compressed", "fixed_frame", "device",
                           "checkpoint", "use_sim_time", "bag"), "")
    params, remaps = node_setup(empty)
    assert params == {"ros.autostart": False} and remaps == []  # the params file decides everything else
    params, remaps = node_setup({**empty, "namespace": "/robot1/", "image": "/cam/color", "depth": "/cam/depth",
                                 "compressed": "true", "fixed_frame": "odom", "bag": "/data/run1"})
    assert params["ros.frame_prefix"] == "robot1/" and params["ros.compressed"] is True
    assert params["ros.fixed_frame"] == "odom" and params["use_sim_time"] is True  # a bag implies sim time
    assert params["ros.image_topic"] == "/camera/image_raw" and params["ros.depth_topic"] == "/camera/depth/image_raw"
    assert ("/camera/image_raw", "/cam/color") in remaps and ("/camera/depth/image_raw", "/cam/depth") in remaps
    assert ("/camera/image_raw/compressed", "/cam/color/compressed") in remaps
    assert "ros.camera_info_topic" not in params
    assert node_setup({**empty, "use_sim_time": "false"})[0]["use_sim_time"] is False


def test_rviz_config_follows_namespace_and_fixed_frame() -> None:
    import yaml

    from st4rtrack_ros.ros.launch_args import rviz_config

    template = (LAUNCH.parents[1] / "rviz" / "tracker.rviz").read_text()
    assert rviz_config(template, "") == template
    cfg = yaml.safe_load(rviz_config(template, "/robot1", ""))["Visualization Manager"]
    assert cfg["Global Options"]["Fixed Frame"] == "robot1/st4r_world"
    topics = [d["Topic"]["Value"] for d in cfg["Displays"] if "Topic" in d]
    assert topics and all(t.startswith("/robot1/st4rtrack/") for t in topics), topics
    joined = yaml.safe_load(rviz_config(template, "robot1", "odom"))["Visualization Manager"]
    assert joined["Global Options"]["Fixed Frame"] == "odom"


def test_launch_file_declares_what_the_rules_read() -> None:
    import ast

    tree = ast.parse(LAUNCH.read_text())
    args = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGS")
    declared = {k.value for k in args.value.keys}
    assert {"namespace", "image", "camera_info", "depth", "compressed", "fixed_frame", "device", "checkpoint",
            "use_sim_time", "bag", "record", "rviz", "autostart", "params_file"} <= declared
