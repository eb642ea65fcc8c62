"""What the real-data benchmark can measure honestly without ground truth (see ``real_benchmark``): which KLT tracks
are static background, the reprojection residual of the 3D tracks against KLT, the static background's 3D jitter, and
the depth scale's drift across re-anchoring (with ground-truth depth also against the truth)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from st4rtrack_ros.adaptation.pseudo_labels import klt_tracks
from st4rtrack_ros.evaluation.recorded_runs import RecordingTracker
from st4rtrack_ros.evaluation.runner import RunResult
from st4rtrack_ros.geometry.projection import project, world_to_camera


def static_background(uv: np.ndarray, visible: np.ndarray, thresh_px: float = 1.0, min_frames: int = 8,
                      min_share: float = 0.8) -> np.ndarray:
    """(M,) bool: KLT tracks that move with the camera, not on their own.

    uv (T, M, 2) pixels, visible (T, M). Per frame t, a track is consistent when it is an inlier (``thresh_px``) of
    a MAGSAC fundamental matrix between frame 0 and t, or, where the image barely moved (median displacement below
    2·thresh), when it stayed within 2·thresh of its start (F is degenerate without motion). Static = consistent
    in at least ``min_share`` of at least ``min_frames`` frames. An approximation: a mover whose motion happens to
    follow its epipolar line passes.
    """
    n_frames, m = visible.shape
    min_frames = min(min_frames, max(n_frames - 1, 1))  # short runs (tests): every frame after the first
    inlier = np.zeros((n_frames, m), bool)
    checked = np.zeros((n_frames, m), bool)
    for t in range(1, n_frames):
        v = visible[t]
        if v.sum() < 15:
            continue
        a, b = uv[0, v].astype(np.float64), uv[t, v].astype(np.float64)
        disp = np.linalg.norm(b - a, axis=1)
        if np.median(disp) < 2 * thresh_px:
            ok = disp < 2 * thresh_px
        else:
            f, mask = cv2.findFundamentalMat(a, b, cv2.USAC_MAGSAC, thresh_px, 0.999)
            if f is None or mask is None:
                continue
            ok = mask.ravel().astype(bool)
        inlier[t, v], checked[t, v] = ok, True
    n = checked.sum(0)
    return (n >= min_frames) & (inlier.sum(0) >= min_share * np.maximum(n, 1))


def reprojection_residual(positions: np.ndarray, poses: np.ndarray, k: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(T, M) pixel distance between KLT positions uv (T, M, 2) and the 3D tracks positions (T, M, 3) (world)
    projected with the estimated poses (T, 4, 4) world ← camera and K (3, 3); NaN behind the camera or unknown."""
    cam = world_to_camera(torch.as_tensor(np.nan_to_num(positions), dtype=torch.float64),
                          torch.as_tensor(poses, dtype=torch.float64))
    proj, z = project(cam, torch.as_tensor(k, dtype=torch.float64))
    err = np.linalg.norm(proj.numpy() - uv, axis=-1)
    return np.where(np.isfinite(positions).all(-1) & (z.numpy() > 1e-6), err, np.nan)


def static_jitter(positions: np.ndarray, visible: np.ndarray, static: np.ndarray, scene_depth: float) -> float:
    """Median over static-background tracks of the RMS frame-to-frame motion of their 3D positions (T, M, 3),
    counted where KLT sees the track in both frames, divided by the scene depth: 0 for a perfect tracker."""
    step = np.linalg.norm(np.diff(positions, axis=0), axis=-1)  # (T-1, M)
    ok = visible[1:] & visible[:-1] & np.isfinite(step) & static[None]
    counts = ok.sum(0)
    keep = counts >= 4
    if not keep.any() or not scene_depth > 0:
        return float("nan")
    rms = np.sqrt((np.where(ok, step, 0.0) ** 2).sum(0)[keep] / counts[keep])
    return float(np.median(rms) / scene_depth)


def _median(x: np.ndarray, q: float = 50.0) -> float:
    """The q-th percentile (default the median) of the finite values; NaN when there are none."""
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else float("nan")


def label_free(run: RunResult, rec: RecordingTracker) -> dict[str, Any]:
    """The label-free measures of one run, plus the arrays the picture needs (key ``_arrays``, not written)."""
    rgbs = np.stack(rec.rgbs)
    uv, vis = klt_tracks(rgbs, rec.klt_queries.astype(np.float32), rec.klt)
    pos = np.stack(rec.positions)
    static = static_background(uv, vis)
    res = reprojection_residual(pos, run.pred_poses, run.k_model, uv)
    scored = vis.copy()
    scored[0] = False  # frame 0 is where the queries were picked
    scored &= np.isfinite(res)
    moved = np.linalg.norm(uv - uv[:1], axis=-1)  # "nothing moves": the image displacement itself
    scene_depth = _median(pos[0, :, 2])
    out = {
        "klt_tracks": len(rec.klt_queries),
        "klt_visible_last_frame": int(vis[-1].sum()),
        "static_tracks": int(static.sum()),
        "reprojection_px": {
            "model_median": _median(res[scored]), "model_p90": _median(res[scored], 90),
            "model_frame0_median": _median(res[0][vis[0]]),  # K vs the pointmap's own focal (no pose involved)
            "model_static_median": _median(res[scored & static[None]]),
            "model_moving_median": _median(res[scored & ~static[None]]),  # every track not classed static
            "nothing_moves_median": _median(moved[scored]),
            "nothing_moves_p90": _median(moved[scored], 90),
            "n": int(scored.sum()),
            "model_width_px": int(rgbs.shape[2]),
        },
        "static_jitter_rel": static_jitter(pos, vis, static, scene_depth),
        "pose_success_rate": float(run.pose_ok.mean()),
        "reanchors": int(sum(rec.reanchored[1:])),
    }
    out["_arrays"] = {"uv": uv, "visible": vis, "static": static, "positions": pos, "residual": res, "rgbs": rgbs}
    return out


def _depth_scale(pred: np.ndarray, ref: np.ndarray) -> float:
    """median(pred) / median(ref) over pixels valid in both (depth maps (h, w), 0 or NaN invalid)."""
    ok = np.isfinite(pred) & np.isfinite(ref) & (pred > 0) & (ref > 0)
    return float(np.median(pred[ok]) / np.median(ref[ok])) if ok.sum() > 100 else float("nan")


def _drift(series: list[float]) -> dict[str, float]:
    """A per-frame scale series normalised by its frame-0 value: last value and the largest factor either way."""
    s = np.asarray(series, dtype=np.float64)
    s = s / s[0] if s.size and np.isfinite(s[0]) else s * np.nan
    logs = np.abs(np.log(s[np.isfinite(s) & (s > 0)]))
    return {"last": float(s[-1]) if s.size else float("nan"),
            "max_factor": float(np.exp(logs.max())) if logs.size else float("nan")}


def scale_drift(runs: dict[str, RunResult]) -> dict[str, Any]:
    """Online depth ÷ protocol depth per frame (the chain's scale against one anchor's), and with ground-truth
    depth each run's depth ÷ the truth per frame, all normalised by frame 0."""
    out: dict[str, Any] = {}
    if "online" in runs and "protocol" in runs:
        on, pr = runs["online"], runs["protocol"]
        out["online_vs_protocol"] = _drift([_depth_scale(a, b) for a, b in zip(on.pred_depth, pr.pred_depth,
                                                                                strict=True)])
    for mode, run in runs.items():
        if all(g is not None for g in run.gt_depth):
            out[f"{mode}_vs_truth"] = _drift([_depth_scale(p, g) for p, g in zip(run.pred_depth, run.gt_depth,
                                                                                  strict=True)])
    return out
