"""Ground-truth labels for the adaptation worker: the oracle-label upper bound of the study (``labels: oracle``).

:class:`OracleLabels` is an adaptation-worker label source (``adaptation.config.LabelSource``) that answers each
round with the recorded ground truth of the bag the tracker is streaming instead of KLT tracks and the depth image:
the queries are ground-truth track points visible in the snapshot's anchor (projected into the model image, as the
evaluation harness picks its queries), their 2D tracks are their true projections in every snapshot frame (also
where they are occluded: the trajectory a perfect tracker would follow), the visibility is the recorded one and the
depth is the recorded depth fitted to the model image. It measures how much adaptation could gain with perfect
labels; it needs ground truth, so it never runs on a robot. Snapshot frames are found by their stamps
(``WindowSnapshot.stamps_ns``); the pixel mapping is the tracker's (``model.preprocess.plan_mapping`` with its fit).

It is distinct from :mod:`evaluation.oracle` (an engine that replaces the *network's outputs* by the exact targets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from st4rtrack_ros.adaptation.pseudo_labels import KLTConfig
from st4rtrack_ros.data.bag_io import BagFrame, read_frames
from st4rtrack_ros.evaluation.runner import _gt_rows, _query_pixels
from st4rtrack_ros.model.preprocess import FitMode, PixelMapping, fit_depth, plan_mapping
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot


class OracleLabels:
    """A label source (``(snapshot, frames) → (query (N, 2), uv (F, N, 2), vis (F, N), depth (F, H, W) | None)``)
    from a bag's ground truth (camera pose, intrinsics, 3D tracks with visibility, depth), looked up by stamp."""

    name = "ground truth (oracle)"

    def __init__(self, frames: Iterable[BagFrame], fit: FitMode = "crop",
                 max_queries: int = KLTConfig().num_tracks) -> None:
        """``frames``: the bag's frames (their images are not kept); ``fit``: the tracker's camera-to-model fit;
        ``max_queries``: at most this many labelled points per snapshot (as many as KLT gives by default), spread
        evenly over the visible ground-truth tracks."""
        self.fit: FitMode = fit
        self.max_queries = max_queries
        self._frames: dict[int, BagFrame] = {}
        for f in frames:
            if f.gt_pose is None or f.gt_tracks is None or f.k is None:
                raise ValueError(f"frame {f.index} (stamp {f.stamp_ns}) has no ground-truth pose, tracks or camera "
                                 "info: the oracle needs all three")
            self._frames[f.stamp_ns] = dataclasses.replace(f, image=f.image[:0, :0])  # its size is in width/height
        self._mappings: dict[tuple[int, int, int, int], PixelMapping] = {}

    @classmethod
    def from_bag(cls, path: str | Path, fit: FitMode = "crop", max_queries: int = KLTConfig().num_tracks
                 ) -> OracleLabels:
        """The oracle of a recorded (synthetic) benchmark bag."""
        return cls(read_frames(path), fit, max_queries)

    def _frame(self, stamp_ns: int) -> BagFrame:
        try:
            return self._frames[int(stamp_ns)]
        except KeyError:
            raise ValueError(f"the oracle has no ground truth for stamp {int(stamp_ns)} (another bag?)") from None

    def _mapping(self, frame: BagFrame, model_wh: tuple[int, int]) -> PixelMapping:
        key = (frame.width, frame.height, *model_wh)
        if key not in self._mappings:
            self._mappings[key] = plan_mapping((frame.width, frame.height), model_wh, self.fit)
        return self._mappings[key]

    def __call__(self, snap: WindowSnapshot, frames: list[int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels of the snapshot frames ``frames`` (``frames[0]`` the anchor): query (N, 2) float64 anchor model
        pixels; uv (F, N, 2) float32 true projections (uv[0] == query; NaN where a point is behind the camera or
        absent); vis (F, N) bool recorded visibility inside the model image (vis[0] all True); depth (F, H, W)
        float32 metres, 0 = none (None when no frame has depth)."""
        if snap.stamps_ns is None:
            raise ValueError("the snapshot carries no frame stamps: the oracle cannot find its ground truth")
        h, w = snap.rgb.shape[1:3]
        gt = [self._frame(snap.stamps_ns[i]) for i in frames]
        anchor_map = self._mapping(gt[0], (w, h))
        ids, query = _query_pixels(gt[0], anchor_map, self.max_queries)
        uv = np.full((len(gt), len(ids), 2), np.nan, np.float32)
        vis = np.zeros((len(gt), len(ids)), bool)
        depth = np.zeros((len(gt), h, w), np.float32)
        have_depth = False
        for t, f in enumerate(gt):
            mapping = self._mapping(f, (w, h))
            xyz, visible, _ = _gt_rows(f, ids)
            assert f.gt_pose is not None and f.k is not None  # checked on construction
            cam = (np.linalg.inv(f.gt_pose) @ np.c_[xyz, np.ones(len(xyz))].T).T[:, :3]
            front = np.isfinite(cam).all(1) & (cam[:, 2] > 1e-6)
            pix = (f.k @ cam[front].T).T
            uv[t, front] = mapping.camera_to_model(pix[:, :2] / pix[:, 2:])
            inside = (uv[t, :, 0] >= 0) & (uv[t, :, 0] <= w - 1) & (uv[t, :, 1] >= 0) & (uv[t, :, 1] <= h - 1)
            vis[t] = visible & front & inside
            if f.gt_depth is not None:
                depth[t] = fit_depth(f.gt_depth, mapping)
                have_depth = True
        uv[0], vis[0] = query, True  # the queries themselves, exactly
        return query, uv, vis, depth if have_depth else None
