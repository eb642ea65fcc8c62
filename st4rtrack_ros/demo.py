"""`make demo`: a synthetic bag → the tracker node (a separate process) over DDS → recorded outputs → a report.

Steps: render a synthetic bag once (cached under out/demo/cache/), start ``st4rtrack-node``, replay the bag's camera
topics into it with the recorded timing (st4rtrack-play's timing loop), record what the node publishes, and turn the
recording plus the bag's ground truth into the evaluation report (evaluation/report.py: camera trajectory vs ground
truth, latency, a top view of the reconstruction with the 3D tracks). Tracking-accuracy metrics need the protocol's
ground-truth queries, which a live node does not take: ``st4rtrack-eval BAG`` scores those offline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from st4rtrack_ros.settings import default_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "out" / "demo"
CHECKPOINT_ENV = "ST4R_DEMO_CHECKPOINT"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m st4rtrack_ros.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help=f"model weights (default: ${CHECKPOINT_ENV}, else the embedded default model)")
    ap.add_argument("--device", default="", help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--preset", default="easy")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="256x160")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.3,
                    help="replay speed (1 = the bag's own 10 Hz; the default 0.3 ≈ what a 2-core CPU processes)")
    return ap


def resolve_checkpoint(arg: Path | None) -> Path:
    """--checkpoint, $ST4R_DEMO_CHECKPOINT, or the embedded default model; a clear error when none exists."""
    path = arg or (Path(os.environ[CHECKPOINT_ENV]) if os.environ.get(CHECKPOINT_ENV) else default_checkpoint())
    if not path.exists():
        raise SystemExit(
            f"demo: no model at {path}. The embedded default model (st4rtrack_ros/weights/default.safetensors) is "
            f"not installed yet; pass --checkpoint PATH or set {CHECKPOINT_ENV}=PATH (e.g. a tiny test model: "
            "python -c \"from st4rtrack_ros.model.checkpoint import save_checkpoint; from st4rtrack_ros.model."
            "network import St4RTrackNet; from st4rtrack_ros.model.config import preset; "
            "save_checkpoint(St4RTrackNet(preset('tiny_128')), 'out/tiny.safetensors')\").")
    return path.resolve()


def cached_bag(cache: Path, preset: str, frames: int, size: str, seed: int) -> Path:
    """Render the bag once; later runs reuse it."""
    from st4rtrack_ros.cli.synth import main as synth_main

    bag = cache / f"{preset}_{frames}f_{size}_s{seed}"
    if (bag / "metadata.yaml").is_file():
        print(f"[demo] bag (cached): {bag}", file=sys.stderr)
        return bag
    cache.mkdir(parents=True, exist_ok=True)
    tmp = bag.with_name(bag.name + ".partial")
    rc = synth_main([str(tmp), "--preset", preset, "--frames", str(frames), "--size", size, "--seed", str(seed),
                     "--overwrite", "-q"])
    if rc != 0:
        raise SystemExit(f"demo: st4rtrack-synth failed ({rc})")
    tmp.rename(bag)
    print(f"[demo] bag: {bag}", file=sys.stderr)
    return bag


def _optical_pose(msg: Any) -> np.ndarray:
    """PoseStamped in the REP 103 world → 4×4 camera → optical world (the tracker's own frame, as the GT)."""
    from scipy.spatial.transform import Rotation

    from st4rtrack_ros.ros.conversions import R_REP103_FROM_OPTICAL

    p, q = msg.pose.position, msg.pose.orientation
    t = np.eye(4)
    t[:3, :3] = R_REP103_FROM_OPTICAL.T @ Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    t[:3, 3] = R_REP103_FROM_OPTICAL.T @ np.array([p.x, p.y, p.z])
    return t


def _cloud(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    from st4rtrack_ros.data.messages import cloud_to_structured
    from st4rtrack_ros.ros.conversions import R_REP103_FROM_OPTICAL

    c = cloud_to_structured(msg)
    xyz = np.stack([c["x"], c["y"], c["z"]], 1).astype(np.float64) @ R_REP103_FROM_OPTICAL  # REP 103 → optical
    rgb = c["rgb"].astype("<f4").view(np.uint32)
    cols = np.stack([(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255], 1).astype(np.uint8)
    return xyz, cols


def build_run(rec: Any, sink: Any, bag: Path, checkpoint: Path, wall_s: float) -> Any:
    """A RunResult from the recording (processed frames only) and the bag's ground truth, matched by stamp."""
    from st4rtrack_ros.data.bag_io import BenchmarkBagReader
    from st4rtrack_ros.evaluation.runner import RunResult
    from st4rtrack_ros.model.checkpoint import load_checkpoint
    from st4rtrack_ros.model.preprocess import plan_mapping
    from st4rtrack_ros.ros.conversions import R_REP103_FROM_OPTICAL, ns_from_stamp

    def by_stamp(out: str) -> dict[int, tuple[float, Any]]:
        d: dict[int, tuple[float, Any]] = {}
        for t, m in rec.inbox.get(rec.topic(out)):
            d.setdefault(ns_from_stamp(m.header.stamp), (t, m))
        return d

    status, poses, tracks, points = by_stamp("status"), by_stamp("camera_pose"), by_stamp("tracks"), by_stamp("points")
    with BenchmarkBagReader(bag) as reader:
        frames = {f.stamp_ns: f for f in reader.frames()}
        has_info = reader.has_camera_info
    stamps = [s for s in sink.order if s in status and s in poses and s in frames]
    if not stamps:
        raise SystemExit("demo: the node published nothing for the replayed frames (see the node log)")
    ids = sorted({t.id for s in stamps if s in tracks for t in tracks[s][1].tracks})
    col = {i: n for n, i in enumerate(ids)}
    pred_tracks = np.full((len(stamps), len(ids), 3), np.nan)
    conf = np.zeros((len(stamps), len(ids)))
    for k, s in enumerate(stamps):
        if k:
            pred_tracks[k], conf[k] = pred_tracks[k - 1], conf[k - 1]  # an ended track holds its last position
        for t in tracks.get(s, (0, None))[1].tracks if s in tracks else []:
            pred_tracks[k, col[t.id]] = R_REP103_FROM_OPTICAL.T @ np.array([t.position.x, t.position.y, t.position.z])
            conf[k, col[t.id]] = t.confidence
    clouds = [_cloud(points[s][1]) for s in stamps[::6] if s in points]
    maps = rec.inbox.get(rec.topic("map"))
    if maps:
        clouds.append(_cloud(maps[-1][1]))
    first = frames[stamps[0]]
    net = load_checkpoint(checkpoint, "cpu")
    mapping = plan_mapping((first.width, first.height), net.config.img_size, "crop")
    gt = [frames[s].gt_pose for s in stamps]
    return RunResult(
        stamps_ns=np.array(stamps), latency_s=np.array([status[s][0] - sink.sent[s] for s in stamps]),
        wall_s=wall_s, k_model=np.eye(3), k_source="camera_info" if has_info else "weiszfeld",
        pred_poses=np.stack([_optical_pose(poses[s][1]) for s in stamps]), pose_ok=np.ones(len(stamps), bool),
        pred_depth=[None] * len(stamps), gt_depth=[None] * len(stamps),
        gt_poses=np.stack(gt) if all(g is not None for g in gt) else None,
        query_ids=np.array(ids), query_uv=np.zeros((len(ids), 2)), pred_tracks=pred_tracks, track_conf=conf,
        gt_tracks=None, gt_visible=None, gt_dynamic=None, clouds=clouds, mapping=mapping,
        missing=["tracks (live node: own queries)", "depth (not published)"],
    )


def main(argv: list[str] | None = None) -> int:
    from st4rtrack_ros.evaluation.report import compute_metrics, write_report
    from st4rtrack_ros.ros.env import domain_id_for
    from st4rtrack_ros.ros.live_eval import NodeProcess, OutputRecorder, live_stats, replay

    args = build_parser().parse_args(argv)
    t_start = time.monotonic()
    ckpt = resolve_checkpoint(args.checkpoint)
    out: Path = args.out
    bag = cached_bag(out / "cache", args.preset, args.frames, args.size, args.seed)
    domain = domain_id_for()
    run_dir = out / "run"
    params: dict[str, Any] = {"model.checkpoint": str(ckpt), "ros.map_period_s": 0.5}
    if args.device:
        params["model.device"] = args.device
    print(f"[demo] starting st4rtrack-node (ROS_DOMAIN_ID={domain}, log {run_dir / 'node' / 'node.log'})",
          file=sys.stderr)
    node = NodeProcess(params, domain_id=domain, log_dir=run_dir / "node")
    rec = OutputRecorder(domain, name="st4rtrack_demo_recorder")
    try:
        if not rec.wait_for(lambda: not node.alive() or "ready:" in node.log(), 120.0) or not node.alive():
            raise SystemExit(f"demo: the node did not start:\n{node.log()[-3000:]}")
        print(f"[demo] replaying {bag.name} into the node over DDS ...", file=sys.stderr)
        t0 = time.monotonic()
        sink = replay(rec, bag, rate=args.rate)
        last = sink.order[-1]
        rec.wait_for(lambda: any(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == last
                                 for _, m in rec.inbox.get(rec.topic("status"))[-3:]), 10.0)
        wall = time.monotonic() - t0
        stats = live_stats(sink, rec, wall)
        run = build_run(rec, sink, bag, ckpt, wall)
    finally:
        rec.close()
        node.stop()
    metrics = compute_metrics(run)
    metrics["live"] = stats.summary()
    meta = {"bag": str(bag), "checkpoint": str(ckpt), "mode": "live: st4rtrack-node over DDS (separate process)",
            "frames sent / processed / dropped": f"{stats.frames_sent} / {stats.frames_out} / {stats.dropped}",
            "end-to-end latency p50 / p95 (ms)":
                f"{metrics['live']['latency_p50_ms']:.0f} / {metrics['live']['latency_p95_ms']:.0f}",
            "note": "tracks are the node's own queries; GT-query tracking metrics: st4rtrack-eval BAG (offline)"}
    report = write_report(run, metrics, out / "report", meta)
    print(f"[demo] done in {time.monotonic() - t_start:.0f} s", file=sys.stderr)
    print(f"[demo] report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
