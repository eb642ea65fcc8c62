"""``st4rtrack-real-bench --out DIR``: a checkpoint (the default model unless
``--checkpoint``) on every real camera bag in ``../shared/data/real`` (or ``$ST4R_REAL_DATA``, or ``--data``) and on
held-out synthetic bags of every preset, with the harness's baselines, in one table (``real_benchmark.md`` and
``real_benchmark.json``) and one picture per bag (``<bag>.png``).

Every bag runs twice through the tracker the node runs: ``protocol`` (frame 0 anchors every frame, the WorldTrack
protocol of ``st4rtrack-eval``) and ``online`` (the tracker's sliding window and re-anchoring).

With ground truth (the RGB-D bag, the synthetic bags): depth AbsRel, ATE, tracking APD (Sim(3)) and frame-to-frame
camera rotation error (RPE rotation), each next to its trivial baseline (constant depth, a static camera, the
frame-0 points held still), and the issue's targets checked.

Without ground truth, what can be measured honestly, on every bag:
- pose success: the share of frames where PnP found a pose;
- reprojection residual (model pixels): KLT tracks (``adaptation.pseudo_labels``, from corners of the first frame)
  against the tracker's 3D tracks of the same pixels, projected with the estimated pose and intrinsics; the baseline
  is "nothing moves" (the KLT displacement since frame 0). In frame 0 (identity pose) the residual measures only how
  well the intrinsics in use fit the network's pointmap;
- static-background jitter: frame-to-frame motion of the 3D tracks that KLT finds on the static background (inliers
  of the dominant epipolar geometry), as a fraction of the median scene depth (0 for a perfect tracker);
- scale drift across re-anchoring: per frame, the online run's depth over the protocol run's (one anchor, no chain);
  with ground-truth depth also each run's scale against the truth;
- latency per frame (measured on whatever machine runs it; on a shared CPU, compare only within one run).
"""

# This module runs the benchmark: which bags, both modes, one entry per bag with its ground-truth measures,
# baselines and targets. The runs themselves are ``recorded_runs``, the measures without ground truth ``label_free``,
# the tables and pictures ``real_benchmark_report``.

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from st4rtrack_ros.evaluation.alignment import rebase_to_first_camera
from st4rtrack_ros.evaluation.label_free import label_free, scale_drift
from st4rtrack_ros.evaluation.metrics import as_dict, evaluate_tracks
from st4rtrack_ros.evaluation.real_benchmark_report import bag_picture
from st4rtrack_ros.evaluation.recorded_runs import MODES, run_bag
from st4rtrack_ros.evaluation.report import _finite, compute_metrics
from st4rtrack_ros.evaluation.runner import RunResult
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.tracking.tracker import TrackerConfig

REAL_DATA_ENV = "ST4R_REAL_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTH_PRESETS: tuple[str, ...] = ("easy", "occlusion", "fast", "shift")
SYNTH_SEED = 1000  # held-out scene seeds start here (training uses 10000+, validation 0..n_val-1)
SYNTH_SIZE = (256, 160)


def default_real_dir() -> Path:
    """``$ST4R_REAL_DATA``, else ``../shared/data/real`` beside the repository (where CI lays shared/)."""
    env = os.environ.get(REAL_DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "real"


def find_bags(root: Path) -> list[Path]:
    """The rosbag2 folders directly under ``root`` (sorted by name); empty when ``root`` does not exist."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "metadata.yaml").is_file())


# ------------------------------------------------------------------------------------------------ per bag


def held_still_sim3(run: RunResult) -> dict[str, Any] | None:
    """The model's frame-0 track positions held still, scored with the model's own Sim(3) alignment."""
    if run.gt_tracks is None or run.gt_poses is None:
        return None
    _, gt = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
    still = np.broadcast_to(run.pred_tracks[:1], gt.shape).copy()
    scores = evaluate_tracks(still, gt, valid=np.isfinite(gt).all(-1), dynamic=run.gt_dynamic, alignments=("sim3",))
    return as_dict(scores["sim3"])


def targets(metrics: dict[str, Any], still_sim3: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's targets for real RGB-D, where the ground truth allows them: (value, bar, met)."""
    b = metrics.get("baselines", {})
    out: dict[str, Any] = {}
    if "depth" in metrics and "constant_depth" in b:
        v, bar = metrics["depth"]["abs_rel"], b["constant_depth"]["abs_rel"]
        out["depth_abs_rel_below_constant"] = {"value": v, "bar": bar, "met": _lt(v, bar)}
    if "camera" in metrics and "static_camera" in b:
        v, s = metrics["camera"]["ate"], b["static_camera"]["ate"]
        out["ate_25pct_below_static"] = {"value": v, "bar": 0.75 * s if s is not None else None,
                                         "met": _lt(v, 0.75 * s if s is not None else None)}
        v, s = metrics["camera"]["rpe_rot"], b["static_camera"]["rpe_rot"]
        out["rpe_rot_below_2x_static"] = {"value": v, "bar": 2 * s if s is not None else None,
                                          "met": _lt(v, 2 * s if s is not None else None)}
    if "tracking" in metrics and "static_points" in b:
        bars = [b["static_points"]["apd"]] + ([still_sim3["apd"]] if still_sim3 else [])
        bar = max(x for x in bars if x is not None) if any(x is not None for x in bars) else None
        v = metrics["tracking"]["sim3"]["apd"]
        out["apd_sim3_above_held_still"] = {"value": v, "bar": bar, "met": _lt(bar, v)}
    return out


def _lt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else bool(a < b)


def evaluate_bag(net: St4RTrackNet, bag: Path, kind: str, frames: int, device: torch.device, out: Path | None,
                 modes: tuple[str, ...] = MODES, tracker_cfg: TrackerConfig | None = None,
                 use_camera_info: bool = True) -> dict[str, Any]:
    """Every measure of one bag in each mode (JSON-ready), and its picture ``out/<bag>.png`` when ``out`` is set."""
    entry: dict[str, Any] = {"bag": bag.name, "kind": kind, "path": str(bag)}
    runs: dict[str, RunResult] = {}
    arrays: dict[str, Any] = {}
    for mode in modes:
        t0 = time.perf_counter()
        run, rec = run_bag(net, bag, mode, frames, device, tracker_cfg, use_camera_info)
        runs[mode] = run
        metrics = compute_metrics(run)
        lf = label_free(run, rec)
        arrays[mode] = lf.pop("_arrays")
        still = held_still_sim3(run)
        if still is not None:
            metrics["baselines"]["static_points_sim3"] = still
        entry[mode] = {"metrics": metrics, "label_free": lf, "targets": targets(metrics, still),
                       "focal_model_px": float(run.k_model[0, 0]), "wall_s": time.perf_counter() - t0}
        print(f"[real-bench] {bag.name} {mode}: {len(run.stamps_ns)} frames in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    entry["frames"] = len(next(iter(runs.values())).stamps_ns)
    entry["k_source"] = next(iter(runs.values())).k_source
    if not use_camera_info and entry["k_source"] == "camera_info":
        entry["k_source"] = "weiszfeld (CameraInfo ignored)"
    entry["scale_drift"] = scale_drift(runs)
    if out is not None and "protocol" in runs:
        entry["picture"] = bag_picture(bag.name, runs["protocol"], arrays["protocol"], entry, out / f"{bag.name}.png")
    return _finite(entry)
