#!/usr/bin/env python3
"""Long-run behaviour of the OnlineTracker: memory stays flat and the world frame does not jump at re-anchoring.

Plays a synthetic sequence forward and backward (ping-pong, stamps always increasing) for ``--frames`` frames and
reports process RSS over time, re-anchor count, and the camera position error against ground truth, split into
re-anchor frames and the frames just before them (a jump would show as a step up at re-anchor frames).

``--engine oracle`` (default) answers with exact pointmaps, isolating the tracker's own drift and memory;
``--engine model --checkpoint PATH`` runs a network (scale-free: errors after a Sim(3) fit of the trajectory).

  .venv/bin/python benchmarks/bench_tracker.py --frames 2000 --json results/benchmarks/bench_tracker.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.metrics import align_trajectory
from st4rtrack_ros.evaluation.oracle import OracleEngine
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--unique", type=int, default=120, help="distinct rendered frames (played ping-pong)")
    ap.add_argument("--size", default="128x80")
    ap.add_argument("--engine", choices=("oracle", "model"), default="oracle")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    seq = make_sequence("easy", args.unique, seed=0, width=w, height=h, n_tracks=16, n_object_tracks=4)
    frames = list(seq.frames())
    tcfg = TrackerConfig(window_size=args.window, map_every=5)
    if args.engine == "oracle":
        tracker = OnlineTracker(OracleEngine(seq, [f.rgb for f in frames]), tcfg)  # type: ignore[arg-type]
    else:
        from st4rtrack_ros.model.checkpoint import load_checkpoint
        from st4rtrack_ros.pipeline import TrackerSpec, build_tracker

        # the network at the sequence's size; the engine's fastest options for its device
        tracker = build_tracker(TrackerSpec(tracking=tcfg), net=load_checkpoint(args.checkpoint, image_size=(w, h)))
    period = 2 * (len(frames) - 1)
    dt = frames[1].stamp_ns - frames[0].stamp_ns
    rss, gt_pos, pred_pos, reanchor, lat = [], [], [], [], []
    t0 = time.perf_counter()
    for i in range(args.frames):
        j = i % period
        f = frames[j if j < len(frames) else period - j]
        res = tracker.step(FrameInput(frames[0].stamp_ns + i * dt, f.rgb, f.k, f.depth))
        lat.append(res.timings_ms["total"])
        gt_pos.append((np.linalg.inv(frames[0].pose) @ f.pose)[:3, 3])
        pred_pos.append(res.pose_world_cam[:3, 3])
        reanchor.append(res.reanchored)
        if i % 100 == 0 or i == args.frames - 1:
            rss.append((i, rss_mib()))
            print(f"[bench] frame {i}: RSS {rss[-1][1]:.0f} MiB, map {len(tracker.map.points)} pts, "
                  f"{sum(reanchor)} re-anchors, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    gt_pos, pred_pos = np.array(gt_pos), np.array(pred_pos)
    if args.engine == "model":
        poses = np.tile(np.eye(4), (len(pred_pos), 1, 1))
        poses[:, :3, 3] = pred_pos
        gtp = poses.copy()
        gtp[:, :3, 3] = gt_pos
        pred_pos = align_trajectory(poses, gtp, "sim3")[0][:, :3, 3]
    err = np.linalg.norm(pred_pos - gt_pos, axis=1)
    ra = np.flatnonzero(np.array(reanchor))
    ra = ra[ra > 0]
    after_warmup = [r for i, r in rss if i >= 200] or [rss[-1][1]]
    out = {
        "engine": args.engine, "frames": args.frames, "size": args.size, "window": args.window,
        "reanchors": len(ra), "rss_mib": rss, "rss_growth_after_200_frames_mib": after_warmup[-1] - after_warmup[0],
        "pos_err_reanchor_mean": float(err[ra].mean()), "pos_err_before_reanchor_mean": float(err[ra - 1].mean()),
        "pos_err_step_at_reanchor_max": float(np.max(err[ra] - err[ra - 1])), "pos_err_final": float(err[-1]),
        "pos_err_max": float(err.max()), "latency_ms_p50": float(np.median(lat)),
        "latency_ms_p95": float(np.percentile(lat, 95)),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
