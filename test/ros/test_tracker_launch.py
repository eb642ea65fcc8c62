"""`ros2 launch st4rtrack_ros tracker.launch.py` on a ROS 2 install (launch_pytest). Without launch (the PyPI-wheel
set-up) it skips; test_node_dds.py starts the same executable with --ros-args there."""

from __future__ import annotations

from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "tracker.launch.py"

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installed (no wheels on PyPI): needs a ROS 2 install; "
    "test/ros/test_node_dds.py covers the node started directly with --ros-args"
)
launch_ros = pytest.importorskip("launch_ros", reason="launch_ros is not installed (needs a ROS 2 install)")

from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from launch import LaunchDescription  # noqa: E402


@launch_pytest.fixture
def launch_description() -> LaunchDescription:
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH)),
                                 launch_arguments={"device": "cpu"}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=launch_description)
def test_node_comes_up() -> None:
    """The launched node offers its reset service within 60 s (needs the default model installed)."""
    import rclpy
    from std_srvs.srv import Trigger

    rclpy.init()
    try:
        node = rclpy.create_node("launch_test_probe")
        cli = node.create_client(Trigger, "/st4rtrack/reset")
        assert cli.wait_for_service(timeout_sec=60.0), "st4rtrack node did not come up"
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
