"""st4rtrack_ros: online St4RTrack+ 4D perception for ROS 2.

The core (model, geometry, adaptation, tracking, data, evaluation, training) imports no rclpy; ``ros/`` is the
thin adapter.
"""

__version__ = "0.1.0"
