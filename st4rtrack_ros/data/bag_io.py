"""Write and read benchmark bags (rosbag2, MCAP by default, sqlite3 accepted) with the pure-Python `rosbags`.

The reader iterates camera frames in stream (log-time) order and attaches camera info and ground truth that carry
the image's header stamp, buffering only as far as needed, so evaluation can consume a bag like a live stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from st4rtrack_ros.data import messages as m
from st4rtrack_ros.data.bag_format import (
    CAMERA_FRAME,
    DEFAULT_BAG_VERSION,
    DEFAULT_STORAGE,
    IMAGE_ENCODINGS,
    MSG_CAMERA_INFO,
    MSG_CLOUD,
    MSG_COMPRESSED,
    MSG_IMAGE,
    MSG_POSE,
    STORAGE_IDS,
    WORLD_FRAME,
    Topics,
)
from st4rtrack_ros.data.messages import TrackSample

#: Image transports the writer offers: raw Image or CompressedImage jpeg/png.
IMAGE_TRANSPORTS: tuple[str, ...] = ("raw", "jpeg", "png")


class BenchmarkBagWriter:
    """Write frames (image + camera info + optional ground truth) to a new rosbag2 directory.

    All messages of a frame share the image's header stamp, which is also their bag log time.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: str = DEFAULT_STORAGE,
        topics: Topics | None = None,
        transport: str = "raw",
        encoding: str = "rgb8",
        jpeg_quality: int = 95,
        camera_frame: str = CAMERA_FRAME,
        world_frame: str = WORLD_FRAME,
        version: int = DEFAULT_BAG_VERSION,
    ) -> None:
        """Open the bag; it must not exist yet (rosbags never overwrites)."""
        if storage not in STORAGE_IDS:
            raise ValueError(f"storage {storage!r} not in {STORAGE_IDS}")
        if transport not in IMAGE_TRANSPORTS:
            raise ValueError(f"transport {transport!r} not in {IMAGE_TRANSPORTS}")
        if encoding not in IMAGE_ENCODINGS:
            raise ValueError(f"encoding {encoding!r} not in {IMAGE_ENCODINGS}")
        self.path = Path(path)
        self.topics = topics or Topics()
        self.transport = transport
        self.encoding = encoding
        self.jpeg_quality = jpeg_quality
        self.camera_frame = camera_frame
        self.world_frame = world_frame
        self.ts = m.default_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)  # type: ignore[arg-type]
        self._writer.open()
        self._conns: dict[str, Connection] = {}
        self.n_frames = 0

    def _conn(self, topic: str, msgtype: str) -> Connection:
        """Connections are created on first use, so a bag only lists the topics it really holds."""
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.ts)
            self._conns[topic] = conn
        return conn

    def _write(self, topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
        data = self.ts.serialize_cdr(msg, msgtype)
        self._writer.write(self._conn(topic, msgtype), stamp_ns, data)

    def write_frame(
        self,
        stamp_ns: int,
        rgb: np.ndarray,
        k: np.ndarray,
        *,
        depth: np.ndarray | None = None,
        pose: np.ndarray | None = None,
        tracks: TrackSample | None = None,
    ) -> None:
        """Write one frame: RGB uint8 image and K, plus whichever ground truth is given."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("rgb must be an HxWx3 uint8 array")
        h, w = rgb.shape[:2]
        ts, cam = self.ts, self.camera_frame
        if self.transport == "raw":
            self._write(self.topics.image, MSG_IMAGE, m.image_msg(ts, stamp_ns, cam, rgb, self.encoding), stamp_ns)
        else:
            msg = m.compressed_msg(ts, stamp_ns, cam, rgb, self.transport, self.jpeg_quality)
            self._write(self.topics.compressed, MSG_COMPRESSED, msg, stamp_ns)
        self._write(self.topics.camera_info, MSG_CAMERA_INFO, m.camera_info_msg(ts, stamp_ns, cam, k, w, h), stamp_ns)
        if depth is not None:
            self._write(self.topics.gt_depth, MSG_IMAGE, m.depth_msg(ts, stamp_ns, cam, depth), stamp_ns)
        if pose is not None:
            self._write(self.topics.gt_pose, MSG_POSE, m.pose_msg(ts, stamp_ns, self.world_frame, pose), stamp_ns)
        if tracks is not None:
            msg = m.tracks_msg(ts, stamp_ns, self.world_frame, tracks.ids, tracks.xyz, tracks.visible, tracks.dynamic)
            self._write(self.topics.gt_tracks, MSG_CLOUD, msg, stamp_ns)
        self.n_frames += 1

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml)."""
        self._writer.close()

    def __enter__(self) -> BenchmarkBagWriter:
        """Context-manager entry."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the bag, also on errors (a partial bag stays readable)."""
        self.close()


@dataclass
class BagFrame:
    """One camera frame of a bag with the data that carries its stamp (None where absent)."""

    index: int
    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    k: np.ndarray | None  # (3, 3) from CameraInfo
    width: int
    height: int
    frame_id: str
    gt_depth: np.ndarray | None = None  # (H, W) float32 metres, 0 = invalid
    gt_pose: np.ndarray | None = None  # (4, 4) world ← camera optical
    gt_tracks: TrackSample | None = None
    log_time_ns: int = 0


@dataclass
class _Pending:
    stamp: int
    log_time: int
    msg: Any


@dataclass
class _Buffers:
    info: dict[int, Any] = field(default_factory=dict)
    depth: dict[int, Any] = field(default_factory=dict)
    pose: dict[int, Any] = field(default_factory=dict)
    tracks: dict[int, Any] = field(default_factory=dict)
    last_info: Any = None


def _single_topic_of_type(conns: list[Connection], msgtype: str) -> str | None:
    topics = sorted({c.topic for c in conns if c.msgtype == msgtype})
    return topics[0] if len(topics) == 1 else None


class BenchmarkBagReader:
    """Iterate a bag's camera frames in stream order with matching camera info and ground truth.

    Topic choice: the configured raw image topic, else the configured compressed one, else the only Image or
    CompressedImage topic in the bag. Ground truth topics are matched by name; absent ones are listed in
    :attr:`missing_ground_truth` so reports can say which metrics were skipped.
    """

    def __init__(self, path: str | Path, topics: Topics | None = None, max_lag_ns: int = 2 * 10**9) -> None:
        """Open the bag and resolve topics; ``max_lag_ns`` bounds how long a frame waits for its ground truth."""
        self.path = Path(path)
        self.topics = topics or Topics()
        self.max_lag_ns = int(max_lag_ns)
        self._reader = AnyReader([self.path], default_typestore=m.default_typestore())
        self._reader.open()
        conns = self._reader.connections
        by_topic = {c.topic: c for c in conns}
        t = self.topics
        if t.image in by_topic:
            self.image_topic = t.image
        elif t.compressed in by_topic:
            self.image_topic = t.compressed
        else:
            found = _single_topic_of_type(conns, MSG_IMAGE) or _single_topic_of_type(conns, MSG_COMPRESSED)
            if found is None:
                self._reader.close()
                raise ValueError(f"{self.path}: no camera image topic (looked for {t.image}, {t.compressed})")
            self.image_topic = found
        self.compressed = by_topic[self.image_topic].msgtype == MSG_COMPRESSED
        self.info_topic = t.camera_info if t.camera_info in by_topic else _single_topic_of_type(conns, MSG_CAMERA_INFO)
        self.gt_topics = {
            key: topic
            for key, topic in (("depth", t.gt_depth), ("pose", t.gt_pose), ("tracks", t.gt_tracks))
            if topic in by_topic
        }
        self.n_images = sum(c.msgcount for c in conns if c.topic == self.image_topic)
        wanted = {self.image_topic, self.info_topic, *self.gt_topics.values()} - {None}
        self._conns = [c for c in conns if c.topic in wanted]

    @property
    def missing_ground_truth(self) -> list[str]:
        """Names of ground-truth kinds ('depth', 'pose', 'tracks') the bag does not hold."""
        return [k for k in ("depth", "pose", "tracks") if k not in self.gt_topics]

    @property
    def has_camera_info(self) -> bool:
        """Whether the bag has a CameraInfo topic (else frames carry k=None)."""
        return self.info_topic is not None

    def close(self) -> None:
        """Close the underlying reader."""
        self._reader.close()

    def __enter__(self) -> BenchmarkBagReader:
        """Context-manager entry."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close on exit."""
        self.close()

    def _complete(self, p: _Pending, buf: _Buffers) -> bool:
        if self.info_topic is not None and p.stamp not in buf.info:
            return False
        return all(p.stamp in getattr(buf, key) for key in self.gt_topics)

    def _emit(self, index: int, p: _Pending, buf: _Buffers) -> BagFrame:
        image = m.image_to_rgb(p.msg)
        info = buf.info.get(p.stamp, buf.last_info)
        k = None
        if info is not None:
            k = m.camera_info_from_msg(info)[0]
        depth = buf.depth.get(p.stamp)
        pose = buf.pose.get(p.stamp)
        tracks = buf.tracks.get(p.stamp)
        for d in (buf.info, buf.depth, buf.pose, buf.tracks):  # drop everything up to this stamp
            for s in [s for s in d if s <= p.stamp]:
                del d[s]
        return BagFrame(
            index=index,
            stamp_ns=p.stamp,
            image=image,
            k=k,
            width=image.shape[1],
            height=image.shape[0],
            frame_id=str(p.msg.header.frame_id),
            gt_depth=None if depth is None else m.depth_from_msg(depth),
            gt_pose=None if pose is None else m.pose_from_msg(pose),
            gt_tracks=None if tracks is None else m.tracks_from_msg(tracks),
            log_time_ns=p.log_time,
        )

    def frames(self) -> Iterator[BagFrame]:
        """Yield frames in log-time order; each frame waits at most ``max_lag_ns`` of log time for its data."""
        pending: deque[_Pending] = deque()
        buf = _Buffers()
        index = 0
        gt_key = {topic: key for key, topic in self.gt_topics.items()}
        for conn, log_time, raw in self._reader.messages(connections=self._conns):
            msg = self._reader.deserialize(raw, conn.msgtype)
            stamp = m.stamp_to_ns(msg.header)
            if conn.topic == self.image_topic:
                pending.append(_Pending(stamp, log_time, msg))
            elif conn.topic == self.info_topic:
                buf.info[stamp] = msg
                buf.last_info = msg
            else:
                getattr(buf, gt_key[conn.topic])[stamp] = msg
            while pending and (self._complete(pending[0], buf) or log_time - pending[0].log_time > self.max_lag_ns):
                yield self._emit(index, pending.popleft(), buf)
                index += 1
        while pending:
            yield self._emit(index, pending.popleft(), buf)
            index += 1

    def __iter__(self) -> Iterator[BagFrame]:
        """Same as :meth:`frames`."""
        return self.frames()


def stack_tracks(samples: list[TrackSample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack per-frame track clouds into arrays aligned on the first sample's ids.

    Returns ids (N,), positions (T, N, 3) float64 and visible (T, N) bool; a track absent from a frame gets NaN
    positions and visible False there.
    """
    if not samples:
        return np.empty(0, np.uint32), np.empty((0, 0, 3)), np.empty((0, 0), bool)
    ids = samples[0].ids
    lookup = {int(i): n for n, i in enumerate(ids)}
    xyz = np.full((len(samples), ids.size, 3), np.nan)
    vis = np.zeros((len(samples), ids.size), dtype=bool)
    for t, s in enumerate(samples):
        if s.ids.size == ids.size and np.array_equal(s.ids, ids):
            xyz[t], vis[t] = s.xyz, s.visible
            continue
        cols = np.array([lookup.get(int(i), -1) for i in s.ids], dtype=np.int64)
        ok = cols >= 0
        xyz[t, cols[ok]] = s.xyz[ok]
        vis[t, cols[ok]] = s.visible[ok]
    return ids, xyz, vis


def read_frames(path: str | Path, topics: Topics | None = None) -> Iterator[BagFrame]:
    """Convenience: iterate all frames of a bag, closing it at the end."""
    with BenchmarkBagReader(path, topics) as reader:
        yield from reader.frames()


def write_sequence(
    sequence: Any,
    path: str | Path,
    *,
    storage: str = DEFAULT_STORAGE,
    topics: Topics | None = None,
    transport: str = "raw",
    encoding: str = "rgb8",
    ground_truth: bool = True,
    progress: Any = None,
) -> int:
    """Render a :class:`~st4rtrack_ros.data.sequence.SynthSequence` into a bag; returns the frame count.

    ``progress`` is called as progress(done, total) after each frame.
    """
    total = sequence.scene.n_frames
    with BenchmarkBagWriter(path, storage=storage, topics=topics, transport=transport, encoding=encoding) as w:
        for fr in sequence.frames():
            tracks = TrackSample(fr.track_ids, fr.track_xyz, fr.track_visible, fr.track_dynamic)
            w.write_frame(
                fr.stamp_ns,
                fr.rgb,
                fr.k,
                depth=fr.depth if ground_truth else None,
                pose=fr.pose if ground_truth else None,
                tracks=tracks if ground_truth else None,
            )
            if progress is not None:
                progress(fr.index + 1, total)
    return total


def synthetic_bag(work: str | Path, preset: str, seed: int, frames: int, size: tuple[int, int] = (256, 160)) -> Path:
    """A synthetic benchmark bag, rendered once and cached as ``work/<preset>_<seed>_<frames>_<W>x<H>``.

    The experiments, benchmarks and the real-data benchmark share it, so one cache serves them all.
    """
    from st4rtrack_ros.data.sequence import make_sequence  # lazy: rendering pulls in the scene code

    path = Path(work) / f"{preset}_{seed}_{frames}_{size[0]}x{size[1]}"
    if not (path / "metadata.yaml").exists():
        write_sequence(make_sequence(preset, frames, seed, width=size[0], height=size[1]), path)
    return path
