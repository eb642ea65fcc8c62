"""CDR: messages serialised straight from arrays (NumPy only; no rclpy here).

rclpy publishes ``bytes`` as an already serialised message (Publisher.publish → publish_raw). Building a 256-track
Track3DArray or MarkerArray as Python message objects costs thousands of objects per frame (and rclpy converts
each one again to C); written here from NumPy arrays they cost a few large copies. The layout is the one
rmw_fastrtps writes (XCDR1, little endian: 4-byte encapsulation header, primitives aligned to their size relative
to the end of that header, strings as uint32 length incl. NUL). Tests compare every builder byte for byte with
rclpy.serialization.serialize_message; the node checks the message definitions it was built against
(:data:`CDR_LAYOUTS`) and falls back to message objects where they differ (other ROS distributions).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from st4rtrack_ros.ros.conversions import CLOUD_DTYPE, CLOUD_FIELDS
from st4rtrack_ros.ros.markers import ADD, DELETEALL, LINE_STRIP, SPHERE_LIST, MarkerPlan

#: the message definitions (``get_fields_and_field_types()``) the CDR writers follow.
CDR_LAYOUTS: dict[str, dict[str, str]] = {
    "st4rtrack_ros/Track3D": {"id": "uint64", "position": "geometry_msgs/Point", "visible": "boolean",
                              "confidence": "float", "sigma2": "float", "dynamic": "boolean", "age": "uint32"},
    "st4rtrack_ros/Track3DArray": {"header": "std_msgs/Header", "tracks": "sequence<st4rtrack_ros/Track3D>"},
    "sensor_msgs/PointCloud2": {"header": "std_msgs/Header", "height": "uint32", "width": "uint32",
                                "fields": "sequence<sensor_msgs/PointField>", "is_bigendian": "boolean",
                                "point_step": "uint32", "row_step": "uint32", "data": "sequence<uint8>",
                                "is_dense": "boolean"},
    "nav_msgs/Path": {"header": "std_msgs/Header", "poses": "sequence<geometry_msgs/PoseStamped>"},
    "geometry_msgs/PoseStamped": {"header": "std_msgs/Header", "pose": "geometry_msgs/Pose"},
    "visualization_msgs/Marker": {
        "header": "std_msgs/Header", "ns": "string", "id": "int32", "type": "int32", "action": "int32",
        "pose": "geometry_msgs/Pose", "scale": "geometry_msgs/Vector3", "color": "std_msgs/ColorRGBA",
        "lifetime": "builtin_interfaces/Duration", "frame_locked": "boolean",
        "points": "sequence<geometry_msgs/Point>", "colors": "sequence<std_msgs/ColorRGBA>",
        "texture_resource": "string", "texture": "sensor_msgs/CompressedImage",
        "uv_coordinates": "sequence<visualization_msgs/UVCoordinate>", "text": "string", "mesh_resource": "string",
        "mesh_file": "visualization_msgs/MeshFile", "mesh_use_embedded_materials": "boolean"},
}


def cdr_layout_matches(name: str, msg_cls: type) -> bool:
    """True when ``msg_cls`` has the definition the CDR writer of ``name`` follows."""
    try:
        return dict(msg_cls.get_fields_and_field_types()) == CDR_LAYOUTS[name]
    except AttributeError:
        return False


class CdrWriter:
    """Little-endian XCDR1 writer: chunks joined once at the end."""

    def __init__(self, pos: int = 0, encapsulation: bool = True) -> None:
        """``pos``: the stream position the first byte will have (templates written for a given alignment)."""
        self._parts: list[bytes] = [b"\x00\x01\x00\x00"] if encapsulation else []  # CDR_LE
        self.pos = pos  # offset after the encapsulation header (alignment origin)

    def at(self, align: int) -> int:
        """The position the next field aligned to ``align`` will have."""
        return self.pos + (-self.pos % align)

    def align(self, n: int) -> None:
        pad = -self.pos % n
        if pad:
            self._parts.append(bytes(pad))
            self.pos += pad

    def raw(self, data: bytes | memoryview, align: int = 1) -> None:
        self.align(align)
        self._parts.append(bytes(data) if isinstance(data, memoryview) else data)
        self.pos += len(data)

    def pack(self, fmt: str, *values: Any, align: int) -> None:
        self.raw(struct.pack("<" + fmt, *values), align)

    def string(self, s: str) -> None:
        b = s.encode() + b"\x00"
        self.pack("I", len(b), align=4)
        self.raw(b)

    def header(self, sec: int, nanosec: int, frame_id: str) -> None:
        self.pack("iI", sec, nanosec, align=4)
        self.string(frame_id)

    def array(self, a: np.ndarray, align: int) -> None:
        """A contiguous array's bytes (a sequence's elements, after its uint32 length); nothing if empty."""
        if a.size:
            self.raw(np.ascontiguousarray(a).tobytes(), align)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


#: one Track3D in CDR (offsets from an 8-aligned element start; 52 bytes, stride 56 in a sequence).
TRACK3D_DTYPE = np.dtype({"names": ["id", "x", "y", "z", "visible", "confidence", "sigma2", "dynamic", "age"],
                          "formats": ["<u8", "<f8", "<f8", "<f8", "u1", "<f4", "<f4", "u1", "<u4"],
                          "offsets": [0, 8, 16, 24, 32, 36, 40, 44, 48], "itemsize": 56})
TRACK3D_SIZE = 52


def track_array_cdr(stamp: tuple[int, int], frame_id: str, ids: np.ndarray, positions: np.ndarray,
                    visible: np.ndarray, dynamic: np.ndarray, confidence: np.ndarray, sigma2: np.ndarray,
                    age: np.ndarray) -> bytes:
    """st4rtrack_ros/Track3DArray, serialised. ``positions`` (N, 3) REP 103; ``age`` clipped at 0."""
    n = len(ids)
    a = np.zeros(n, TRACK3D_DTYPE)
    a["id"] = ids
    p = np.asarray(positions, np.float64).reshape(-1, 3)
    a["x"], a["y"], a["z"] = p[:, 0], p[:, 1], p[:, 2]
    a["visible"], a["dynamic"] = np.asarray(visible, bool), np.asarray(dynamic, bool)
    a["confidence"], a["sigma2"] = confidence, sigma2
    a["age"] = np.maximum(np.asarray(age, np.int64), 0)
    w = CdrWriter()
    w.header(*stamp, frame_id)
    w.pack("I", n, align=4)
    if n:
        w.raw(memoryview(a.view(np.uint8))[:TRACK3D_DTYPE.itemsize * (n - 1) + TRACK3D_SIZE], align=8)
    return w.getvalue()


def cloud_cdr(stamp: tuple[int, int], frame_id: str, cloud: np.ndarray) -> bytes:
    """sensor_msgs/PointCloud2 of :func:`cloud_array`'s output, serialised (the same fields as :func:`fill_cloud`)."""
    w = CdrWriter()
    w.header(*stamp, frame_id)
    w.pack("IIi", 1, len(cloud), len(CLOUD_FIELDS), align=4)
    for name, offset, datatype in CLOUD_FIELDS:
        w.string(name)
        w.pack("I", offset, align=4)
        w.pack("B", datatype, align=1)
        w.pack("I", 1, align=4)
    w.pack("?", False, align=1)
    w.pack("III", CLOUD_DTYPE.itemsize, CLOUD_DTYPE.itemsize * len(cloud), cloud.nbytes, align=4)
    w.raw(memoryview(np.ascontiguousarray(cloud).view(np.uint8)))
    w.pack("?", True, align=1)  # NaN/Inf points were removed
    return w.getvalue()


def _marker_head(w: CdrWriter, stamp: tuple[int, int], frame_id: str, ns: str, mid: int, mtype: int, action: int,
                 scale: Sequence[float], rgba: Sequence[float]) -> dict[str, int]:
    """Marker fields up to ``frame_locked`` (identity pose, lifetime 0); the positions of id, scale and color."""
    w.header(*stamp, frame_id)
    w.string(ns)
    at = {"id": w.at(4)}
    w.pack("iii", mid, mtype, action, align=4)
    w.pack("7d", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, align=8)  # pose: identity
    at["scale"] = w.at(8)
    w.pack("3d", *scale, align=8)
    at["color"] = w.at(4)
    w.pack("4f", *rgba, align=4)
    w.pack("iI", 0, 0, align=4)  # lifetime 0 = forever
    w.pack("?", False, align=1)  # frame_locked
    return at


def _marker_tail(w: CdrWriter) -> None:
    """Marker fields after ``colors``: no texture, uv coordinates, text or mesh."""
    w.string("")  # texture_resource
    w.header(0, 0, "")  # texture: CompressedImage header, format, data
    w.string("")
    w.pack("I", 0, align=4)
    w.pack("I", 0, align=4)  # uv_coordinates
    w.string("")  # text
    w.string("")  # mesh_resource
    w.string("")  # mesh_file.filename
    w.pack("I", 0, align=4)  # mesh_file.data
    w.pack("?", False, align=1)  # mesh_use_embedded_materials


def _marker_cdr(w: CdrWriter, stamp: tuple[int, int], frame_id: str, ns: str, mid: int, mtype: int, action: int,
                scale: Sequence[float], rgba: Sequence[float], points: np.ndarray, colors: np.ndarray) -> None:
    _marker_head(w, stamp, frame_id, ns, mid, mtype, action, scale, rgba)
    w.pack("I", len(points), align=4)
    w.array(np.asarray(points, np.float64), 8)
    w.pack("I", len(colors), align=4)
    w.array(np.asarray(colors, np.float32), 4)
    _marker_tail(w)


class _StripTemplate:
    """The bytes of a LINE_STRIP marker around its points, for a given start alignment (mod 8): the head up to the
    points (id, width, colour, count patched per strip) and the constant tail. 256 strips then cost 256 small
    patches instead of ~25 field writes each."""

    def __init__(self, stamp: tuple[int, int], frame_id: str, start: int) -> None:
        w = CdrWriter(start, encapsulation=False)
        at = _marker_head(w, stamp, frame_id, "tracks", 0, LINE_STRIP, ADD, (0.0, 0.0, 0.0), (0.0,) * 4)
        at["count"] = w.at(4)
        w.pack("I", 0, align=4)
        w.align(8)  # the points (float64) follow
        self.head = w.getvalue()
        self.at = {k: v - start for k, v in at.items()}
        t = CdrWriter(0, encapsulation=False)  # the points end 8-aligned
        t.pack("I", 0, align=4)  # colors: none
        _marker_tail(t)
        self.tail = t.getvalue()

    def write(self, w: CdrWriter, mid: int, width: float, rgba: np.ndarray, points: np.ndarray) -> None:
        head = bytearray(self.head)
        struct.pack_into("<i", head, self.at["id"], mid)
        struct.pack_into("<d", head, self.at["scale"], width)
        struct.pack_into("<4f", head, self.at["color"], *rgba.tolist())
        struct.pack_into("<I", head, self.at["count"], len(points))
        w.raw(bytes(head))
        w.raw(np.ascontiguousarray(points, np.float64).tobytes())
        w.raw(self.tail)


def marker_array_cdr(stamp: tuple[int, int], frame_id: str, plan: MarkerPlan) -> bytes:
    """visualization_msgs/MarkerArray of :func:`plan_markers`' plan, serialised: the same markers, in the same
    order, as :func:`build_markers` (DELETEALL, the strips, the heads)."""
    w = CdrWriter()
    w.pack("I", 2 + len(plan.strips), align=4)
    none = np.zeros((0, 3))
    _marker_cdr(w, stamp, frame_id, "", 0, 0, DELETEALL, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), none, none)
    templates: dict[int, _StripTemplate] = {}
    for mid, rgba, width, strip in zip(plan.strip_ids, plan.strip_colors, plan.strip_widths, plan.strips,
                                       strict=True):
        w.align(4)  # a marker starts with an int32
        start = w.pos % 8
        if start not in templates:
            templates[start] = _StripTemplate(stamp, frame_id, start)
        templates[start].write(w, mid, float(width), rgba, strip)
    d = 2.5 * plan.scale
    _marker_cdr(w, stamp, frame_id, "heads", 0, SPHERE_LIST, ADD, (d, d, d), (1.0, 1.0, 1.0, 1.0), plan.head_points,
                plan.head_colors)
    return w.getvalue()


def path_cdr(stamp: tuple[int, int], frame_id: str, stamps: np.ndarray, poses: np.ndarray) -> bytes:
    """nav_msgs/Path, serialised: ``stamps`` (N, 2) (sec, nanosec), ``poses`` (N, 7) position xyz + quaternion
    xyzw, every PoseStamped in ``frame_id``.

    Every PoseStamped but the first starts 8-aligned (the one before ends with float64s), so those are one
    structured array of a fixed stride: header, padding, pose."""
    n = len(poses)
    w = CdrWriter()
    w.header(*stamp, frame_id)
    w.pack("I", n, align=4)
    if n == 0:
        return w.getvalue()
    w.header(int(stamps[0, 0]), int(stamps[0, 1]), frame_id)
    w.pack("7d", *(float(v) for v in poses[0]), align=8)
    fid = frame_id.encode() + b"\x00"
    pose_at = -(-(12 + len(fid)) // 8) * 8
    dt = np.dtype({"names": ["sec", "nanosec", "len", "frame", "pose"],
                   "formats": ["<i4", "<u4", "<u4", f"S{len(fid)}", ("<f8", 7)],
                   "offsets": [0, 4, 8, 12, pose_at], "itemsize": pose_at + 56})
    rest = np.zeros(n - 1, dt)
    rest["sec"], rest["nanosec"], rest["len"], rest["frame"] = stamps[1:, 0], stamps[1:, 1], len(fid), fid
    rest["pose"] = poses[1:]
    w.raw(memoryview(rest.view(np.uint8)), align=8)
    return w.getvalue()


def _header_stamp_format(data: bytes) -> str:
    """struct format of (sec int32, nanosec uint32) in a serialised message: byte 1 of the encapsulation header is
    0 for big-endian and 1 for little-endian CDR."""
    if len(data) < 12 or data[1] not in (0, 1):
        raise ValueError(f"not a CDR message with a std_msgs/Header first ({len(data)} bytes)")
    return "<iI" if data[1] == 1 else ">iI"


def header_stamp_ns(data: bytes) -> int:
    """The header stamp (ns) of a serialised message whose first field is std_msgs/Header (Image, CameraInfo, ...):
    the stamp is the first thing after the 4-byte encapsulation header."""
    sec, nsec = struct.unpack_from(_header_stamp_format(data), data, 4)
    return sec * 1_000_000_000 + nsec


def restamped(data: bytes, offset_ns: int) -> bytes:
    """A copy of a serialised message (std_msgs/Header first) with its header stamp moved by ``offset_ns``; the
    rest of the bytes untouched (as a bag player republishes, without a Python round trip)."""
    fmt = _header_stamp_format(data)
    sec, nsec = divmod(header_stamp_ns(data) + offset_ns, 1_000_000_000)
    out = bytearray(data)
    struct.pack_into(fmt, out, 4, sec, nsec)
    return bytes(out)
