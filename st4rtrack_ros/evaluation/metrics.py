"""Benchmark metrics (facts §4): 3D tracking APD/EPE, video depth AbsRel/δ<1.25, camera ATE/RPE, latency.

All functions are vectorised NumPy and take plain arrays, so they are independent of how predictions are made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from st4rtrack_ros.evaluation.alignment import Sim3, median_scale, per_track_median_scale, umeyama

#: APD thresholds in metres (WorldTrack protocol).
APD_THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0)
#: A track is dynamic when its summed frame-to-frame motion exceeds this (metres).
DYNAMIC_MOTION_M = 0.01
#: Track alignments reported.
TRACK_ALIGNMENTS: tuple[str, ...] = ("median", "per_track", "sim3")


# ------------------------------------------------------------------------------------------------ tracking


def dynamic_tracks(gt: np.ndarray, threshold: float = DYNAMIC_MOTION_M) -> np.ndarray:
    """(N,) bool: summed motion Σ_t‖gt[t+1] − gt[t]‖ of each track (gt of shape (T, N, 3)) > threshold."""
    if gt.shape[0] < 2:
        return np.zeros(gt.shape[1], dtype=bool)
    return np.linalg.norm(np.diff(gt, axis=0), axis=-1).sum(axis=0) > threshold


def apd_epe(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, thresholds: Sequence[float] = APD_THRESHOLDS
) -> tuple[float, float]:
    """APD (percent) and EPE (metres) over all valid (t, n); pred/gt (..., 3), valid (...) bool.

    APD = mean over thresholds of the fraction of points within the threshold, ×100. NaN when nothing is valid.
    """
    err = np.linalg.norm(np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64), axis=-1)
    if valid is not None:
        err = err[np.asarray(valid, dtype=bool)]
    err = err.ravel()
    if err.size == 0:
        return float("nan"), float("nan")
    apd = float(np.mean([(err <= th).mean() for th in thresholds]) * 100.0)
    return apd, float(err.mean())


@dataclass
class TrackScores:
    """Tracking scores of one alignment."""

    apd: float
    epe: float
    apd_dynamic: float
    epe_dynamic: float
    n_points: int
    n_points_dynamic: int


def align_tracks(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, alignment: str) -> np.ndarray:
    """Apply one alignment ('median', 'per_track', 'sim3', 'none') of pred (T, N, 3) to gt, fit on valid points."""
    if alignment == "none":
        return pred
    if alignment == "median":
        return pred * median_scale(pred[valid], gt[valid])
    if alignment == "per_track":
        return pred * per_track_median_scale(pred, gt, valid)[None, :, None]
    if alignment == "sim3":
        return umeyama(pred[valid], gt[valid], with_scale=True).apply(pred)
    raise ValueError(f"unknown alignment {alignment!r}")


def evaluate_tracks(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray | None = None,
    dynamic: np.ndarray | None = None,
    alignments: Sequence[str] = TRACK_ALIGNMENTS,
    thresholds: Sequence[float] = APD_THRESHOLDS,
) -> dict[str, TrackScores]:
    """Score predicted world tracks (T, N, 3) against ground truth (T, N, 3) in the world = frame-0 camera.

    ``valid`` (T, N) restricts which (t, n) count (default all); ``dynamic`` (N,) defaults to
    :func:`dynamic_tracks` of gt. Alignments are fit on all valid points, then scored on all and dynamic ones.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be (T, N, 3), got {pred.shape} and {gt.shape}")
    valid = np.ones(gt.shape[:2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    valid = valid & np.all(np.isfinite(pred), axis=-1) & np.all(np.isfinite(gt), axis=-1)
    dyn = dynamic_tracks(gt) if dynamic is None else np.asarray(dynamic, dtype=bool)
    valid_dyn = valid & dyn[None, :]
    out: dict[str, TrackScores] = {}
    for name in alignments:
        aligned = align_tracks(pred, gt, valid, name)
        apd, epe = apd_epe(aligned, gt, valid, thresholds)
        apd_d, epe_d = apd_epe(aligned, gt, valid_dyn, thresholds)
        out[name] = TrackScores(apd, epe, apd_d, epe_d, int(valid.sum()), int(valid_dyn.sum()))
    return out


# ------------------------------------------------------------------------------------------------ depth


@dataclass
class DepthScores:
    """Video depth scores after per-frame median scaling (means over frames)."""

    abs_rel: float
    delta_1_25: float  # percent of pixels with max(p/g, g/p) < 1.25
    n_frames: int


def depth_frame_scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """AbsRel and δ<1.25 (fraction) of one frame after scaling pred by median(gt)/median(pred) on valid pixels.

    Valid pixels: gt > 0, pred > 0, both finite (and ``valid`` if given). NaNs when none.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.isfinite(gt) & np.isfinite(pred) & (gt > 0) & (pred > 0)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    if not mask.any():
        return float("nan"), float("nan")
    p, g = pred[mask], gt[mask]
    p = p * (np.median(g) / np.median(p))
    abs_rel = float(np.mean(np.abs(p - g) / g))
    delta = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    return abs_rel, delta


def evaluate_depth(
    pred: Sequence[np.ndarray] | np.ndarray,
    gt: Sequence[np.ndarray] | np.ndarray,
    valid: Sequence[np.ndarray] | np.ndarray | None = None,
) -> DepthScores:
    """Per-frame median-scaled AbsRel and δ<1.25 (percent), averaged over frames with valid pixels."""
    pairs = enumerate(zip(pred, gt, strict=True))
    scores = [depth_frame_scores(p, g, None if valid is None else valid[i]) for i, (p, g) in pairs]
    arr = np.array(scores, dtype=np.float64).reshape(-1, 2)
    ok = np.all(np.isfinite(arr), axis=1)
    if not ok.any():
        return DepthScores(float("nan"), float("nan"), 0)
    return DepthScores(float(arr[ok, 0].mean()), float(arr[ok, 1].mean() * 100.0), int(ok.sum()))


# ------------------------------------------------------------------------------------------------ camera


@dataclass
class PoseScores:
    """Camera trajectory scores; translations in metres, rotations in degrees."""

    ate: float  # RMSE of positions after alignment
    rpe_trans: float  # RMSE of relative translation error
    rpe_rot: float  # RMSE of relative rotation angle (deg)
    rpe_trans_mean: float
    rpe_rot_mean: float
    scale: float  # scale of the fitted alignment (1 for SE(3) / none)
    n_poses: int


def align_trajectory(pred: np.ndarray, gt: np.ndarray, alignment: str = "sim3") -> tuple[np.ndarray, Sim3]:
    """Align predicted poses (T, 4, 4) to gt by Umeyama on camera positions ('sim3', 'se3' or 'none')."""
    if alignment == "none":
        return np.asarray(pred, dtype=np.float64), Sim3(1.0, np.eye(3), np.zeros(3))
    if alignment not in ("sim3", "se3"):
        raise ValueError(f"unknown alignment {alignment!r}")
    sim = umeyama(pred[:, :3, 3], gt[:, :3, 3], with_scale=alignment == "sim3")
    return sim.apply_poses(pred), sim


def ate(pred: np.ndarray, gt: np.ndarray, alignment: str = "sim3") -> float:
    """Absolute trajectory error: RMSE of camera positions after alignment."""
    aligned, _ = align_trajectory(np.asarray(pred, np.float64), np.asarray(gt, np.float64), alignment)
    return float(np.sqrt(np.mean(np.sum((aligned[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1))))


def relative_errors(
    pred: np.ndarray, gt: np.ndarray, delta: int = 1, all_pairs: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair RPE: E = (G_i⁻¹G_j)⁻¹(P_i⁻¹P_j) for j = i + delta; returns ‖trans(E)‖ (m) and angle(E) (deg).

    ``all_pairs`` uses every i (evo's ``--all_pairs``); otherwise i = 0, delta, 2·delta, … (evo's default).
    Both agree for delta = 1.
    """
    if not all_pairs and delta > 1:
        pred, gt, delta = pred[::delta], gt[::delta], 1

    def rel(p: np.ndarray) -> np.ndarray:
        return np.linalg.inv(p[:-delta]) @ p[delta:]

    err = np.linalg.inv(rel(gt)) @ rel(pred)
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = np.degrees(np.linalg.norm(Rotation.from_matrix(err[:, :3, :3]).as_rotvec(), axis=1))
    return trans, rot


def evaluate_poses(
    pred: np.ndarray, gt: np.ndarray, alignment: str = "sim3", delta: int = 1, all_pairs: bool = True
) -> PoseScores:
    """ATE after alignment, and RPE over frame pairs ``delta`` apart on the same aligned trajectory.

    The Sim(3) scale matters for RPE translation of scale-free (monocular) predictions, as in evo with
    ``--align --correct_scale``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (4, 4):
        raise ValueError("pred and gt must both be (T, 4, 4)")
    aligned, sim = align_trajectory(pred, gt, alignment)
    ate_v = float(np.sqrt(np.mean(np.sum((aligned[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1))))
    if pred.shape[0] > delta:
        t_err, r_err = relative_errors(aligned, gt, delta, all_pairs)
        rpe = (float(np.sqrt(np.mean(t_err**2))), float(np.sqrt(np.mean(r_err**2))), float(t_err.mean()),
               float(r_err.mean()))
    else:
        rpe = (float("nan"),) * 4
    return PoseScores(ate_v, *rpe, scale=sim.scale, n_poses=int(pred.shape[0]))


# ------------------------------------------------------------------------------------------------ runtime


@dataclass
class LatencyScores:
    """Per-frame latency summary."""

    p50_ms: float
    p95_ms: float
    mean_ms: float
    max_ms: float
    fps: float  # frames per second of processing time (1 / mean latency), or frames / wall time if given
    n_frames: int


def latency_summary(latencies_s: Sequence[float] | np.ndarray, wall_time_s: float | None = None) -> LatencyScores:
    """Summarise per-frame latencies in seconds (p50/p95/mean/max in ms, frames per second)."""
    lat = np.asarray(latencies_s, dtype=np.float64).ravel()
    if lat.size == 0:
        nan = float("nan")
        return LatencyScores(nan, nan, nan, nan, nan, 0)
    fps = lat.size / wall_time_s if wall_time_s else (1.0 / lat.mean() if lat.mean() > 0 else float("inf"))
    ms = lat * 1e3
    return LatencyScores(
        float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()), float(ms.max()), float(fps),
        int(lat.size),
    )


def as_dict(scores: object) -> dict[str, object]:
    """Dataclass scores (or a dict of them) → plain dict for JSON reports."""
    if isinstance(scores, dict):
        return {k: as_dict(v) for k, v in scores.items()}
    return asdict(scores)  # type: ignore[call-overload]
