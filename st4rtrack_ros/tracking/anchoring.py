"""The geometry of starting a new window (``OnlineTracker._start_window``): the scale of a new world, the Sim(3) that
chains a new anchor to the previous one, which living tracks carry over onto the new anchor, and the fresh queries
that fill the rest of its image. Pure functions of the network outputs and the track table's arrays."""

from __future__ import annotations

import numpy as np
import torch

from st4rtrack_ros.geometry.sampling import sample_map
from st4rtrack_ros.geometry.similarity import Sim3, inverse, robust_umeyama
from st4rtrack_ros.model.network import PairOutput
from st4rtrack_ros.tracking.queries import QueryMode, select_queries
from st4rtrack_ros.tracking.tracks import fill_queries


def world_scale(depth_own: torch.Tensor, metric_scale: float, gt_depth: torch.Tensor | None) -> tuple[float, bool]:
    """World units per model unit for a new world, and whether they are metres.

    ``metric_scale`` when it is set (> 0); else, with an aligned depth image ``gt_depth`` (h, w) at model size, the
    median ratio of that depth to the anchor's own depth ``depth_own`` (h, w) over the pixels valid in both (more
    than 100 of them); else 1 (model units).
    """
    if metric_scale > 0:
        return metric_scale, True
    if gt_depth is not None:
        ok = (gt_depth > 0) & torch.isfinite(gt_depth) & (depth_own > 1e-6)
        if int(ok.sum()) > 100:
            return float((gt_depth[ok] / depth_own[ok]).median()), True
    return 1.0, False


def chain_to_previous(prev: PairOutput, own: PairOutput, n_points: int) -> Sim3:
    """previous anchor ← new anchor: a robust Sim(3) between the two reconstructions of the shared frame, head 2 of
    (previous anchor, frame) ``prev`` against head 1 of (frame, frame) ``own``, over the ``n_points`` pixels
    (at most) most confident in both (pointmaps (1, h, w, 3), confidences (1, h, w))."""
    conf = torch.minimum(prev.recon_conf[0], own.track_conf[0]).reshape(-1)
    n = min(n_points, conf.numel())
    idx = torch.topk(conf, n).indices
    src = own.track_pts[0].reshape(-1, 3)[idx].double().cpu().numpy()
    dst = prev.recon_pts[0].reshape(-1, 3)[idx].double().cpu().numpy()
    return robust_umeyama(src, dst)


def carried_tracks(positions: np.ndarray, visible: np.ndarray, world_from_anchor: Sim3, k: np.ndarray,
                   size_hw: tuple[int, int], anchor_pts: torch.Tensor, max_dist: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The living tracks that continue on a new anchor (same ids): those ``visible`` (N,) whose world
    ``positions`` (N, 3) project into the anchor's image (``k`` (3, 3) model pixels, ``size_hw``) where the anchor's
    own pointmap ``anchor_pts`` (1, h, w, 3) (anchor frame) sees a surface within ``max_dist`` world units of them.

    Returns their pixels on the anchor (M, 2) and their rows in the track table (M,).
    """
    h, w = size_hw
    in_anchor = inverse(world_from_anchor).apply(positions)
    z = in_anchor[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = (in_anchor @ k.T)[:, :2] / z[:, None]
    ok = visible & (z > 1e-6) & np.isfinite(proj).all(1)
    ok &= (proj[:, 0] >= 0) & (proj[:, 0] <= w - 1) & (proj[:, 1] >= 0) & (proj[:, 1] <= h - 1)
    rows = np.flatnonzero(ok)
    if not len(rows):
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    uv_t = torch.as_tensor(proj[rows], dtype=torch.float32, device=anchor_pts.device)[None]
    seen = world_from_anchor.apply(sample_map(anchor_pts, uv_t)[0].detach().double().cpu().numpy())
    near = np.linalg.norm(seen - positions[rows], axis=1) <= max_dist
    return proj[rows[near]], rows[near]


def fresh_queries(rgb: np.ndarray, kept_uv: np.ndarray, count: int, mode: QueryMode,
                  given: np.ndarray | None = None) -> np.ndarray:
    """(F, 2) new query pixels of an anchor (``rgb`` (h, w, 3), model size): exactly ``given`` when the caller chose
    them (the evaluation protocol), else grid/corner candidates at least half a grid step from every kept query
    ``kept_uv`` (M, 2), up to ``count`` queries in all."""
    if given is not None:
        return np.asarray(given, dtype=np.float64).reshape(-1, 2)
    h, w = rgb.shape[:2]
    spacing = 0.5 * np.sqrt(h * w / max(count, 1))
    return fill_queries(kept_uv, select_queries(rgb, count, mode), count, spacing)
