"""``st4rtrack-eval BAG --out DIR``: run the tracker offline over a bag and write metrics, report and plots
(``evaluation.runner`` / ``evaluation.report``); ``st4rtrack-eval --live BAG --out DIR``: replay the bag into a
running node over DDS and measure latency and drops (``ros.live_eval``).

The choice is made here, above both, so the evaluation package never imports the ROS adapter; the live half imports
it (and rclpy) only when asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.data.bag_format import Topics
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.evaluation.report import compute_metrics, write_report
from st4rtrack_ros.evaluation.runner import RunConfig, protocol_config, run_frames
from st4rtrack_ros.model.checkpoint import CheckpointError
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.settings import SettingsError, load_section
from st4rtrack_ros.tracking.tracker import TrackerConfig

OFFLINE = "Run the tracker offline over a bag and write metrics, report and plots."


def main(argv: list[str] | None = None) -> int:
    """``st4rtrack-eval BAG --out DIR [...]`` or ``st4rtrack-eval --live BAG --out DIR [...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--live" in argv:
        return live_main([a for a in argv if a != "--live"])
    return offline_main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The offline evaluation's parser."""
    ap = argparse.ArgumentParser(prog="st4rtrack-eval", description=OFFLINE,
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


def offline_main(argv: list[str] | None = None) -> int:
    """``st4rtrack-eval BAG --out DIR [...]``."""
    args = build_parser().parse_args(argv)
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


def build_live_parser() -> argparse.ArgumentParser:
    """The live evaluation's parser (``--live``)."""
    from st4rtrack_ros.ros import live_eval

    ap = argparse.ArgumentParser(prog="st4rtrack-eval --live", description=(live_eval.__doc__ or "").split("\n\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for live_metrics.json")
    ap.add_argument("--hz", type=float, default=None, help="input frame rate (default: the bag's timing × --rate)")
    ap.add_argument("--rate", type=float, default=1.0, help="time scale of the bag timing (default 1)")
    ap.add_argument("--duration", type=float, default=None, help="loop the bag (stamps shifted) for this many s")
    ap.add_argument("--start-node", action="store_true", help="start st4rtrack-node here (else one must run)")
    ap.add_argument("--checkpoint", type=Path, help="with --start-node: model.checkpoint")
    ap.add_argument("--device", default=None, help="with --start-node: model.device")
    ap.add_argument("--config", type=Path, default=None, help="with --start-node: parameters file")
    ap.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the environment, "
                    "or a fresh one with --start-node)")
    ap.add_argument("--node-ns", default=live_eval.NODE_NS,
                    help=f"the node's namespace + name (default {live_eval.NODE_NS})")
    ap.add_argument("--best-effort", action="store_true", help="publish images best effort (like a camera driver)")
    ap.add_argument("--depth", action="store_true", help="replay the bag's depth images too, as an RGB-D camera's "
                    "aligned depth (with --start-node the node subscribes them: ros.depth_topic)")
    ap.add_argument("--outputs", nargs="+", default=list(live_eval.OUTPUTS), choices=list(live_eval.OUTPUTS),
                    help="node outputs to subscribe (default: all, as RViz + a consumer would); status is always "
                    "recorded. Unsubscribed visualisation topics are not computed by the node")
    return ap


def live_main(argv: list[str] | None = None) -> int:
    """``st4rtrack-eval --live BAG --out DIR [...]`` (the ``--live`` flag already taken out)."""
    from st4rtrack_ros.ros import conversions as cv
    from st4rtrack_ros.ros import live_eval
    from st4rtrack_ros.ros.env import domain_id_for

    args = build_live_parser().parse_args(argv)
    if args.domain_id is not None:
        domain = args.domain_id
    elif args.start_node:
        domain = domain_id_for()
    else:
        domain = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    args.out.mkdir(parents=True, exist_ok=True)
    node = None
    if args.start_node:
        params: dict[str, Any] = live_eval.node_inputs_for_bag(args.bag, depth=args.depth)
        if args.checkpoint:
            params["model.checkpoint"] = str(args.checkpoint.resolve())
        if args.device:
            params["model.device"] = args.device
        node = live_eval.NodeProcess(params, domain_id=domain, log_dir=args.out / "node", params_file=args.config)
    rec = live_eval.OutputRecorder(domain, outputs=sorted({*args.outputs, "status"}))
    try:
        if node is not None and not rec.wait_for(
                lambda: not node.alive() or "ready:" in node.log(), 120.0):
            print("st4rtrack-eval --live: the node did not start in 120 s", file=sys.stderr)
            return 1
        if node is not None and not node.alive():
            print(f"st4rtrack-eval --live: the node exited:\n{node.log()[-3000:]}", file=sys.stderr)
            return 1
        t0 = time.monotonic()
        sink = live_eval.replay(rec, args.bag, hz=args.hz, rate=args.rate, duration_s=args.duration,
                                reliable=not args.best_effort, depth=args.depth)
        last = sink.order[-1] if sink.order else None
        # Drain: the last frame's output, or 5 s.
        rec.wait_for(lambda: any(cv.ns_from_stamp(m.header.stamp) == last
                                 for _, m in rec.inbox.get(rec.topic("status"))[-5:]), 5.0)
        stats = live_eval.live_stats(sink, rec, time.monotonic() - t0)
        statuses = rec.inbox.get(rec.topic("status"))
        last_status = statuses[-1][1] if statuses else None
    finally:
        rec.close()
        if node is not None:
            node.stop()
    summary = stats.summary()
    if last_status is not None:  # what the node's last status said of scale and adaptation
        summary["node_status"] = {k: getattr(last_status, k) for k in (
            "metric_scale", "adaptation_available", "adaptation_enabled", "weights_version", "adaptation_rounds",
            "adaptation_accepted", "adaptation_rolled_back")}
    summary.update({"bag": str(args.bag), "depth": args.depth, "hz": args.hz, "rate": args.rate,
                    "duration_s": args.duration, "outputs": sorted({*args.outputs, "status"}), "domain_id": domain})
    (args.out / "live_metrics.json").write_text(json.dumps(summary, indent=2))
    np.savetxt(args.out / "latency_ms.txt", stats.latency_ms, fmt="%.2f")
    print(json.dumps(summary, indent=2))
    print(f"[eval --live] wrote {args.out / 'live_metrics.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
