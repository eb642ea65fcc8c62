"""Conversions between NumPy data and the benchmark's ROS messages.

Builders create rosbags typestore messages (for writing bags). Parsers only read attributes, so they work on
rosbags messages and on rclpy messages alike (duck typing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore
from scipy.spatial.transform import Rotation

from st4rtrack_ros.data.bag_format import (
    COMPRESSED_FORMATS,
    DEPTH_ENCODING,
    IMAGE_ENCODINGS,
    MSG_CAMERA_INFO,
    MSG_CLOUD,
    MSG_COMPRESSED,
    MSG_IMAGE,
    MSG_POSE,
    POINTFIELD_DTYPES,
    TRACK_DTYPE,
    TRACK_FIELDS,
    TRACK_POINT_STEP,
    TRACK_REQUIRED_FIELDS,
)


def default_typestore() -> Typestore:
    """Message classes of ROS 2 Jazzy from rosbags (no ROS install needed); sensor/geometry msgs are unchanged
    across Humble…Kilted, so bags written with it are read by every current distro."""
    return get_typestore(Stores.ROS2_JAZZY)


@dataclass
class TrackSample:
    """Ground-truth tracks at one stamp."""

    ids: np.ndarray  # (N,) uint32
    xyz: np.ndarray  # (N, 3) float32, world, metres
    visible: np.ndarray  # (N,) bool
    dynamic: np.ndarray | None  # (N,) bool, None when the cloud has no 'dynamic' field


def _stamp(ts: Typestore, stamp_ns: int) -> Any:
    time_cls = ts.types["builtin_interfaces/msg/Time"]
    return time_cls(sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9))


def header(ts: Typestore, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header with the stamp in nanoseconds."""
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, stamp_ns), frame_id=frame_id)


def stamp_to_ns(hdr: Any) -> int:
    """Header stamp → integer nanoseconds."""
    return int(hdr.stamp.sec) * 10**9 + int(hdr.stamp.nanosec)


def image_msg(ts: Typestore, stamp_ns: int, frame_id: str, rgb: np.ndarray, encoding: str = "rgb8") -> Any:
    """sensor_msgs/Image from an RGB uint8 image, stored in one of the listed encodings."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"encoding {encoding!r} not in {IMAGE_ENCODINGS}")
    if encoding == "bgr8":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "mono8":
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        data = rgb
    data = np.ascontiguousarray(data, dtype=np.uint8)
    h, w = data.shape[:2]
    channels = 1 if data.ndim == 2 else data.shape[2]
    return ts.types[MSG_IMAGE](
        header=header(ts, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * channels,
        data=data.reshape(-1),
    )


def compressed_msg(
    ts: Typestore, stamp_ns: int, frame_id: str, rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95
) -> Any:
    """sensor_msgs/CompressedImage (format 'jpeg' or 'png') from an RGB uint8 image."""
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"format {fmt!r} not in {COMPRESSED_FORMATS}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {fmt}")
    return ts.types[MSG_COMPRESSED](header=header(ts, stamp_ns, frame_id), format=fmt, data=buf.reshape(-1))


def camera_info_msg(ts: Typestore, stamp_ns: int, frame_id: str, k: np.ndarray, width: int, height: int) -> Any:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera (plumb_bob with zero coefficients)."""
    k = np.asarray(k, dtype=np.float64)
    p = np.zeros((3, 4))
    p[:, :3] = k
    roi = ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return ts.types[MSG_CAMERA_INFO](
        header=header(ts, stamp_ns, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def depth_msg(ts: Typestore, stamp_ns: int, frame_id: str, depth: np.ndarray) -> Any:
    """sensor_msgs/Image 32FC1 in metres; non-finite or negative values are written as 0 (invalid)."""
    d = np.asarray(depth, dtype=np.float32)
    d = np.where(np.isfinite(d) & (d > 0), d, np.float32(0.0)).astype("<f4")
    h, w = d.shape
    return ts.types[MSG_IMAGE](
        header=header(ts, stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=DEPTH_ENCODING,
        is_bigendian=0,
        step=w * 4,
        data=np.frombuffer(d.tobytes(), dtype=np.uint8),
    )


def pose_msg(ts: Typestore, stamp_ns: int, frame_id: str, pose: np.ndarray) -> Any:
    """geometry_msgs/PoseStamped from a 4×4 pose (frame_id ← camera optical frame)."""
    pose = np.asarray(pose, dtype=np.float64)
    q = Rotation.from_matrix(pose[:3, :3]).as_quat()  # x, y, z, w
    pt = ts.types["geometry_msgs/msg/Point"](x=float(pose[0, 3]), y=float(pose[1, 3]), z=float(pose[2, 3]))
    quat = ts.types["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return ts.types[MSG_POSE](
        header=header(ts, stamp_ns, frame_id), pose=ts.types["geometry_msgs/msg/Pose"](position=pt, orientation=quat)
    )


def tracks_msg(
    ts: Typestore,
    stamp_ns: int,
    frame_id: str,
    ids: np.ndarray,
    xyz: np.ndarray,
    visible: np.ndarray,
    dynamic: np.ndarray | None = None,
) -> Any:
    """sensor_msgs/PointCloud2 with the /gt/tracks layout (see bag_format.TRACK_FIELDS)."""
    n = int(np.asarray(ids).shape[0])
    pts = np.zeros(n, dtype=TRACK_DTYPE)
    xyz = np.asarray(xyz, dtype=np.float32).reshape(n, 3)
    pts["x"], pts["y"], pts["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    pts["id"] = np.asarray(ids, dtype=np.uint32)
    pts["visible"] = np.asarray(visible, dtype=bool).astype(np.uint8)
    if dynamic is not None:
        pts["dynamic"] = np.asarray(dynamic, dtype=bool).astype(np.uint8)
    field_cls = ts.types["sensor_msgs/msg/PointField"]
    flds = [field_cls(name=name, offset=off, datatype=dt, count=1) for name, off, dt in TRACK_FIELDS]
    if dynamic is None:
        flds = [f for f in flds if f.name != "dynamic"]
    return ts.types[MSG_CLOUD](
        header=header(ts, stamp_ns, frame_id),
        height=1,
        width=n,
        fields=flds,
        is_bigendian=False,
        point_step=TRACK_POINT_STEP,
        row_step=TRACK_POINT_STEP * n,
        data=np.frombuffer(pts.tobytes(), dtype=np.uint8),
        is_dense=True,
    )


# ----------------------------------------------------------------------------------------------- parsers


def image_to_rgb(msg: Any) -> np.ndarray:
    """Decode Image (any encoding rosbags-image knows) or CompressedImage (jpeg/png) to HxWx3 uint8 RGB."""
    if hasattr(msg, "format"):
        img = np.asarray(message_to_cvimage(msg))  # BGR, BGRA or gray, as OpenCV decodes it
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        enc = str(msg.encoding).lower()
        if enc in ("mono8", "mono16", "8uc1", "16uc1"):
            gray = np.asarray(message_to_cvimage(msg))
            img = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        else:
            img = np.asarray(message_to_cvimage(msg, "rgb8"))
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return np.ascontiguousarray(img, dtype=np.uint8)


def depth_from_msg(msg: Any) -> np.ndarray:
    """Depth Image → float32 metres (HxW), 0 where invalid. Accepts 32FC1 (m) and 16UC1 (mm)."""
    enc = str(msg.encoding).upper()
    raw = np.asarray(message_to_cvimage(msg))
    if enc == "16UC1" or raw.dtype == np.uint16:
        depth = raw.astype(np.float32) / 1000.0
    elif enc == "32FC1":
        depth = raw.astype(np.float32)
    else:
        raise ValueError(f"unsupported depth encoding {msg.encoding!r}")
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)


def pose_from_msg(msg: Any) -> np.ndarray:
    """PoseStamped (or Pose) → 4×4 matrix."""
    pose = getattr(msg, "pose", msg)
    p, q = pose.position, pose.orientation
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    out[:3, 3] = [p.x, p.y, p.z]
    return out


def camera_info_from_msg(msg: Any) -> tuple[np.ndarray, int, int]:
    """CameraInfo → (K 3×3, width, height)."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3), int(msg.width), int(msg.height)


def cloud_to_structured(msg: Any) -> np.ndarray:
    """PointCloud2 → NumPy structured array of its (count 1) fields, honouring offsets, step and endianness."""
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if int(f.count) != 1:
            continue
        names.append(str(f.name))
        formats.append(POINTFIELD_DTYPES[int(f.datatype)].newbyteorder(order))
        offsets.append(int(f.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})
    n = int(msg.width) * int(msg.height)
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if int(msg.row_step) != int(msg.point_step) * int(msg.width):  # padded rows: drop the padding
        rows = raw.reshape(int(msg.height), int(msg.row_step))[:, : int(msg.point_step) * int(msg.width)]
        raw = np.ascontiguousarray(rows).reshape(-1)
    return np.frombuffer(raw.tobytes(), dtype=dtype, count=n)


def tracks_from_msg(msg: Any) -> TrackSample:
    """/gt/tracks PointCloud2 → TrackSample; requires x, y, z, id, visible."""
    pts = cloud_to_structured(msg)
    missing = [f for f in TRACK_REQUIRED_FIELDS if f not in (pts.dtype.names or ())]
    if missing:
        raise ValueError(f"tracks cloud lacks fields {missing}")
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1).astype(np.float32)
    dynamic = pts["dynamic"].astype(bool) if "dynamic" in (pts.dtype.names or ()) else None
    return TrackSample(
        ids=pts["id"].astype(np.uint32), xyz=xyz, visible=pts["visible"].astype(bool), dynamic=dynamic
    )
