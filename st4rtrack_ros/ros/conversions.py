"""Pure conversions between the tracker's arrays and ROS message layouts (NumPy only; no rclpy here).

Frames: the tracker's world is the first anchor camera's optical frame (x right, y down, z forward). ROS tools
expect REP 103 (x forward, y left, z up), so every world quantity is rotated by :data:`R_REP103_FROM_OPTICAL`
before publishing; the camera pose keeps optical axes on its child frame (REP 103's ``*_optical`` convention), i.e.
``T_world_rep ← cam_optical = R · T_world_opt ← cam_optical``.

Message builders take the message classes as arguments, so this module and its tests need no ROS install.
"""

from __future__ import annotations

import colorsys
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: optical (x right, y down, z forward) → REP 103 (x forward, y left, z up).
R_REP103_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: PointCloud2 layout of ~/points and ~/map: (name, offset, PointField datatype) — FLOAT32 = 7. ``rgb`` is the
#: float32 reinterpretation of 0x00RRGGBB, as RViz's RGB8 colour transformer and PCL expect.
CLOUD_FIELDS: tuple[tuple[str, int, int], ...] = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7),
                                                  ("confidence", 16, 7))
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb", "confidence"], "formats": ["<f4"] * 5,
                        "offsets": [0, 4, 8, 12, 16], "itemsize": 20})

# visualization_msgs/Marker constants (the values are fixed by the message definition).
LINE_STRIP, SPHERE_LIST = 4, 7
ADD, DELETEALL = 0, 3


def to_rep103_points(p: np.ndarray) -> np.ndarray:
    """(..., 3) optical-world points → REP 103 world (NaN/Inf stay non-finite, without a warning per frame)."""
    p = np.asarray(p)
    with np.errstate(invalid="ignore"):
        return p @ R_REP103_FROM_OPTICAL.T.astype(p.dtype if p.dtype.kind == "f" else np.float64)


def to_rep103_pose(t_world_cam: np.ndarray) -> np.ndarray:
    """4×4 camera (optical) → optical world, into camera (optical) → REP 103 world."""
    out = np.array(t_world_cam, dtype=np.float64, copy=True)
    out[:3, :3] = R_REP103_FROM_OPTICAL @ out[:3, :3]
    out[:3, 3] = R_REP103_FROM_OPTICAL @ out[:3, 3]
    return out


def quaternion_from_matrix(r: np.ndarray) -> tuple[float, float, float, float]:
    """3×3 rotation → unit quaternion (x, y, z, w), w ≥ 0 (Shepperd's branch choice for stability)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])


def stamp_from_ns(ns: int) -> tuple[int, int]:
    """Nanoseconds → (sec, nanosec) of builtin_interfaces/Time (non-negative)."""
    sec, nsec = divmod(int(ns), 10**9)
    return int(sec), int(nsec)


def ns_from_stamp(stamp: Any) -> int:
    """builtin_interfaces/Time → nanoseconds."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 → (N,) float32 whose bits are 0x00RRGGBB."""
    c = np.asarray(colors, dtype=np.uint32).reshape(-1, 3)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


def cloud_array(points: np.ndarray, colors: np.ndarray | None, confidence: np.ndarray | None,
                max_points: int) -> np.ndarray:
    """Structured (N,) array of the published cloud: non-finite points removed, evenly thinned to ``max_points``.

    Thinning keeps every k-th point (deterministic, spatially uniform for an image-ordered cloud) rather than the
    first ``max_points``, which would cut off the bottom of the image.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    cols = np.zeros((n, 3), np.uint8) if colors is None else np.asarray(colors).reshape(-1, 3)
    conf = np.ones(n, np.float32) if confidence is None else np.asarray(confidence, np.float32).reshape(-1)
    if len(cols) != n or len(conf) != n:
        raise ValueError(f"points ({n}), colours ({len(cols)}) and confidences ({len(conf)}) differ in length")
    keep = np.isfinite(pts).all(1) & np.isfinite(conf)
    idx = np.flatnonzero(keep)
    if max_points >= 0 and len(idx) > max_points:
        idx = idx[np.linspace(0, len(idx) - 1, max_points).round().astype(np.int64)] if max_points else idx[:0]
    out = np.empty(len(idx), CLOUD_DTYPE)
    out["x"], out["y"], out["z"] = pts[idx, 0], pts[idx, 1], pts[idx, 2]
    out["rgb"] = pack_rgb(cols[idx])
    out["confidence"] = conf[idx]
    return out


def fill_cloud(msg: Any, field_cls: type, cloud: np.ndarray) -> Any:
    """Fill a sensor_msgs/PointCloud2 ``msg`` (header set by the caller) from :func:`cloud_array`'s output."""
    fields = []
    for name, offset, datatype in CLOUD_FIELDS:
        f = field_cls()
        f.name, f.offset, f.datatype, f.count = name, offset, datatype, 1
        fields.append(f)
    msg.fields = fields
    msg.height, msg.width = 1, len(cloud)
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * len(cloud)
    msg.is_dense = True  # NaN/Inf points were removed
    msg.data = cloud.tobytes()
    return msg


def color_for_id(track_id: int) -> tuple[float, float, float]:
    """A stable, well-spread colour per track id (golden-ratio hue steps)."""
    h = (int(track_id) * 0.6180339887498949) % 1.0
    return colorsys.hsv_to_rgb(h, 0.85, 0.95)


#: Colours of the "state" scheme: visible static, visible dynamic, occluded.
STATE_COLORS = {"static": (0.1, 0.8, 0.2), "dynamic": (1.0, 0.45, 0.0), "occluded": (0.55, 0.55, 0.55)}
OCCLUDED_ALPHA, VISIBLE_ALPHA = 0.35, 1.0


def track_color(track_id: int, visible: bool, dynamic: bool, scheme: str) -> tuple[float, float, float, float]:
    """RGBA of one track: by id or by state; occluded tracks are grey-ish and translucent in both schemes."""
    if scheme == "state":
        rgb = STATE_COLORS["occluded" if not visible else "dynamic" if dynamic else "static"]
    else:
        rgb = color_for_id(track_id)
        if not visible:
            rgb = tuple(0.5 * c + 0.25 for c in rgb)  # washed out towards grey
    return (*rgb, VISIBLE_ALPHA if visible else OCCLUDED_ALPHA)


def select_tracks(confidence: np.ndarray, visible: np.ndarray, cap: int) -> np.ndarray:
    """Row indices of the tracks to draw (at most ``cap``): visible first, then by confidence; in id order."""
    n = len(confidence)
    if cap >= n:
        return np.arange(n)
    order = np.lexsort((-np.asarray(confidence, np.float64), ~np.asarray(visible, bool)))
    return np.sort(order[:max(cap, 0)])


def marker_id(track_id: int) -> int:
    """Marker ids are int32: the track id folded into 0..2³¹-1 (unique for any realistic run)."""
    return int(track_id) % (2**31 - 1)


@dataclass
class MarkerPlan:
    """What one frame's markers draw (REP 103 world): the heads (one SPHERE_LIST) and one LINE_STRIP per track with
    two or more finite points. Shared by the message-object and the CDR builders."""

    head_points: np.ndarray  # (H, 3) float64
    head_colors: np.ndarray  # (H, 4) float32 RGBA
    strip_ids: list[int]  # marker ids (folded track ids)
    strip_colors: np.ndarray  # (S, 4) float32 RGBA
    strip_widths: np.ndarray  # (S,) float64 line width
    strips: list[np.ndarray]  # S × (L_i, 3) float64, L_i ≥ 2
    scale: float  # head sphere diameter / 2.5


def plan_markers(ids: np.ndarray, positions: np.ndarray, history: np.ndarray, visible: np.ndarray,
                 dynamic: np.ndarray, confidence: np.ndarray, *, cap: int, trail: int, scheme: str,
                 scale: float) -> MarkerPlan:
    """Select the tracks to draw (``select_tracks``), their colours and their trails (the last ``trail - 1`` finite
    history points + the head); tracks with a non-finite head are not drawn. Positions/history are REP 103."""
    rows = select_tracks(confidence, visible, cap)
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    rows = rows[np.isfinite(positions[rows]).all(1)] if len(rows) else rows
    colors = np.array([track_color(int(ids[r]), bool(visible[r]), bool(dynamic[r]), scheme) for r in rows],
                      np.float32).reshape(-1, 4)
    keep = max(trail - 1, 0)
    hist = np.asarray(history, np.float64)[rows][:, hist_len(history) - min(keep, hist_len(history)):] \
        if len(rows) else np.zeros((0, 0, 3))
    # each trail: its finite history points, then the head; drawn when that makes two points or more
    trail_pts = np.concatenate((hist, positions[rows][:, None]), axis=1)
    ok = np.concatenate((np.isfinite(hist).all(2), np.ones((len(rows), 1), bool)), axis=1)
    lengths = ok.sum(1)
    drawn = np.flatnonzero(lengths >= 2)
    flat = trail_pts[drawn][ok[drawn]]
    strips = np.split(flat, np.cumsum(lengths[drawn])[:-1]) if len(drawn) else []
    vis = np.asarray(visible, bool)[rows][drawn]
    return MarkerPlan(positions[rows], colors, [marker_id(int(i)) for i in np.asarray(ids)[rows][drawn]],
                      colors[drawn], np.where(vis, scale, 0.5 * scale).astype(np.float64), strips, scale)


def hist_len(history: np.ndarray) -> int:
    """Positions per track in a (N, L, 3) history."""
    return int(np.shape(history)[1]) if np.ndim(history) == 3 else 0


def build_markers(marker_cls: type, point_cls: type, color_cls: type, header: Any, ids: np.ndarray,
                  positions: np.ndarray, history: np.ndarray, visible: np.ndarray, dynamic: np.ndarray,
                  confidence: np.ndarray, *, cap: int, trail: int, scheme: str, scale: float) -> list[Any]:
    """Markers of one frame: DELETEALL, one LINE_STRIP per drawn track (ns 'tracks', id = track id), one
    SPHERE_LIST of all heads (ns 'heads', id 0). Positions/history are already REP 103; NaN history is skipped.
    (Message objects: for tests and ROS installs whose Marker layout :func:`marker_array_cdr` does not know.)"""
    plan = plan_markers(ids, positions, history, visible, dynamic, confidence, cap=cap, trail=trail, scheme=scheme,
                        scale=scale)

    def point(p: Sequence[float]) -> Any:
        q = point_cls()
        q.x, q.y, q.z = float(p[0]), float(p[1]), float(p[2])
        return q

    def color(rgba: Sequence[float]) -> Any:
        c = color_cls()
        c.r, c.g, c.b, c.a = (float(v) for v in rgba)
        return c

    clear = marker_cls()
    clear.header = header
    clear.action = DELETEALL
    out = [clear]
    for mid, rgba, width, strip in zip(plan.strip_ids, plan.strip_colors, plan.strip_widths, plan.strips,
                                       strict=True):
        m = marker_cls()
        m.header, m.ns, m.id, m.type, m.action = header, "tracks", mid, LINE_STRIP, ADD
        m.pose.orientation.w = 1.0
        m.scale.x = float(width)
        m.color = color(rgba)
        m.points = [point(p) for p in strip]
        out.append(m)
    heads = marker_cls()
    heads.header, heads.ns, heads.id, heads.type, heads.action = header, "heads", 0, SPHERE_LIST, ADD
    heads.pose.orientation.w = 1.0
    heads.scale.x = heads.scale.y = heads.scale.z = 2.5 * scale
    heads.color.r = heads.color.g = heads.color.b = heads.color.a = 1.0
    heads.points = [point(p) for p in plan.head_points]
    heads.colors = [color(c) for c in plan.head_colors]
    out.append(heads)
    return out


# -- CDR: messages serialised straight from arrays ----------------------------------------------------------------
#
# rclpy publishes ``bytes`` as an already serialised message (Publisher.publish → publish_raw). Building a 256-track
# Track3DArray or MarkerArray as Python message objects costs thousands of objects per frame (and rclpy converts
# each one again to C); written here from NumPy arrays they cost a few large copies. The layout is the one
# rmw_fastrtps writes (XCDR1, little endian: 4-byte encapsulation header, primitives aligned to their size relative
# to the end of that header, strings as uint32 length incl. NUL). Tests compare every builder byte for byte with
# rclpy.serialization.serialize_message; the node checks the message definitions it was built against
# (:data:`CDR_LAYOUTS`) and falls back to message objects where they differ (other ROS distributions).

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
