"""``st4rtrack-eval BAG --out DIR``: run the tracker offline over a bag and write metrics, report and plots."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from st4rtrack_ros.adaptation.worker import AdaptationConfig
from st4rtrack_ros.data.bag_format import Topics
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.evaluation.report import compute_metrics, write_report
from st4rtrack_ros.evaluation.runner import RunConfig, protocol_config, run_frames
from st4rtrack_ros.model.checkpoint import CheckpointError
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.settings import SettingsError, load_section
from st4rtrack_ros.tracking.tracker import TrackerConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="st4rtrack-eval", description=__doc__,
                                 epilog="st4rtrack-eval --live BAG --out DIR [--hz HZ] [--start-node ...]: replay the "
                                 "bag into a running node over DDS and measure latency and drops (--live --help).")
    ap.add_argument("bag", type=Path, help="rosbag2 folder (mcap or sqlite3)")
    ap.add_argument("--out", type=Path, required=True, help="output folder for metrics.json, report.md, plots")
    ap.add_argument("--config", type=Path, help="YAML parameters file (config/tracker.yaml schema)")
    ap.add_argument("--checkpoint", type=Path, help="model weights (default: the embedded default model)")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--frames", type=int, default=None, help="frames to evaluate (default 64, 0 = all)")
    ap.add_argument("--image-topic", default=None, help="camera topic (default: the bag-format topic)")
    ap.add_argument("--adapt", action="store_true",
                    help="run St4RTrack+ test-time adaptation (rounds run in step, reproducibly)")
    ap.add_argument("--depth-labels", action="store_true",
                    help="hand the bag's depth to the tracker as an RGB-D robot's aligned depth (adaptation labels, "
                         "metric scale)")
    ap.add_argument("--mode", choices=("protocol", "online"), default=None,
                    help="protocol: frame 0 anchors the whole run (WorldTrack); online: the tracker's sliding window")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --live is dispatched by st4rtrack_ros.cli, above the ROS adapter
    try:
        section = load_section(args.config, "evaluation") if args.config else {}
        model_section = load_section(args.config, "model") if args.config else {}
        tracker_cfg = TrackerConfig.from_dict(load_section(args.config, "tracking") if args.config else {})
        adapt_cfg = AdaptationConfig.from_dict(load_section(args.config, "adaptation") if args.config else {})
    except (SettingsError, ValueError, TypeError) as e:
        print(f"st4rtrack-eval: {e}", file=sys.stderr)
        return 2
    cfg = RunConfig(max_frames=args.frames if args.frames is not None else int(section.get("max_frames", 64)),
                    mode=args.mode or section.get("mode", "protocol"), depth_to_tracker=args.depth_labels)
    if cfg.mode == "protocol":
        tracker_cfg = protocol_config(tracker_cfg)
    spec = TrackerSpec(checkpoint=str(args.checkpoint or model_section.get("checkpoint") or ""),
                       device=args.device or model_section.get("device") or "",
                       fit=model_section.get("fit", tracker_cfg.fit), cpu_mode=model_section.get("cpu_mode", ""),
                       tracking=tracker_cfg,
                       adaptation=dataclasses.replace(adapt_cfg, enabled=True, synchronous=True) if args.adapt
                       else None)
    try:
        ckpt, device = spec.resolved_checkpoint(), spec.resolved_device()
        tracker = build_tracker(spec)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"st4rtrack-eval: {e}", file=sys.stderr)
        return 2
    net, worker = tracker.engine.net, tracker.adaptation
    topics = Topics(image=args.image_topic) if args.image_topic else None
    with BenchmarkBagReader(args.bag, topics=topics) as reader:
        print(f"[eval] {args.bag} ({reader.image_topic}) with {ckpt} on {device}, mode {cfg.mode}", file=sys.stderr,
              flush=True)
        run = run_frames(reader.frames(), tracker, cfg)
    metrics = compute_metrics(run)
    meta = {"bag": str(args.bag), "checkpoint": str(ckpt), "device": str(device),
            "model": f"{net.config.img_size[0]}×{net.config.img_size[1]}, enc {net.config.enc_depth}×"
                     f"{net.config.enc_embed_dim}, dec {net.config.dec_depth}×{net.config.dec_embed_dim}",
            "adaptation": worker.status() if worker else "off", "mode": cfg.mode,
            "depth_labels": cfg.depth_to_tracker,
            "anchor": "fixed: frame 0" if cfg.mode == "protocol" else
            f"sliding window of {tracker_cfg.window_size} frames"}
    report = write_report(run, metrics, args.out, meta)
    print(f"[eval] report: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
