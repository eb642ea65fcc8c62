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
