"""Benchmark: camera (K, PnP poses) + St4RTrack+ losses, forward and backward, for one adaptation window.

Default workload = the issue's: 8 frames at 512×288, 1,024 tracks. Inputs are the synthetic window of
``st4rtrack_ros.adaptation.synthetic`` with noisy pointmaps, random confidences and 30 % corrupted tracks, so PnP
RANSAC does real work. Needs only torch, numpy, opencv (and this package).

    python benchmarks/bench_losses.py --device cpu [--json results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without installing

from st4rtrack_ros.adaptation.losses import LossConfig, PseudoLabels, WindowPrediction, compute_losses
from st4rtrack_ros.adaptation.synthetic import corrupt_tracks, make_scene
from st4rtrack_ros.geometry.intrinsics import intrinsics_from_pointmap
from st4rtrack_ros.geometry.pose import PoseConfig, estimate_poses


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> tuple[list[float], object]:
    """Run ``fn`` warmup + repeats times; wall-clock milliseconds of the timed runs and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return times, out


def main() -> None:
    """Parse arguments, time each stage, print a Markdown table, optionally append a JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--height", type=int, default=288)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--tracks", type=int, default=1024)
    ap.add_argument("--max-points", type=int, default=2048, help="PnP subset per frame")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line with the results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    scene = make_scene(args.frames, args.height, args.width, args.tracks, seed=0)
    tracks, _ = corrupt_tracks(scene, frac=0.3, seed=0)
    g = torch.Generator().manual_seed(0)
    shape = scene.track_pts.shape
    track = (scene.track_pts + 0.01 * torch.randn(shape, generator=g)).to(dev)
    recon = (scene.recon_pts + 0.01 * torch.randn(shape, generator=g)).to(dev)
    conf1 = (1 + torch.rand(shape[:3], generator=g) * 5).to(dev)
    conf2 = (1 + torch.rand(shape[:3], generator=g) * 5).to(dev)
    labels = PseudoLabels(scene.query_uv.to(dev), tracks.to(dev), None, (scene.depth * 2.0).to(dev))
    cfg = LossConfig.plus()
    pcfg = PoseConfig(max_points=args.max_points)

    k = intrinsics_from_pointmap(track[0])
    t_k, _ = _timed(lambda: intrinsics_from_pointmap(track[0]), dev, args.repeats, args.warmup)
    t_pose, est = _timed(lambda: estimate_poses(recon, conf2, k, pcfg), dev, args.repeats, args.warmup)
    poses = est.t_world_cam.detach()

    def losses_fwd():
        return compute_losses(WindowPrediction(track, recon, conf1, conf2), labels, k, poses, cfg).total

    t_loss, _ = _timed(losses_fwd, dev, args.repeats, args.warmup)

    def full_step():
        tr = track.clone().requires_grad_(True)
        rc = recon.clone().requires_grad_(True)
        c1 = conf1.clone().requires_grad_(True)
        c2 = conf2.clone().requires_grad_(True)
        kk = intrinsics_from_pointmap(tr[0])
        e = estimate_poses(rc, c2, kk, pcfg)
        out = compute_losses(WindowPrediction(tr, rc, c1, c2), labels, kk, e.t_world_cam, cfg, frame_valid=e.success)
        out.total.backward()
        return out.total.detach()

    t_full, total = _timed(full_step, dev, args.repeats, args.warmup)

    rows = {
        "K (Weiszfeld, 10 it)": t_k,
        "poses (PnP-RANSAC + GN), fwd": t_pose,
        "losses (traj+depth+align, St4RTrack+), fwd": t_loss,
        "K + poses + losses, fwd + bwd": t_full,
    }
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"\nwindow {args.frames}×{args.height}×{args.width}, {args.tracks} tracks, PnP ≤ {args.max_points} pts/frame, "
        f"device {args.device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.repeats} runs\n"
    )
    print("| stage | median ms | min ms | max ms |\n|---|---|---|---|")
    for stage, ts in rows.items():
        print(f"| {stage} | {statistics.median(ts):.1f} | {min(ts):.1f} | {max(ts):.1f} |")
    print(f"\n(pose success {est.success.float().mean().item():.2f}, total loss {total.item():.4f})")
    if args.json:
        rec = {
            "bench": "losses",
            "device": args.device,
            "device_name": name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "tracks": args.tracks,
            "max_points": args.max_points,
            "median_ms": {s: statistics.median(ts) for s, ts in rows.items()},
        }
        with args.json.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
