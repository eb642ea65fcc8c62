"""The benchmark bag format in code: topic names, frames, encodings and the /gt/tracks point layout.

docs/bag-format.md is the prose version of this module; keep them in step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from st4rtrack_ros.settings import check_keys

#: Storage plugins accepted by the writer and the reader; MCAP is the default.
STORAGE_IDS: tuple[str, ...] = ("mcap", "sqlite3")
DEFAULT_STORAGE = "mcap"
#: rosbag2 metadata version written (the rosbags writer supports 8 (Iron+) and 9 (Jazzy+)).
DEFAULT_BAG_VERSION = 8

#: Frame of all ground-truth world quantities.
WORLD_FRAME = "world"
#: Frame id of images, camera info and depth: the camera optical frame (x right, y down, z forward).
CAMERA_FRAME = "camera_optical_frame"

#: Raw image encodings the format lists (the reader also decodes anything rosbags-image understands).
IMAGE_ENCODINGS: tuple[str, ...] = ("rgb8", "bgr8", "mono8")
#: CompressedImage formats the format lists.
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
#: Depth encoding: metres, 0 (or non-finite) = invalid. The reader also accepts 16UC1 in millimetres.
DEPTH_ENCODING = "32FC1"

MSG_IMAGE = "sensor_msgs/msg/Image"
MSG_COMPRESSED = "sensor_msgs/msg/CompressedImage"
MSG_CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
MSG_POSE = "geometry_msgs/msg/PoseStamped"
MSG_CLOUD = "sensor_msgs/msg/PointCloud2"


@dataclass(frozen=True)
class Topics:
    """Topic names of a benchmark bag; every one is configurable."""

    image: str = "/camera/image_raw"
    compressed: str = "/camera/image_raw/compressed"
    camera_info: str = "/camera/camera_info"
    gt_depth: str = "/gt/depth"
    gt_pose: str = "/gt/camera_pose"
    gt_tracks: str = "/gt/tracks"

    @classmethod
    def from_mapping(cls, mapping: dict[str, str]) -> Topics:
        """Build from a (partial) dict, e.g. parsed from YAML or command-line overrides."""
        check_keys(cls, mapping, f"topic keys (known: {sorted(f.name for f in fields(cls))})")
        return cls(**mapping)


#: PointField datatype codes (sensor_msgs/PointField) ↔ NumPy dtypes.
POINTFIELD_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int16),
    4: np.dtype(np.uint16),
    5: np.dtype(np.int32),
    6: np.dtype(np.uint32),
    7: np.dtype(np.float32),
    8: np.dtype(np.float64),
}

#: /gt/tracks point layout: x, y, z float32 (world, m), id uint32, visible uint8 (1 = passes the depth test),
#: dynamic uint8 (1 = on a moving object; an extension, readers must not require it); 20 bytes per point.
TRACK_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("x", 0, 7),
    ("y", 4, 7),
    ("z", 8, 7),
    ("id", 12, 6),
    ("visible", 16, 2),
    ("dynamic", 17, 2),
)
TRACK_POINT_STEP = 20
TRACK_DTYPE = np.dtype(
    {
        "names": [f[0] for f in TRACK_FIELDS],
        "formats": [POINTFIELD_DTYPES[f[2]] for f in TRACK_FIELDS],
        "offsets": [f[1] for f in TRACK_FIELDS],
        "itemsize": TRACK_POINT_STEP,
    }
)
#: Fields a /gt/tracks cloud must carry.
TRACK_REQUIRED_FIELDS: tuple[str, ...] = ("x", "y", "z", "id", "visible")
