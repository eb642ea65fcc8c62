"""``st4rtrack-node [--ros-args ...]``: the ROS 2 node (``ros.node``): ``ros2 run st4rtrack_ros st4rtrack-node``, or
the launch file's executable."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM; ROS arguments after ``--ros-args``."""
    from st4rtrack_ros.ros.node import main as node_main

    return node_main(argv)


if __name__ == "__main__":
    sys.exit(main())
