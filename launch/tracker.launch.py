"""Launch the st4rtrack tracker (a lifecycle node), and optionally RViz, a bag player and a recorder.

    ros2 launch st4rtrack_ros tracker.launch.py image:=/camera/color/image_raw \\
        camera_info:=/camera/color/camera_info depth:=/camera/aligned_depth_to_color/image_raw fixed_frame:=odom

Arguments left empty keep the params file's values (st4rtrack_ros/ros/launch_args.py holds the rules, tested).
``autostart:=true`` (default) configures and then activates the node; ``autostart:=false`` leaves it unconfigured for
a lifecycle manager. ``bag:=PATH`` implies sim time and starts playback once the node is active.
"""

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription
from st4rtrack_ros.ros.launch_args import node_setup, record_topics, rviz_config

ARGS = {
    "namespace": ("", "node namespace (also prefixes the frames)"),
    "params_file": ("", "parameters file ('' = the package's config/tracker.yaml)"),
    "image": ("", "camera image topic (remaps the node's input; '' = params file)"),
    "camera_info": ("", "sensor_msgs/CameraInfo topic ('' = params file)"),
    "depth": ("", "aligned depth image topic, 32FC1 m or 16UC1 mm ('' = params file)"),
    "compressed": ("", "true: subscribe <image>/compressed ('' = params file)"),
    "fixed_frame": ("", "the robot's fixed frame (e.g. odom) the world is joined to ('' = params file)"),
    "device": ("", "cpu | cuda | cuda:N ('' = params file)"),
    "checkpoint": ("", "model weights ('' = params file)"),
    "use_sim_time": ("", "follow /clock ('' = params file; bag:= sets it)"),
    "autostart": ("true", "configure and activate the node"),
    "rviz": ("false", "start rviz2 with the package's config, following namespace and frames"),
    "bag": ("", "rosbag2 to play with --clock once the node is active"),
    "record": ("", "record the node's outputs into this folder (ros2 bag record)"),
}


def _setup(context, *args, **kwargs):
    get = {name: LaunchConfiguration(name).perform(context) for name in ARGS}
    share = get_package_share_directory("st4rtrack_ros")
    ns = get["namespace"].strip("/")
    params, remaps = node_setup(get)
    params_file = get["params_file"] or os.path.join(share, "config", "tracker.yaml")
    node = LifecycleNode(package="st4rtrack_ros", executable="st4rtrack-node", name="st4rtrack", namespace=ns,
                         output="screen", parameters=[params_file, params], remappings=remaps)

    def transition(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    actions = [node]
    on_active = []
    if get["autostart"].lower() == "true":
        actions += [
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, goal_state="inactive",
                                                   entities=[transition(Transition.TRANSITION_ACTIVATE)])),
            transition(Transition.TRANSITION_CONFIGURE),
        ]
    sim_time = bool(params.get("use_sim_time", False))
    if get["bag"]:
        on_active.append(ExecuteProcess(cmd=["ros2", "bag", "play", get["bag"], "--clock"], output="screen"))
    if get["record"]:
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "record", "-o", get["record"], *record_topics(ns)],
                                      output="screen"))
    if on_active:
        actions.append(RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, goal_state="active",
                                                              entities=on_active)))
    if get["rviz"].lower() == "true":
        with open(os.path.join(share, "rviz", "tracker.rviz")) as f:
            text = rviz_config(f.read(), ns, get["fixed_frame"])
        cfg = tempfile.NamedTemporaryFile("w", prefix="st4rtrack_", suffix=".rviz", delete=False)
        with cfg:
            cfg.write(text)
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", cfg.name], output="log",
                            parameters=[{"use_sim_time": sim_time}]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in ARGS.items()),
        OpaqueFunction(function=_setup),
    ])
