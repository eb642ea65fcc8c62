"""Run the online tracker over a bag in stream order and collect what the metrics need.

The same ``OnlineTracker`` the node runs. Two modes: ``protocol`` (the WorldTrack protocol: frame 0 anchors the whole
run, no re-anchoring, queries = ground-truth points visible in frame 0) and ``online`` (the tracker's own sliding
window and re-anchoring; the ground-truth queries are tracked through the window chain, a track that ends holds its
last position). Latency is timed per frame around ``tracker.step`` (preprocessing included).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from st4rtrack_ros.data.bag_io import BagFrame
from st4rtrack_ros.model.preprocess import PixelMapping, fit_depth, plan_mapping
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


@dataclass
class RunConfig:
    max_frames: int = 64  # the protocol's first 64 frames (0 = all)
    mode: str = "protocol"  # "protocol" (fixed anchor) | "online" (the tracker's sliding window)
    max_queries: int = 2048  # GT query tracks scored (sub-sampled deterministically beyond this)
    keep_cloud_every: int = 8  # keep every k-th frame's coloured reconstruction for the report picture
    progress_every: int = 16  # progress line on stderr every k frames (0 = quiet)
    depth_to_tracker: bool = False  # hand the bag's depth to the tracker as the robot's depth image (adaptation labels)


def protocol_config(base: TrackerConfig) -> TrackerConfig:
    """The tracker with one anchor for the whole run and no track ever ending: the WorldTrack protocol."""
    return dataclasses.replace(base, window_size=10**9, min_visible_fraction=0.0, max_unseen=10**9, map_every=0)


@dataclass
class RunResult:
    """Predictions (model units, world = anchor camera, OpenCV axes) and the matching ground truth (metres)."""

    stamps_ns: np.ndarray  # (T,)
    latency_s: np.ndarray  # (T,)
    wall_s: float
    k_model: np.ndarray  # (3, 3) the window's K in model pixels
    k_source: str  # "camera_info" or "weiszfeld"
    pred_poses: np.ndarray  # (T, 4, 4) world ← camera
    pose_ok: np.ndarray  # (T,) PnP success
    pred_depth: list[np.ndarray]  # T × (h, w) z of the reconstruction in its own camera
    gt_depth: list[np.ndarray | None]  # T × (h, w) metres at model resolution, 0 invalid
    gt_poses: np.ndarray | None  # (T, 4, 4) world ← camera, or None
    query_ids: np.ndarray  # (N,)
    query_uv: np.ndarray  # (N, 2) model pixels of the queries in the anchor
    pred_tracks: np.ndarray  # (T, N, 3)
    track_conf: np.ndarray  # (T, N)
    gt_tracks: np.ndarray | None  # (T, N, 3) world, metres
    gt_visible: np.ndarray | None  # (T, N)
    gt_dynamic: np.ndarray | None  # (N,)
    clouds: list[tuple[np.ndarray, np.ndarray]]  # [(points (M, 3) world, colours (M, 3) uint8)]
    mapping: PixelMapping
    missing: list[str]


def _query_pixels(frame: BagFrame, mapping: PixelMapping, max_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """GT tracks visible in the anchor, projected into model pixels (inside the model image)."""
    tr = frame.gt_tracks
    if tr is None or frame.gt_pose is None or frame.k is None:
        return np.zeros(0, np.uint32), np.zeros((0, 2))
    cam = (np.linalg.inv(frame.gt_pose) @ np.c_[tr.xyz, np.ones(len(tr.xyz))].T).T[:, :3]
    ok = tr.visible & (cam[:, 2] > 1e-6)
    uv_cam = (frame.k @ cam[ok].T).T
    uv_cam = uv_cam[:, :2] / uv_cam[:, 2:]
    uv = mapping.camera_to_model(uv_cam)
    w, h = mapping.model_wh
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
    ids, uv = tr.ids[ok][inside], uv[inside]
    if len(ids) > max_queries:
        keep = np.linspace(0, len(ids) - 1, max_queries).round().astype(int)
        ids, uv = ids[keep], uv[keep]
    return ids, uv


def _gt_rows(frame: BagFrame, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """This frame's GT positions/visibility for the query ids (NaN where absent)."""
    xyz = np.full((len(ids), 3), np.nan)
    vis = np.zeros(len(ids), bool)
    dyn = None
    tr = frame.gt_tracks
    if tr is not None and len(ids):
        order = {int(i): n for n, i in enumerate(tr.ids)}
        rows = np.array([order.get(int(i), -1) for i in ids])
        have = rows >= 0
        xyz[have] = tr.xyz[rows[have]]
        vis[have] = tr.visible[rows[have]]
        if tr.dynamic is not None:
            dyn = np.zeros(len(ids), bool)
            dyn[have] = tr.dynamic[rows[have]]
    return xyz, vis, dyn


def run_frames(frames: Iterable[BagFrame], tracker: OnlineTracker, cfg: RunConfig | None = None) -> RunResult:
    """Stream frames through the tracker; collect predictions and the matching ground truth."""
    cfg = cfg or RunConfig()
    if cfg.mode not in ("protocol", "online"):
        raise ValueError(f"mode must be 'protocol' or 'online', got {cfg.mode!r}")
    stamps, lat, poses, ok, pdepth, gdepth, gposes, gtr, gvis, clouds = [], [], [], [], [], [], [], [], [], []
    tracks: list[np.ndarray] = []
    tconf: list[np.ndarray] = []
    dyn: np.ndarray | None = None
    missing: set[str] = set()
    mapping: PixelMapping | None = None
    k_model = np.eye(3)
    k_source = ""
    query_ids = np.zeros(0, np.uint32)
    query_uv = np.zeros((0, 2))
    t_start = time.perf_counter()
    for i, frame in enumerate(frames):
        if cfg.max_frames and i >= cfg.max_frames:
            break
        if mapping is None:
            mapping = plan_mapping((frame.width, frame.height), tracker.engine.net.config.img_size,
                                   tracker.config.fit)
            query_ids, query_uv = _query_pixels(frame, mapping, cfg.max_queries)
            k_source = "camera_info" if frame.k is not None else "weiszfeld"
        t0 = time.perf_counter()
        depth = frame.gt_depth if cfg.depth_to_tracker else None
        res = tracker.step(FrameInput(frame.stamp_ns, frame.image, frame.k, depth),
                           queries=query_uv if i == 0 else None)
        lat.append(time.perf_counter() - t0)
        k_model = res.k_model

        stamps.append(frame.stamp_ns)
        poses.append(res.pose_world_cam)
        ok.append(res.pose_ok)
        pdepth.append(res.depth)
        # The GT queries are the tracker's ids 0..N-1; a track that ended holds its last position.
        pos = np.full((len(query_ids), 3), np.nan) if not tracks else tracks[-1].copy()
        conf = np.zeros(len(query_ids)) if not tconf else tconf[-1].copy()
        rows = res.tracks.ids < len(query_ids)
        pos[res.tracks.ids[rows]] = res.tracks.positions[rows]
        conf[res.tracks.ids[rows]] = res.tracks.confidence[rows]
        tracks.append(pos)
        tconf.append(conf)
        if frame.gt_depth is not None:
            gdepth.append(fit_depth(frame.gt_depth, mapping))
        else:
            gdepth.append(None)
            missing.add("depth")
        if frame.gt_pose is not None:
            gposes.append(frame.gt_pose)
        else:
            missing.add("camera_pose")
        if frame.gt_tracks is None:
            missing.add("tracks")
        xyz, vis, d = _gt_rows(frame, query_ids)
        gtr.append(xyz)
        gvis.append(vis)
        if i == 0:
            dyn = d
        if cfg.keep_cloud_every and i % cfg.keep_cloud_every == 0:
            clouds.append((res.points, res.colors))
        if cfg.progress_every and (i + 1) % cfg.progress_every == 0:
            print(f"[eval] frame {i + 1}: latency p50 {1e3 * float(np.median(lat)):.1f} ms", file=sys.stderr,
                  flush=True)
    if not stamps:
        raise ValueError("the bag holds no camera frames")
    assert mapping is not None
    have_tracks = "tracks" not in missing and len(query_ids) > 0
    if "tracks" not in missing and len(query_ids) == 0:
        missing.add("tracks")  # GT tracks exist but none is visible inside the anchor's model view
    return RunResult(
        stamps_ns=np.array(stamps), latency_s=np.array(lat), wall_s=time.perf_counter() - t_start,
        k_model=k_model, k_source=k_source, pred_poses=np.stack(poses), pose_ok=np.array(ok), pred_depth=pdepth,
        gt_depth=gdepth, gt_poses=np.stack(gposes) if "camera_pose" not in missing else None,
        query_ids=query_ids, query_uv=query_uv, pred_tracks=np.stack(tracks), track_conf=np.stack(tconf),
        gt_tracks=np.stack(gtr) if have_tracks else None, gt_visible=np.stack(gvis) if have_tracks else None,
        gt_dynamic=dyn if have_tracks else None, clouds=clouds, mapping=mapping, missing=sorted(missing),
    )
