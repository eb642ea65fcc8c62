"""Launch the st4rtrack tracker node (and optionally RViz and a bag player).

    ros2 launch st4rtrack_ros tracker.launch.py image_topic:=/camera/color/image_raw rviz:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription


def _nodes(context, *args, **kwargs):
    """The tracker node; parameters that are empty on the command line keep the params file's values."""
    share = get_package_share_directory("st4rtrack_ros")
    ns = LaunchConfiguration("namespace").perform(context).strip("/")
    overrides = {
        "use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true",
        "ros.image_topic": LaunchConfiguration("image_topic").perform(context),
        "ros.camera_info_topic": LaunchConfiguration("camera_info_topic").perform(context),
        "ros.compressed": LaunchConfiguration("compressed").perform(context).lower() == "true",
        "ros.frame_prefix": f"{ns}/" if ns else "",
    }
    for arg, name in (("device", "model.device"), ("checkpoint", "model.checkpoint")):
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[name] = value
    params_file = LaunchConfiguration("params_file").perform(context) or os.path.join(share, "config",
                                                                                       "tracker.yaml")
    return [Node(
        package="st4rtrack_ros",
        executable="st4rtrack-node",
        name="st4rtrack",
        namespace=ns,
        output="screen",
        parameters=[params_file, overrides],
    )]


def generate_launch_description():
    share = get_package_share_directory("st4rtrack_ros")
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="node namespace (also prefixes frames)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="sensor_msgs/Image"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="sensor_msgs/CameraInfo ('' = none)"),
        DeclareLaunchArgument("compressed", default_value="false",
                              description="subscribe <image_topic>/compressed (CompressedImage)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "tracker.yaml"),
                              description="parameters file"),
        DeclareLaunchArgument("device", default_value="", description="cpu | cuda ('' = params file)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="model weights ('' = params file)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bags)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with rviz/tracker.rviz"),
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 to play (ros2 bag play --clock)"),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", os.path.join(share, "rviz", "tracker.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
        output="log",
    )
    bag = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock"],
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("bag"), "' != ''"])),
        output="screen",
    )
    return LaunchDescription([*args, OpaqueFunction(function=_nodes), rviz, bag])
