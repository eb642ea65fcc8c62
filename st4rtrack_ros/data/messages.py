"""Conversions between NumPy data and the benchmark's ROS messages.

Builders create rosbags typestore messages (for writing bags). Parsers only read attributes, so they work on
rosbags messages and on rclpy messages alike (duck typing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rosbags.image.image import ImageError, convert_color, to_cvtype
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
from st4rtrack_ros.tracking.types import BadInput


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


#: Plausible median of a depth image (metres): outside it the units are almost certainly wrong (mm given as m, …).
DEPTH_MEDIAN_RANGE_M = (0.02, 100.0)
#: Encodings read as depth: 32FC1 in metres, 16UC1 (mono16) in millimetres (REP 118).
DEPTH_ENCODINGS = ("32FC1", "16UC1", "mono16")


def check_size(width: int, height: int, max_pixels: int = 0) -> None:
    """Refuse an empty image and, with ``max_pixels`` > 0, one larger than that (before any buffer is touched)."""
    if width <= 0 or height <= 0:
        raise BadInput("empty", f"image is {width}×{height}")
    if 0 < max_pixels < width * height:
        raise BadInput("too_large", f"image {width}×{height} = {width * height} pixels is over the limit of "
                       f"{max_pixels} (ros.max_image_pixels)")


def raw_image(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """sensor_msgs/Image → (H, W) or (H, W, C) array of its encoding's dtype in native byte order.

    Checked before the buffer is read: a known encoding, non-zero size within ``max_pixels``, ``step`` at least one
    row of pixels (padding after the row is skipped), and exactly ``step × height`` bytes of data. Raises
    :class:`BadInput` with cause unsupported_encoding, empty, too_large, step_mismatch, truncated or
    data_size_mismatch.
    """
    enc = str(msg.encoding)
    try:
        _, _, typestr, nchan = to_cvtype(enc)
    except ImageError:
        raise BadInput("unsupported_encoding", f"encoding {enc!r} is not supported") from None
    if enc in ("nv12", "nv21"):  # planar 4:2:0: height × 1.5 rows, which rosbags-image does not lay out
        raise BadInput("unsupported_encoding", f"planar encoding {enc!r} is not supported")
    w, h, step, n = int(msg.width), int(msg.height), int(msg.step), len(msg.data)
    check_size(w, h, max_pixels)
    dtype = np.dtype(typestr)
    row = w * nchan * dtype.itemsize
    if step < row:
        raise BadInput("step_mismatch", f"step {step} < width*{nchan * dtype.itemsize}={row} bytes for {enc}")
    if n == 0:
        raise BadInput("empty", f"{w}×{h} {enc} image without data")
    if n != step * h:
        raise BadInput("truncated" if n < step * h else "data_size_mismatch",
                       f"{n} bytes of data, expected step*height = {step}*{h} = {step * h}")
    rows = np.frombuffer(msg.data, np.uint8, count=step * h).reshape(h, step)[:, :row]
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    return arr.reshape((h, w, nchan) if nchan > 1 else (h, w)).astype(dtype, copy=False)


def _decode_compressed(msg: Any, max_pixels: int) -> np.ndarray:
    """CompressedImage (jpeg/png/…) → RGB uint8; corrupt data is refused, not returned as None."""
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise BadInput("unsupported_encoding", f"compressed depth ({fmt!r}) is not a camera image")
    data = np.frombuffer(msg.data, np.uint8)
    if len(data) == 0:
        raise BadInput("empty", f"{fmt or 'compressed'} image without data")
    if 0 < max_pixels and len(data) > 4 * max_pixels + 65536:  # bigger than the raw RGBA image at the limit
        raise BadInput("too_large", f"{len(data)} bytes of {fmt or 'compressed'} data for a limit of {max_pixels} "
                       "pixels (ros.max_image_pixels)")
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)  # any colour/depth → 8-bit BGR
    except cv2.error as e:
        raise BadInput("corrupt_compressed", f"OpenCV could not decode {len(data)} bytes of {fmt!r}: {e}") from None
    if bgr is None:
        raise BadInput("corrupt_compressed", f"OpenCV could not decode {len(data)} bytes of {fmt!r}")
    check_size(bgr.shape[1], bgr.shape[0], max_pixels)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_to_rgb(msg: Any, max_pixels: int = 0, min_side: int = 0) -> np.ndarray:
    """Decode Image (8/16-bit encodings rosbags-image knows) or CompressedImage to HxWx3 uint8 RGB.

    Raises :class:`BadInput` (a ValueError with a ``cause``) for anything unusable — unknown encoding, wrong step,
    short data, zero, too small (< ``min_side``; the node uses the tracker's MIN_SIDE) or too large (> ``max_pixels``
    when > 0) sizes, corrupt compressed data — and never another exception type, so callers count causes instead of
    guessing.
    """
    if hasattr(msg, "format"):
        img = _decode_compressed(msg, max_pixels)
    else:
        enc = str(msg.encoding)
        raw = raw_image(msg, max_pixels)
        if raw.dtype not in (np.uint8, np.uint16):
            raise BadInput("unsupported_encoding", f"{enc} ({raw.dtype}) is not a camera image encoding")
        if raw.ndim == 3 and raw.shape[2] == 2 and raw.shape[1] % 2:  # uyvy/yuyv: U and V shared by pixel pairs
            raise BadInput("odd_width", f"{enc} packs pixel pairs: width {raw.shape[1]} must be even")
        if min(raw.shape[:2]) < min_side:  # before colour conversion: OpenCV refuses some tiny Bayer/YUV images
            raise BadInput("too_small", f"image {raw.shape[1]}×{raw.shape[0]} is below {min_side} px a side")
        try:
            if raw.ndim == 2 and enc.lower() in ("mono8", "mono16", "8uc1", "16uc1"):
                img = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
            else:
                img = np.asarray(convert_color(raw, enc, "rgb16" if raw.dtype == np.uint16 else "rgb8"))
        except (ImageError, cv2.error) as e:
            raise BadInput("unsupported_encoding", f"cannot convert {enc} to RGB: {str(e).strip()[:200]}") from None
        if img.ndim != 3 or img.shape[2] != 3:
            raise BadInput("unsupported_encoding", f"{enc} decoded to shape {img.shape}, not H×W×3")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if min(img.shape[:2]) < min_side:
        raise BadInput("too_small", f"image {img.shape[1]}×{img.shape[0]} is below {min_side} px a side")
    return np.ascontiguousarray(img, dtype=np.uint8)


def depth_from_msg(msg: Any, max_pixels: int = 0) -> np.ndarray:
    """Depth Image → float32 metres (HxW), 0 where invalid (NaN, Inf, ≤ 0: holes, never poison).

    Accepts 32FC1 (m) and 16UC1/mono16 (mm); layout faults raise :class:`BadInput` as :func:`raw_image` does.
    Plausibility (units, all invalid) is :func:`check_depth`'s job, so bags with odd depth still read back.
    """
    if str(msg.encoding) not in DEPTH_ENCODINGS:
        raise BadInput("unsupported_encoding", f"depth encoding {msg.encoding!r}: expected 32FC1 (metres) or 16UC1 "
                       "(millimetres)")
    raw = raw_image(msg, max_pixels)
    depth = raw.astype(np.float32) / 1000.0 if raw.dtype == np.uint16 else raw.astype(np.float32)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0)).astype(np.float32)


def check_depth(depth: np.ndarray, encoding: str) -> None:
    """Refuse a decoded depth image (metres, 0 = hole) that has no valid pixel or whose median says wrong units.

    Why the median: one frame in millimetres read as metres would fix the world scale 1000× off for good (the scale
    comes from the first depth image), so such an image is refused rather than guessed at.
    """
    valid = depth[depth > 0]
    if valid.size == 0:
        raise BadInput("all_invalid", f"{encoding} depth {depth.shape[1]}×{depth.shape[0]} has no valid pixel "
                       "(all NaN/Inf/≤0)")
    med = float(np.median(valid[:: max(1, valid.size // 4096)]))  # a strided sample is plenty for a median
    lo, hi = DEPTH_MEDIAN_RANGE_M
    if not lo <= med <= hi:
        hint = ("32FC1 depth must be metres; this looks like millimetres" if med > hi and encoding == "32FC1" else
                "16UC1 depth must be millimetres; this looks like metres" if med < lo and encoding != "32FC1" else
                "implausible for a depth camera")
        raise BadInput("units", f"median {encoding} depth is {med:.4g} m, outside {lo:g}–{hi:g} m: {hint}")


def intrinsics_from_msg(msg: Any) -> tuple[np.ndarray, int, int]:
    """CameraInfo → (K, width, height), refusing zeros, NaN/Inf, non-positive focal lengths or image size."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    w, h = int(msg.width), int(msg.height)
    if not np.isfinite(k).all():
        raise BadInput("invalid", f"K has NaN/Inf: {k.reshape(-1).tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise BadInput("invalid", f"K has focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g} (must be > 0)")
    if w <= 0 or h <= 0:
        raise BadInput("invalid", f"image size {w}×{h} (must be > 0)")
    return k, w, h


def check_stamp(stamp_ns: int, now_ns: int, max_ahead_s: float) -> None:
    """Refuse a stamp more than ``max_ahead_s`` ahead of ``now_ns`` (0 disables; so does a clock at 0, which is
    what use_sim_time gives before the first /clock message)."""
    if max_ahead_s > 0 and now_ns > 0 and stamp_ns - now_ns > max_ahead_s * 1e9:
        raise BadInput("future_stamp", f"stamp {stamp_ns / 1e9:.3f} s is {(stamp_ns - now_ns) / 1e9:.1f} s ahead "
                       f"of the node clock (limit {max_ahead_s:g} s, ros.max_future_stamp_s)")


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
