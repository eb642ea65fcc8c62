"""Bag format checks: our writer ↔ our reader, bags written directly with `rosbags`, mcap and sqlite3,
Image (rgb8/bgr8/mono8) and CompressedImage (jpeg/png), stream-order matching of ground truth by stamp."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from st4rtrack_ros.data import messages as m
from st4rtrack_ros.data.bag_format import TRACK_DTYPE, Topics
from st4rtrack_ros.data.bag_io import (
    BenchmarkBagReader,
    BenchmarkBagWriter,
    read_frames,
    stack_tracks,
    write_sequence,
)
from st4rtrack_ros.data.messages import TrackSample
from st4rtrack_ros.data.sequence import make_sequence

W, H = 40, 30


@pytest.fixture(scope="module")
def seq():
    """Tiny synthetic sequence shared by the tests."""
    return make_sequence("easy", 4, seed=11, width=W, height=H, n_tracks=40, n_object_tracks=10)


@pytest.fixture(scope="module")
def seq_frames(seq):
    """Its rendered frames."""
    return list(seq.frames())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("transport,encoding", [("raw", "rgb8"), ("raw", "bgr8"), ("raw", "mono8"), ("png", "rgb8"),
                                                ("jpeg", "rgb8")])
def test_writer_reader_roundtrip(tmp_path: Path, seq, seq_frames, storage: str, transport: str, encoding: str):
    """Every stored quantity comes back; lossless transports return the exact pixels."""
    bag = tmp_path / "bag"
    write_sequence(seq, bag, storage=storage, transport=transport, encoding=encoding)
    with BenchmarkBagReader(bag) as reader:
        assert reader.missing_ground_truth == []
        assert reader.compressed == (transport != "raw")
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in seq_frames]
    for got, ref in zip(frames, seq_frames, strict=True):
        assert got.image.shape == (H, W, 3) and got.image.dtype == np.uint8
        if encoding == "mono8":
            gray = cv2.cvtColor(ref.rgb, cv2.COLOR_RGB2GRAY)
            np.testing.assert_array_equal(got.image, np.repeat(gray[:, :, None], 3, axis=2))
        elif transport == "jpeg":
            assert np.abs(got.image.astype(int) - ref.rgb).mean() < 12
        else:
            np.testing.assert_array_equal(got.image, ref.rgb)
        np.testing.assert_array_equal(got.k, ref.k)
        np.testing.assert_array_equal(got.gt_depth, ref.depth)
        np.testing.assert_allclose(got.gt_pose, ref.pose, atol=1e-12)
        np.testing.assert_array_equal(got.gt_tracks.ids, ref.track_ids)
        np.testing.assert_array_equal(got.gt_tracks.xyz, ref.track_xyz.astype(np.float32))
        np.testing.assert_array_equal(got.gt_tracks.visible, ref.track_visible)
        np.testing.assert_array_equal(got.gt_tracks.dynamic, ref.track_dynamic)
        assert got.frame_id == "camera_optical_frame"


def test_bag_is_readable_by_plain_rosbags_and_declares_ros_types(tmp_path: Path, seq):
    """Standard tooling view: topics, types, counts, and the tracks cloud layout."""
    bag = tmp_path / "bag"
    write_sequence(seq, bag)
    assert (bag / "metadata.yaml").exists() and list(bag.glob("*.mcap"))
    with AnyReader([bag]) as r:  # no default typestore: definitions must be embedded in the bag
        types = {c.topic: c.msgtype for c in r.connections}
        assert types == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
            "/gt/depth": "sensor_msgs/msg/Image",
            "/gt/camera_pose": "geometry_msgs/msg/PoseStamped",
            "/gt/tracks": "sensor_msgs/msg/PointCloud2",
        }
        for conn, t_log, raw in r.messages():
            msg = r.deserialize(raw, conn.msgtype)
            assert m.stamp_to_ns(msg.header) == t_log
            if conn.topic == "/gt/tracks":
                assert [f.name for f in msg.fields][:5] == ["x", "y", "z", "id", "visible"]
                assert msg.header.frame_id == "world" and msg.point_step == 20
            if conn.topic == "/gt/depth":
                assert msg.encoding == "32FC1"


def _rosbags_image(ts, stamp: int, rgb: np.ndarray, kind: str):
    """Messages built by hand from the rosbags typestore (not with our helpers)."""
    hdr = ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"
    )
    if kind in ("jpeg", "png"):
        ok, buf = cv2.imencode("." + ("jpg" if kind == "jpeg" else "png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        return "sensor_msgs/msg/CompressedImage", ts.types["sensor_msgs/msg/CompressedImage"](
            header=hdr, format=kind, data=buf.ravel()
        )
    data = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, 1]}[kind]
    data = np.ascontiguousarray(data)
    ch = 1 if data.ndim == 2 else 3
    return "sensor_msgs/msg/Image", ts.types["sensor_msgs/msg/Image"](
        header=hdr, height=H, width=W, encoding=kind, is_bigendian=0, step=W * ch, data=data.ravel()
    )


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
@pytest.mark.parametrize("kind", ["rgb8", "bgr8", "mono8", "png", "jpeg"])
def test_reads_bags_written_by_rosbags(tmp_path: Path, storage, kind: str):
    """A camera-only bag on a custom topic, written with rosbags' own Writer; GT absent is reported."""
    ts = m.default_typestore()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(3)]
    imgs = [cv2.GaussianBlur(i, (5, 5), 0) for i in imgs]  # smooth, so jpeg stays close
    bag = tmp_path / "ext"
    with Writer(bag, version=9, storage_plugin=storage) as w:
        msgtype = _rosbags_image(ts, 0, imgs[0], kind)[0]
        conn = w.add_connection("/front/cam", msgtype, typestore=ts)
        for i, img in enumerate(imgs):
            stamp = 5 * 10**9 + i * 10**8
            _, msg = _rosbags_image(ts, stamp, img, kind)
            w.write(conn, stamp, ts.serialize_cdr(msg, msgtype))
    with BenchmarkBagReader(bag) as reader:
        assert reader.image_topic == "/front/cam"
        assert reader.missing_ground_truth == ["depth", "pose", "tracks"]
        assert not reader.has_camera_info
        frames = list(reader.frames())
    assert len(frames) == 3
    for f, img in zip(frames, imgs, strict=True):
        assert f.k is None and f.gt_depth is None and f.gt_pose is None and f.gt_tracks is None
        if kind == "mono8":
            np.testing.assert_array_equal(f.image, np.repeat(img[:, :, 1:2], 3, axis=2))
        elif kind == "jpeg":
            assert np.abs(f.image.astype(int) - img).mean() < 8
        else:
            np.testing.assert_array_equal(f.image, img)


def test_ground_truth_matched_by_stamp_in_stream_order(tmp_path: Path):
    """GT logged later than its image (and out of order) still attaches to the frame with the same stamp."""
    ts = m.default_typestore()
    stamps = [10**9 + i * 10**8 for i in range(5)]
    bag = tmp_path / "late"
    k = np.array([[30.0, 0, 19.5], [0, 30.0, 14.5], [0, 0, 1]])
    topics = Topics(image="/img", camera_info="/info", gt_pose="/pose", gt_depth="/d", gt_tracks="/trk")
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection("/img", "sensor_msgs/msg/Image", typestore=ts)
        cc = w.add_connection("/info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        cp = w.add_connection("/pose", "geometry_msgs/msg/PoseStamped", typestore=ts)
        for i, s in enumerate(stamps):
            rgb = np.full((H, W, 3), i, np.uint8)
            w.write(ci, s, ts.serialize_cdr(m.image_msg(ts, s, "cam", rgb), "sensor_msgs/msg/Image"))
            w.write(cc, s, ts.serialize_cdr(m.camera_info_msg(ts, s, "cam", k, W, H), "sensor_msgs/msg/CameraInfo"))
        for i, s in reversed(list(enumerate(stamps))):  # poses arrive 0.35 s late, newest first
            pose = np.eye(4)
            pose[0, 3] = i
            w.write(cp, s + 350_000_000 + (4 - i), ts.serialize_cdr(m.pose_msg(ts, s, "world", pose),
                                                                     "geometry_msgs/msg/PoseStamped"))
    with BenchmarkBagReader(bag, topics=topics) as reader:
        assert reader.missing_ground_truth == ["depth", "tracks"]
        frames = list(reader.frames())
    assert [f.stamp_ns for f in frames] == stamps
    for i, f in enumerate(frames):
        assert f.image[0, 0, 0] == i
        assert f.gt_pose is not None and f.gt_pose[0, 3] == i
        np.testing.assert_array_equal(f.k, k)


def test_writer_rejects_bad_input_and_existing_bag(tmp_path: Path):
    """Clear errors instead of silently writing a broken bag."""
    bag = tmp_path / "b"
    with BenchmarkBagWriter(bag, storage="sqlite3") as w:
        with pytest.raises(ValueError):
            w.write_frame(0, np.zeros((4, 4), np.uint8), np.eye(3))
        w.write_frame(1, np.zeros((4, 4, 3), np.uint8), np.eye(3))
    with pytest.raises(Exception, match="exists"):
        BenchmarkBagWriter(bag)
    with pytest.raises(ValueError):
        BenchmarkBagWriter(tmp_path / "c", storage="rosbag1")
    frames = list(read_frames(bag))
    assert len(frames) == 1 and frames[0].gt_pose is None


def test_tracks_cloud_layout_and_independent_parse():
    """The /gt/tracks bytes decode with a hand-written dtype, and the parser honours field offsets."""
    ts = m.default_typestore()
    ids = np.array([3, 7, 9], np.uint32)
    xyz = np.arange(9, dtype=np.float32).reshape(3, 3)
    msg = m.tracks_msg(ts, 5, "world", ids, xyz, np.array([1, 0, 1], bool), np.array([0, 1, 1], bool))
    raw = np.frombuffer(bytes(msg.data), dtype=np.dtype(
        {"names": ["x", "y", "z", "id", "visible"], "formats": ["<f4", "<f4", "<f4", "<u4", "u1"],
         "offsets": [0, 4, 8, 12, 16], "itemsize": 20}))
    np.testing.assert_array_equal(raw["id"], ids)
    np.testing.assert_array_equal(raw["y"], xyz[:, 1])
    np.testing.assert_array_equal(raw["visible"], [1, 0, 1])
    assert TRACK_DTYPE.itemsize == 20
    back = m.tracks_from_msg(msg)
    np.testing.assert_array_equal(back.xyz, xyz)
    np.testing.assert_array_equal(back.dynamic, [False, True, True])
    # A cloud without the optional 'dynamic' field.
    msg2 = m.tracks_msg(ts, 5, "world", ids, xyz, np.ones(3, bool))
    assert m.tracks_from_msg(msg2).dynamic is None
    assert isinstance(TrackSample(ids, xyz, np.ones(3, bool), None).ids, np.ndarray)


def test_stack_tracks_aligns_by_id(seq, tmp_path: Path):
    """Per-frame clouds stack into (T, N, 3) equal to the sequence's ground truth; reordered ids realign."""
    bag = tmp_path / "bag"
    write_sequence(seq, bag)
    frames = list(read_frames(bag))
    ids, xyz, vis = stack_tracks([f.gt_tracks for f in frames])
    np.testing.assert_array_equal(ids, seq.tracks.ids)
    np.testing.assert_allclose(xyz, seq.tracks.positions, atol=1e-5)
    np.testing.assert_array_equal(vis, seq.tracks.visible)
    a = TrackSample(np.array([1, 2], np.uint32), np.zeros((2, 3), np.float32), np.array([True, False]), None)
    b = TrackSample(np.array([2], np.uint32), np.ones((1, 3), np.float32), np.array([True]), None)
    _, xyz2, vis2 = stack_tracks([a, b])
    assert np.isnan(xyz2[1, 0]).all() and (xyz2[1, 1] == 1).all() and vis2[1].tolist() == [False, True]
