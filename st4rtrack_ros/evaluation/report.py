"""Metrics of a run (facts §4 protocol), written as metrics.json, a Markdown report and PNG plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from st4rtrack_ros.evaluation.alignment import rebase_to_first_camera
from st4rtrack_ros.evaluation.metrics import (
    align_trajectory,
    as_dict,
    evaluate_depth,
    evaluate_poses,
    evaluate_tracks,
    latency_summary,
)
from st4rtrack_ros.evaluation.runner import RunResult


def compute_metrics(run: RunResult) -> dict[str, Any]:
    """Every metric the ground truth allows; ``skipped`` names the others and why."""
    skipped: dict[str, str] = {}
    res: dict[str, Any] = {"frames": len(run.stamps_ns), "k_source": run.k_source,
                           "pose_success_rate": float(run.pose_ok.mean())}
    gt_poses_c0 = None
    if run.gt_poses is not None:
        gt_poses_c0, _ = rebase_to_first_camera(run.gt_poses)
        res["camera"] = as_dict(evaluate_poses(run.pred_poses, gt_poses_c0, alignment="sim3"))
    else:
        skipped["camera"] = "no /gt/camera_pose in the bag"
    if run.gt_tracks is not None and run.gt_poses is not None:
        _, gt_c0 = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
        valid = np.isfinite(gt_c0).all(-1)
        scores = evaluate_tracks(run.pred_tracks, gt_c0, valid=valid, dynamic=run.gt_dynamic)
        res["tracking"] = {k: as_dict(v) for k, v in scores.items()}
        res["tracking"]["n_queries"] = len(run.query_ids)
    else:
        skipped["tracking"] = ("no ground-truth tracks visible in the anchor" if run.gt_poses is not None
                               else "needs /gt/tracks and /gt/camera_pose")
    if any(d is not None for d in run.gt_depth):
        pairs = [(p, g) for p, g in zip(run.pred_depth, run.gt_depth, strict=True) if g is not None]
        res["depth"] = as_dict(evaluate_depth([p for p, _ in pairs], [g for _, g in pairs]))
    else:
        skipped["depth"] = "no /gt/depth in the bag"
    res["runtime"] = as_dict(latency_summary(run.latency_s, run.wall_s))
    res["baselines"] = baselines(run)
    res["skipped"] = skipped
    return _finite(res)


def baselines(run: RunResult) -> dict[str, Any]:
    """Trivial predictions scored by the same metrics, so a model's numbers have a floor to beat:
    a constant depth map, a camera that never moves, and tracked points that stay where the anchor saw them."""
    out: dict[str, Any] = {}
    pairs = [g for g in run.gt_depth if g is not None]
    if pairs:
        out["constant_depth"] = as_dict(evaluate_depth([np.ones_like(g) for g in pairs], pairs))
    if run.gt_poses is not None:
        gt_c0, _ = rebase_to_first_camera(run.gt_poses)
        out["static_camera"] = as_dict(evaluate_poses(np.tile(np.eye(4), (len(gt_c0), 1, 1)), gt_c0, "sim3"))
        if run.gt_tracks is not None:
            _, tr = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
            valid = np.isfinite(tr).all(-1)
            # The model's own frame-0 prediction held still: its depth, no tracking.
            still = np.broadcast_to(run.pred_tracks[:1], tr.shape).copy()
            s = evaluate_tracks(still, tr, valid=valid, dynamic=run.gt_dynamic, alignments=("median",))
            out["static_points"] = as_dict(s["median"])
            # The true frame-0 positions held still: perfect depth, no tracking (a stronger reference).
            still_gt = np.broadcast_to(tr[:1], tr.shape).copy()
            s = evaluate_tracks(still_gt, tr, valid=valid, dynamic=run.gt_dynamic, alignments=("median",))
            out["static_true_points"] = as_dict(s["median"])
    return out


def mean_sd(values: list[float | None]) -> str:
    """"mean ± sample sd" of the non-missing values, for result tables ("–" when there are none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def _finite(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _plots(run: RunResult, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    # 1. Trajectory, top view (x right, z forward in the anchor camera), Sim(3)-aligned to GT when present.
    fig, ax = plt.subplots(figsize=(5, 5))
    pred = run.pred_poses
    if run.gt_poses is not None:
        gt, _ = rebase_to_first_camera(run.gt_poses)
        pred, _ = align_trajectory(pred, gt, "sim3")
        ax.plot(gt[:, 0, 3], gt[:, 2, 3], "k-", label="ground truth")
    ax.plot(pred[:, 0, 3], pred[:, 2, 3], "r.-", label="predicted (Sim(3)-aligned)" if run.gt_poses is not None
            else "predicted (model units)")
    ax.set_xlabel("x (right)")
    ax.set_ylabel("z (forward)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend()
    ax.set_title("camera trajectory, top view")
    fig.tight_layout()
    fig.savefig(out / "trajectory.png", dpi=100)
    plt.close(fig)
    names.append("trajectory.png")

    # 2. Errors over time.
    fig, ax = plt.subplots(figsize=(7, 3.5))
    t = np.arange(len(run.stamps_ns))
    ax.plot(t, run.latency_s * 1e3, label="latency (ms)")
    if run.gt_tracks is not None and run.gt_poses is not None:
        _, gt_c0 = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
        valid = np.isfinite(gt_c0).all(-1)
        s = np.median(np.linalg.norm(gt_c0[valid], axis=-1)) / max(np.median(np.linalg.norm(
            run.pred_tracks[valid], axis=-1)), 1e-9)
        err = np.where(valid, np.linalg.norm(run.pred_tracks * s - np.nan_to_num(gt_c0), axis=-1), np.nan)
        ax2 = ax.twinx()
        ax2.plot(t, np.nanmean(err, axis=1) * 100, "g-", label="track EPE (cm, median scale)")
        ax2.set_ylabel("EPE (cm)")
        ax2.legend(loc="upper right")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left")
    ax.set_title("per-frame latency and tracking error")
    fig.tight_layout()
    fig.savefig(out / "errors_over_time.png", dpi=100)
    plt.close(fig)
    names.append("errors_over_time.png")

    # 3. Reconstruction (coloured points of every k-th frame) with 3D tracks, top view.
    fig, ax = plt.subplots(figsize=(6, 6))
    for pts, col in run.clouds:
        sel = slice(None, None, max(1, len(pts) // 4000))
        ax.scatter(pts[sel, 0], pts[sel, 2], c=col[sel] / 255.0, s=1, linewidths=0)
    n = run.pred_tracks.shape[1]
    for j in range(0, n, max(1, n // 60)):
        ax.plot(run.pred_tracks[:, j, 0], run.pred_tracks[:, j, 2], "-", lw=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (right)")
    ax.set_ylabel("z (forward)")
    ax.set_title("reconstruction + 3D tracks (top view, model units)")
    fig.tight_layout()
    fig.savefig(out / "reconstruction_tracks.png", dpi=100)
    plt.close(fig)
    names.append("reconstruction_tracks.png")
    return names


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def write_report(run: RunResult, metrics: dict[str, Any], out: Path, meta: dict[str, Any]) -> Path:
    """metrics.json, report.md and the plots into ``out``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, "meta": meta}, indent=2))
    pics = _plots(run, out)
    lines = ["# st4rtrack_ros evaluation", ""]
    lines += [f"- {k}: `{v}`" for k, v in meta.items()]
    lines += [f"- frames: {metrics['frames']}, K from {metrics['k_source']}, PnP success "
              f"{100 * metrics['pose_success_rate']:.0f} %", ""]
    if "tracking" in metrics:
        lines += ["## Tracking (world = camera of frame 0)", "",
                  "| alignment | APD | EPE (m) | APD dynamic | EPE dynamic (m) |", "|---|---|---|---|---|"]
        for name, s in metrics["tracking"].items():
            if isinstance(s, dict):
                lines.append(f"| {name} | {_fmt(s['apd'])} | {_fmt(s['epe'])} | {_fmt(s['apd_dynamic'])} | "
                             f"{_fmt(s['epe_dynamic'])} |")
        lines.append("")
    if "depth" in metrics:
        d = metrics["depth"]
        lines += ["## Depth (per-frame median scaling)", "", f"AbsRel {_fmt(d['abs_rel'])}, δ<1.25 "
                  f"{_fmt(d['delta_1_25'])} % over {d['n_frames']} frames", ""]
    if "camera" in metrics:
        c = metrics["camera"]
        lines += ["## Camera (Sim(3)-aligned)", "", f"ATE {_fmt(c['ate'])} m, RPE translation "
                  f"{_fmt(c['rpe_trans'])} m, RPE rotation {_fmt(c['rpe_rot'])}°", ""]
    b = metrics.get("baselines", {})
    if b:
        lines += ["## Baselines (same harness)", "", "| baseline | metric | value |", "|---|---|---|"]
        if "constant_depth" in b:
            lines.append(f"| constant depth | AbsRel | {_fmt(b['constant_depth']['abs_rel'])} |")
        if "static_camera" in b:
            lines.append(f"| camera never moves | ATE (m) | {_fmt(b['static_camera']['ate'])} |")
        for key, name in (("static_points", "points stay where the model saw them in frame 0"),
                          ("static_true_points", "true frame-0 points that never move")):
            if key in b:
                lines.append(f"| {name} | EPE (m) / APD | {_fmt(b[key]['epe'])} / {_fmt(b[key]['apd'])} |")
        lines.append("")
    r = metrics["runtime"]
    lines += ["## Runtime", "", f"latency p50 {_fmt(r['p50_ms'])} ms, p95 {_fmt(r['p95_ms'])} ms, "
              f"{_fmt(r['fps'])} frames/s", ""]
    if metrics["skipped"]:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in metrics["skipped"].items()] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in pics]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
