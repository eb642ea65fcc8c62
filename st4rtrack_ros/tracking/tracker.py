"""OnlineTracker: St4RTrack+ on a camera stream, in a sliding window anchored to one persistent world frame.

Why one module over 400 lines: the tracker is one state machine (window, anchor, intrinsics, tracks, map, adaptation
bookkeeping) whose per-frame step, window start and out-of-memory recovery all read and write that state, so
splitting the class would only pass its fields around. Its stateless parts live beside it: the geometry of a window
start in ``anchoring``, the track table in ``tracks``, the queries in ``queries``, the map in ``pointmap``.

Per frame: preprocess → streaming engine against the current anchor → pose of the frame by PnP on its
reconstruction pointmap (head 2) → 3D track positions from the tracking pointmap (head 1) at the anchor's query
pixels, with visibility from the occlusion depth test → the frame's confidence-filtered reconstruction in the world
frame, and every few frames the accumulated map.

World frame: the first anchor's camera (OpenCV axes), in metres when the first frame has an aligned depth image or a
scale is configured, else in model units. When the window is full or too few tracks stay visible, the current frame
becomes the anchor; the new window's frame is tied to the old one by a robust Sim(3) between the two
reconstructions of that shared frame, so outputs stay in one world frame without jumps. Track ids carry over by
reprojection + 3D distance. Memory is bounded by the window, the track table and the map budget.

Out of memory during a step (a GPU shared with adaptation): the frame is dropped (:class:`FrameDropped`), the
engine's caches (anchor tokens, captured CUDA graphs) and the allocator's cached blocks are freed, and the next frame
re-encodes the current anchor from its kept input image, so the world frame carries on. Only an OOM in the middle
of swapping anchors (window replaced, tracks not yet moved to it) resets the world, since that state is half-made.

The node, ``st4rtrack-eval`` and the demo all drive this object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from st4rtrack_ros.geometry.intrinsics import intrinsics_from_pointmap
from st4rtrack_ros.geometry.occlusion import occlusion_mask, recon_depth, reproject_tracks
from st4rtrack_ros.geometry.pose import PoseConfig, estimate_poses
from st4rtrack_ros.geometry.sampling import sample_map
from st4rtrack_ros.geometry.similarity import Sim3, compose
from st4rtrack_ros.model.network import PairOutput
from st4rtrack_ros.model.preprocess import FitMode, PixelMapping, fit_depth, fit_image, plan_mapping, to_tensor
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.model.uncertainty import sigma2_from_conf
from st4rtrack_ros.settings import check_keys
from st4rtrack_ros.tracking.adaptation_port import Adapter, WindowSnapshot
from st4rtrack_ros.tracking.anchoring import carried_tracks, chain_to_previous, fresh_queries, world_scale
from st4rtrack_ros.tracking.pointmap import MapAccumulator
from st4rtrack_ros.tracking.queries import QueryMode
from st4rtrack_ros.tracking.tracks import TrackTable
from st4rtrack_ros.tracking.types import MIN_SIDE, BadInput, FrameDropped, FrameInput, StepResult

log = logging.getLogger(__name__)
CHAIN_FRAMES = 96  # frames of RGB kept for KLT pseudo-labels (model size: 96 × 256 × 160 × 3 B ≈ 12 MB)
#: A frame kept for adaptation snapshots: model input (3, H, W), fitted RGB (H, W, 3), fitted depth or None, stamp.
_Sample = tuple[torch.Tensor, np.ndarray, np.ndarray | None, int]


@dataclass
class TrackerConfig:
    """Tracker parameters (the ``tracking`` section of config/tracker.yaml)."""

    fit: FitMode = "crop"
    window_size: int = 16  # frames per anchor before re-anchoring
    min_visible_fraction: float = 0.3  # re-anchor earlier when fewer tracks than this pass the depth test
    num_queries: int = 256
    query_mode: QueryMode = "grid"
    max_unseen: int = 10  # a track invisible this many frames in a row ends
    history_len: int = 30
    match_rel_dist: float = 0.05  # a track continues on a new anchor if the surface there is this close (× depth)
    dynamic_rel: float = 0.03  # a track is dynamic once it moved this much (relative to median depth)
    occlusion_tau: float = 0.05  # relative depth tolerance of the visibility test
    cloud_quantile: float = 0.5  # keep reconstruction pixels above this confidence quantile
    cloud_max_points: int = 20_000
    map_every: int = 5  # frames between map updates (0 = no map)
    map_voxel: float = 0.02  # world units
    map_max_points: int = 200_000
    map_radius: float = 10.0  # world units around the camera
    use_depth_scale: bool = True  # metric world from the first frame's aligned depth image, when there is one
    metric_scale: float = 0.0  # > 0: world units per model unit (known scale without depth)
    chain_points: int = 4000  # pixels used for the Sim(3) between windows
    pose: PoseConfig = field(default_factory=PoseConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrackerConfig:
        check_keys(cls, d, "tracking parameters")
        kw = dict(d)
        if isinstance(kw.get("pose"), dict):
            kw["pose"] = PoseConfig(**kw["pose"])
        return cls(**kw)


@dataclass
class _Window:
    """The current anchor: world ← anchor similarity, and what the anchor saw."""

    index: int
    world_from_anchor: Sim3
    frames: int = 0  # frames processed against this anchor


class OnlineTracker:
    def __init__(self, engine: StreamingEngine, config: TrackerConfig | None = None,
                 adaptation: Adapter | None = None) -> None:
        self.engine = engine
        self.config = config or TrackerConfig()
        self.adaptation = adaptation
        self.device = engine.device
        # Held around network calls; the adaptation worker's weight swap takes it too.
        self.inference_lock = adaptation.lock if adaptation is not None else threading.Lock()
        self.tracks = TrackTable(self.config.history_len, self.config.max_unseen)
        self.map = MapAccumulator(self.config.map_voxel, self.config.map_max_points, self.config.map_radius)
        self.resets = 0
        self.oom_dropped = 0  # frames dropped because the device ran out of memory
        self.nonfinite_outputs = 0  # network outputs with NaN/Inf (frame skipped or re-anchoring postponed)
        self._clear()

    def _clear(self) -> None:
        self.engine.reset()
        self.tracks.reset()
        self.map.reset()
        self._window: _Window | None = None
        self._anchor_x: torch.Tensor | None = None  # the anchor's model input: re-encoded after an OOM drop
        self._swapping = False  # between replacing the window and moving the tracks onto it
        self._mapping: PixelMapping | None = None
        self._k: torch.Tensor | None = None
        self._last_stamp: int | None = None
        self._last_pose = np.eye(4)
        self._frame_index = 0
        self._metric = False
        self._median_depth = 1.0
        # For adaptation snapshots: this window's anchor and its most recent frames (bounded).
        self._anchor_sample: _Sample | None = None
        self._recent: deque[_Sample] = deque(maxlen=32)
        # Every frame's model-size RGB since the anchor: KLT labels need consecutive frames (a few pixels apart),
        # not the snapshot's spread-out ones. Bounded; when it overflows the snapshot falls back to its own frames.
        self._chain: deque[np.ndarray] = deque(maxlen=CHAIN_FRAMES)
        self._chain_overflow = False

    def reset(self, reason: str = "requested") -> None:
        """Forget the world frame, tracks and map; the next frame starts a new world."""
        log.info("tracker reset: %s", reason)
        self.resets += 1
        self._clear()

    @property
    def window(self) -> _Window | None:
        return self._window

    @property
    def k_model(self) -> torch.Tensor | None:
        return self._k

    @property
    def mapping(self) -> PixelMapping | None:
        return self._mapping

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _infer(self, x: torch.Tensor, new_anchor: bool = False, recon: bool = True) -> PairOutput:
        with self.inference_lock:
            if new_anchor:
                self.engine.set_anchor(x)
            elif not getattr(self.engine, "has_anchor", True) and self._anchor_x is not None:
                self.engine.set_anchor(self._anchor_x)  # the cache was freed after an out-of-memory drop
            out = self.engine.step(x, recon=recon)
            finite = [torch.isfinite(t).all() for t in out.maps()]
            if bool(torch.stack(finite).all()):  # one device sync for every map computed
                return out
            self.nonfinite_outputs += 1
            if new_anchor:  # forget the new anchor: the current one is re-encoded from _anchor_x on the next call
                self.engine.reset()
        raise BadInput("nonfinite_output", f"the network returned NaN/Inf ({self.nonfinite_outputs} times so far): "
                       "frame skipped, tracker state unchanged")

    @staticmethod
    def _check(frame: FrameInput) -> None:
        rgb = frame.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise BadInput("not_rgb8", f"expected an (H, W, 3) uint8 RGB image, got "
                           f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
        if rgb.shape[0] < MIN_SIDE or rgb.shape[1] < MIN_SIDE:
            raise BadInput("too_small", f"image {rgb.shape[1]}×{rgb.shape[0]} is too small (min {MIN_SIDE} px a side)")
        if frame.k is not None and (np.shape(frame.k) != (3, 3) or not np.all(np.isfinite(frame.k))
                                    or frame.k[0, 0] <= 0 or frame.k[1, 1] <= 0):
            raise BadInput("bad_intrinsics", "camera intrinsics must be a finite 3×3 matrix with positive focal "
                           "lengths")
        if frame.depth is not None and np.shape(frame.depth) != rgb.shape[:2]:
            raise BadInput("depth_size_mismatch", f"depth image {np.shape(frame.depth)} is not aligned with the "
                           f"{rgb.shape[:2]} image")

    def _world_points(self, pts: torch.Tensor) -> np.ndarray:
        """Anchor-frame points (..., 3) → world (..., 3) float64 NumPy."""
        assert self._window is not None
        return self._window.world_from_anchor.apply(pts.detach().double().cpu().numpy())

    # -- the window ------------------------------------------------------------------------------------------------

    def _start_window(self, x: torch.Tensor, rgb: np.ndarray, frame: FrameInput, prev: PairOutput | None,
                      queries: np.ndarray | None = None) -> PairOutput:
        """Make this frame the anchor; chain it to the previous window (or found the world on the first)."""
        cfg = self.config
        # (I_c, I_c): head 1 = the anchor's own pointmap. Re-anchoring uses nothing else (the frame's output came
        # from the old window), so head 2 is skipped there; a new world's first frame is the output itself.
        own = self._infer(x, new_anchor=True, recon=prev is None)
        if self._k is None:
            if frame.k is not None:
                assert self._mapping is not None
                self._k = torch.as_tensor(self._mapping.intrinsics_to_model(frame.k), dtype=torch.float32,
                                          device=self.device)
            else:
                self._k = intrinsics_from_pointmap(own.track_pts)
        depth_own = own.track_pts[0, ..., 2]
        if prev is None or self._window is None:
            gt = None
            if cfg.metric_scale <= 0 and cfg.use_depth_scale and frame.depth is not None:
                assert self._mapping is not None
                gt = torch.as_tensor(fit_depth(frame.depth, self._mapping), device=self.device)
            scale, metric = world_scale(depth_own, cfg.metric_scale, gt)
            self._metric = self._metric or metric
            world = Sim3(scale, np.eye(3), np.zeros(3))
            self._median_depth = float(depth_own.median()) * scale
            self.tracks.dynamic_threshold = cfg.dynamic_rel * self._median_depth
        else:  # the shared frame seen by both windows: head 2 of (old anchor, c) vs head 1 of (c, c)
            world = compose(self._window.world_from_anchor, chain_to_previous(prev, own, cfg.chain_points))
        old_window = self._window
        self._swapping = True
        self._window = _Window(index=self._frame_index, world_from_anchor=world)

        # Queries on the new anchor: living tracks that reproject onto the surface the anchor sees there continue
        # (same ids); fresh grid/corner queries fill the rest of the image.
        kept_uv, inherit = np.zeros((0, 2)), np.zeros(0, np.int64)
        if old_window is not None and len(self.tracks):
            kept_uv, inherit = carried_tracks(self.tracks.positions, self.tracks.visible, world,
                                              self._k.double().cpu().numpy(), rgb.shape[:2], own.track_pts,
                                              cfg.match_rel_dist * self._median_depth)
        # caller-chosen queries (evaluation protocol) are exactly those, ids 0..N-1
        fresh = fresh_queries(rgb, kept_uv, cfg.num_queries, cfg.query_mode, queries)
        uv = np.concatenate((kept_uv, fresh))
        inherit = np.concatenate((inherit, np.full(len(fresh), -1)))
        uv_t = torch.as_tensor(uv, dtype=torch.float32, device=self.device)[None]
        new_world = self._world_points(sample_map(own.track_pts, uv_t)[0])
        self.tracks.restart(uv, new_world, self._frame_index, inherit)
        self._anchor_x, self._swapping = x, False
        return own

    # -- adaptation ------------------------------------------------------------------------------------------------

    def _sample(self, x: torch.Tensor, rgb: np.ndarray, frame: FrameInput) -> _Sample:
        """What a snapshot keeps of a frame: the model input (3, H, W) on the CPU, the fitted image (H, W, 3), the
        fitted depth (H, W) or None, and the stamp (ns)."""
        depth = None
        if frame.depth is not None and self._mapping is not None:
            depth = fit_depth(frame.depth, self._mapping)
        return x[0].detach().cpu(), rgb, depth, frame.stamp_ns

    def _offer_adaptation(self, x: torch.Tensor, rgb: np.ndarray, frame: FrameInput) -> None:
        """Keep this window's frames; every N frames hand the worker a snapshot (it may refuse: never wait)."""
        ad = self.adaptation
        if ad is None or not ad.enabled:
            self._chain_overflow = True  # frames go unrecorded: the chain has a gap until the next anchor
            return
        if self._window is not None and self._frame_index == self._window.index:
            self._anchor_snapshot(x, rgb, frame)  # a new world: this frame is the anchor
            return
        self._recent.append(self._sample(x, rgb, frame))
        self._chain_overflow |= len(self._chain) == self._chain.maxlen
        self._chain.append(rgb)
        n = ad.window_frames  # the worker shrinks it after running out of memory
        if (self._frame_index % ad.config.every_n_frames or len(self._recent) < n - 1 or self._k is None
                or self._anchor_sample is None):
            return
        items = list(self._recent)
        pick = np.linspace(0, len(items) - 1, n - 1).round().astype(int).tolist()
        chosen = [self._anchor_sample, *(items[i] for i in pick)]
        depth = None
        if all(c[2] is not None for c in chosen):
            depth = np.stack([c[2] for c in chosen])
        chain = chain_index = None
        if not self._chain_overflow:  # chain = anchor + every frame since; items are its last len(items) frames
            chain = [self._anchor_sample[1], *self._chain]  # references: the worker thread stacks them
            first = len(chain) - len(items)
            chain_index = np.array([0, *(first + i for i in pick)])
        ad.submit(WindowSnapshot(images=torch.stack([c[0] for c in chosen]), rgb=np.stack([c[1] for c in chosen]),
                                 k=self._k.detach().cpu(), depth=depth, chain_rgb=chain, chain_index=chain_index,
                                 stamps_ns=np.array([c[3] for c in chosen], dtype=np.int64)))

    def _anchor_snapshot(self, x: torch.Tensor, rgb: np.ndarray, frame: FrameInput) -> None:
        """Start the adaptation bookkeeping of a new window: its anchor, no recent frames yet."""
        self._recent.clear()
        self._chain.clear()
        self._chain_overflow = False
        self._anchor_sample = self._sample(x, rgb, frame)

    # -- per frame -------------------------------------------------------------------------------------------------

    def step(self, frame: FrameInput, queries: np.ndarray | None = None) -> StepResult:
        """Process one frame; raises ValueError on bad input (the tracker state is left untouched) and
        :class:`FrameDropped` when the device ran out of memory (caches freed; the next frame works).

        ``queries`` (N, 2) model pixels replace the automatic queries when this frame founds a new world (the first
        frame or after a reset): the evaluation protocol tracks ground-truth points this way.
        """
        self._check(frame)
        try:
            return self._step(frame, queries)
        except torch.OutOfMemoryError as e:
            message = str(e).splitlines()[0] if str(e) else "out of memory"
        # Outside the except block, so the traceback no longer holds this step's tensors when memory is freed.
        self._drop_after_oom()
        raise FrameDropped(f"out of memory, frame {frame.stamp_ns} dropped: {message}")

    def _drop_after_oom(self) -> None:
        """Free the engine's caches; keep the world unless the OOM hit halfway through an anchor swap."""
        self.oom_dropped += 1
        self.engine.reset()  # anchor tokens + captured graphs; _infer re-encodes the anchor from _anchor_x
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self._swapping:
            self.reset("out of memory while re-anchoring")
        log.warning("out of memory: frame dropped (%d so far), engine caches cleared", self.oom_dropped)

    def _step(self, frame: FrameInput, queries: np.ndarray | None) -> StepResult:
        cfg = self.config
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        if self._last_stamp is not None and frame.stamp_ns < self._last_stamp:
            self.reset("time jumped backwards (looping bag?)")
        if self._mapping is not None and self._mapping.camera_wh != (w, h):
            self.reset(f"image size changed to {w}×{h}")
        if self._mapping is None:
            self._mapping = plan_mapping((w, h), self.engine.net.config.img_size, cfg.fit)
        rgb = fit_image(frame.rgb, self._mapping)
        x = to_tensor(rgb)[None].to(self.device)
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3

        t = time.perf_counter()
        reanchored = False
        if self._window is None:
            out = self._start_window(x, rgb, frame, None, queries)
            reanchored = True
        else:
            out = self._infer(x)
        timings["network"] = (time.perf_counter() - t) * 1e3
        assert self._window is not None and self._k is not None

        t = time.perf_counter()
        if self._window.frames == 0:  # the anchor itself: identity pose in its own frame
            t_anchor_cam = torch.eye(4, device=self.device)[None]
            pose_ok = True
        else:
            est = estimate_poses(out.recon_pts, out.recon_conf, self._k, cfg.pose)
            t_anchor_cam, pose_ok = est.t_world_cam.float(), bool(est.success[0])
        timings["pose"] = (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        uv_q = torch.as_tensor(self.tracks.query_uv, dtype=torch.float32, device=self.device)[None]
        trk = sample_map(out.track_pts, uv_q)  # (1, N, 3) anchor frame
        conf = sample_map(out.track_conf, uv_q)[0]
        rep = reproject_tracks(trk, t_anchor_cam, self._k)
        z_rec = recon_depth(out.recon_pts, t_anchor_cam)
        if self._window.frames == 0:  # queries were sampled on this very image
            visible = np.ones(len(self.tracks), bool)
        elif pose_ok:
            visible = occlusion_mask(rep.z, rep.uv, z_rec, cfg.occlusion_tau)[0].cpu().numpy()
        else:  # no pose, no depth test: keep the last decision rather than declaring every track lost
            visible = self.tracks.visible
        sigma2 = sigma2_from_conf(conf).cpu().numpy()
        self.tracks.update(self._world_points(trk[0]), visible, conf.cpu().numpy(), sigma2)
        timings["tracks"] = (time.perf_counter() - t) * 1e3

        world = self._window.world_from_anchor
        if pose_ok:
            t_ac = t_anchor_cam[0].double().cpu().numpy()
            pose = np.eye(4)
            pose[:3, :3] = world.rotation @ t_ac[:3, :3]
            pose[:3, 3] = world.apply(t_ac[:3, 3])
            self._last_pose = pose
        pose = self._last_pose.copy()

        t = time.perf_counter()
        rc = out.recon_conf[0].reshape(-1)
        keep = torch.isfinite(out.recon_pts[0].reshape(-1, 3)).all(1) & (rc >= torch.quantile(rc, cfg.cloud_quantile))
        idx = torch.nonzero(keep).squeeze(1)
        if idx.numel() > cfg.cloud_max_points:
            idx = idx[torch.linspace(0, idx.numel() - 1, cfg.cloud_max_points, device=idx.device).long()]
        points = self._world_points(out.recon_pts[0].reshape(-1, 3)[idx]).astype(np.float32)
        idx_np = idx.cpu().numpy()
        colors = rgb.reshape(-1, 3)[idx_np]
        pconf = rc[idx].float().cpu().numpy()
        timings["cloud"] = (time.perf_counter() - t) * 1e3

        t = time.perf_counter()
        map_pts = map_cols = None
        if cfg.map_every and self._frame_index % cfg.map_every == 0:
            self.map.add(points, colors, pose[:3, 3])
            map_pts, map_cols = self.map.points, self.map.colors
        timings["map"] = (time.perf_counter() - t) * 1e3

        self._window.frames += 1
        self._offer_adaptation(x, rgb, frame)
        t = time.perf_counter()
        n = max(len(self.tracks), 1)
        if not reanchored and (self._window.frames >= cfg.window_size
                               or float(self.tracks.visible.sum()) / n < cfg.min_visible_fraction):
            try:
                self._start_window(x, rgb, frame, out)
            except BadInput as e:  # NaN/Inf on the new anchor: keep the current window, try again next frame
                log.warning("re-anchoring postponed: %s", e)
            else:
                self._window.frames = 1  # this frame is the new anchor's first
                self._anchor_snapshot(x, rgb, frame)
                reanchored = True
        timings["reanchor"] = (time.perf_counter() - t) * 1e3

        result = StepResult(
            stamp_ns=frame.stamp_ns, frame_index=self._frame_index, pose_world_cam=pose, pose_ok=pose_ok,
            k_model=self._k.double().cpu().numpy(), depth=(z_rec[0] * world.scale).float().cpu().numpy(),
            points=points, colors=colors, point_confidence=pconf,
            tracks=self.tracks.snapshot(self._frame_index), map_points=map_pts, map_colors=map_cols,
            reanchored=reanchored, anchor_index=self._window.index, metric_scale=self._metric,
            weights_version=self.adaptation.version if self.adaptation is not None else 0, timings_ms=timings,
        )
        timings["total"] = (time.perf_counter() - t0) * 1e3
        self._last_stamp = frame.stamp_ns
        self._frame_index += 1
        return result
