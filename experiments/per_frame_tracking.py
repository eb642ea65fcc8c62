#!/usr/bin/env python3
"""Where along the sequence a checkpoint's error sits: per-frame EPE, head 1's per-frame scale, per-frame depth.

Protocol mode (frame 0 anchors the run) by default, the st4rtrack-eval harness. For each checkpoint: the global
median scale alignment of the metric, the EPE of frames 0, 8, 16, 32, 48 and the last, and each frame's own median
scale relative to frame 0's (1.0 everywhere = head 1's pairs agree on scale; a trend = the pairs drift in scale with
the gap); then depth AbsRel per frame (per-frame median scaling, as the metric), next to a constant depth map's.
Used by docs/domain_adaptation.md to locate what domain adaptation changes, and by docs/default_model.md to locate
the depth error (it grows with the gap to the anchor).

  .venv/bin/python experiments/per_frame_tracking.py out/domain_long/bags/shift_1000_64_256x160 BASE DOMAIN
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapt_sweep import replay

from st4rtrack_ros.evaluation.alignment import median_scale, rebase_to_first_camera
from st4rtrack_ros.evaluation.metrics import depth_frame_scores


def per_frame(bag: Path, ckpt: Path, frames: int, mode: str = "protocol") -> dict:
    run, _, _ = replay(ckpt, bag, None, mode, frames, depth=False)
    _, gt = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
    pred = run.pred_tracks
    valid = np.isfinite(gt).all(-1) & np.isfinite(pred).all(-1)
    s = median_scale(pred[valid], gt[valid])
    err = np.linalg.norm(pred * s - gt, axis=-1)
    epe = [float(err[t][valid[t]].mean()) for t in range(len(err))]
    scale = [float(median_scale(pred[t][valid[t]], gt[t][valid[t]])) for t in range(len(err))]
    abs_rel = [depth_frame_scores(p, g)[0] for p, g in zip(run.pred_depth, run.gt_depth, strict=True)]
    const = [depth_frame_scores(np.ones_like(g), g)[0] for g in run.gt_depth]
    return {"global_scale": float(s), "epe": float(err[valid].mean()), "epe_per_frame": epe,
            "scale_vs_frame0": [x / scale[0] for x in scale], "abs_rel_per_frame": abs_rel,
            "abs_rel_constant_per_frame": const}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", type=Path)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--mode", choices=("protocol", "online"), default="protocol")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = {}
    print("| checkpoint | EPE | EPE at frames 0 / 8 / 16 / 32 / 48 / last | scale vs frame 0 at 8 / … / last | "
          "AbsRel | AbsRel at 0 / 8 / … / last | AbsRel, constant depth |")
    print("|---|---|---|---|---|---|---|")
    for ckpt in args.checkpoints:
        r = results[str(ckpt)] = per_frame(args.bag, ckpt, args.frames, args.mode)
        picks = [0, 8, 16, 32, 48, len(r["epe_per_frame"]) - 1]
        epe = " / ".join(f"{r['epe_per_frame'][i]:.3f}" for i in picks)
        scale = " / ".join(f"{r['scale_vs_frame0'][i]:.3f}" for i in picks[1:])
        depth = " / ".join(f"{r['abs_rel_per_frame'][i]:.3f}" for i in picks)
        print(f"| {ckpt.name} | {r['epe']:.3f} | {epe} | {scale} | {np.nanmean(r['abs_rel_per_frame']):.3f} | "
              f"{depth} | {np.nanmean(r['abs_rel_constant_per_frame']):.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
