#!/usr/bin/env python3
"""Soak test: replay a synthetic bag in a loop through the tracker node for many frames; resources must stay flat.

The node (:class:`~st4rtrack_ros.ros.node.TrackerNode`, built from a checkpoint exactly as ``st4rtrack-node`` builds
it, background adaptation on by default) runs in this process in its own rclpy context, spun by the executor that
``st4rtrack-node`` uses (``ros.node.node_executor``), so this process's RSS, Python object count
(``len(gc.get_objects())``) and thread count are the node's. A driver node in a second context publishes the bag's
camera topics over DDS (raw CDR) closed-loop — the next frame goes out as soon as the node's ``~/status`` for the
previous one arrives, i.e. at the fastest rate the CPU allows, nothing dropped in the one-frame slot — and
subscribes to every output (so points, markers, map and path are built, as with RViz attached) without keeping them.
Every pass of the bag goes back in time, so the tracker resets once per pass (expected, counted).

Why: a leak in any per-frame path (tracker, map, conversions, publishers, adaptation rounds, logging) shows as a
slope over thousands of frames, not in a unit test. Samples are taken every ``--every`` frames; the check compares
the sample at ``--warmup`` frames with the last one (bounded buffers — latency window, path, track history,
adaptation round history — fill during warm-up). After the run the node is shut down and no thread it started
may remain.

Exit status 0 when every bound holds, 1 when one does not (the JSON says which), 2 on a set-up error.

  nice -n 10 .venv/bin/python benchmarks/soak.py --frames 20000 --json out/soak/soak.json   # the full soak
  .venv/bin/python benchmarks/soak.py --frames 400 --warmup 150 --every 50                  # quick (the CI test)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NODE_NS = "/st4rtrack"


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def os_threads() -> int:
    """Threads of this process as the kernel sees them (Python's plus DDS's and torch's native ones)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def sample(frame: int, t0: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One resource sample of this process (gc.collect first, so only live objects count)."""
    gc.collect()
    return {"frame": frame, "t_s": round(time.monotonic() - t0, 1), "rss_mib": round(rss_mib(), 1),
            "gc_objects": len(gc.get_objects()), "threads": threading.active_count(), "os_threads": os_threads(),
            **(extra or {})}


@dataclass
class Bounds:
    """Allowed change from the warm-up sample to the last sample."""

    rss_mib: float = 64.0
    gc_objects_frac: float = 0.02
    threads: int = 0


@dataclass
class Driver:
    """Publishes camera messages (CDR) and waits for the node's status of each image; keeps only counters."""

    context: Any
    node: Any
    image_pub: Any
    info_pub: Any | None
    executor: Any
    thread: threading.Thread
    got: threading.Condition = field(default_factory=threading.Condition)
    last_stamp: int = -1
    last_status: Any = None
    outputs: int = 0
    running: bool = True


def make_driver(rclpy: Any, domain: int, image_type: type, with_info: bool, outputs: bool) -> Driver:
    """The publishing + recording side, in its own context (and its own executor thread)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from st4rtrack_ros.msg import Track3DArray, TrackerStatus
    from st4rtrack_ros.ros.conversions import ns_from_stamp

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("soak_driver", context=ctx)
    rel = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = node.create_publisher(image_type, "/camera/image_raw", rel)
    info_pub = node.create_publisher(CameraInfo, "/camera/camera_info", rel) if with_info else None
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    d = Driver(ctx, node, image_pub, info_pub, executor, threading.Thread())

    def on_status(m: Any) -> None:
        with d.got:
            d.last_stamp, d.last_status = ns_from_stamp(m.header.stamp), m
            d.got.notify_all()

    def count(_m: Any) -> None:
        d.outputs += 1

    node.create_subscription(TrackerStatus, f"{NODE_NS}/status", on_status, rel)
    if outputs:  # as RViz would: the node only builds these while something subscribes
        for cls, topic in ((PointCloud2, "points"), (PointCloud2, "map"), (MarkerArray, "track_markers"),
                           (Track3DArray, "tracks")):
            node.create_subscription(cls, f"{NODE_NS}/{topic}", count, rel)

    def spin() -> None:
        while d.running and ctx.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down underneath
                break

    d.thread = threading.Thread(target=spin, name="soak-driver", daemon=True)
    d.thread.start()
    return d


def close_driver(rclpy: Any, d: Driver) -> None:
    d.running = False
    d.thread.join(timeout=2.0)
    d.executor.shutdown(timeout_sec=1.0)
    d.node.destroy_node()
    rclpy.try_shutdown(context=d.context)


def load_bag(bag: Path) -> tuple[list[tuple[str, bytes, int]], type]:
    """(topic, CDR, image stamp or -1) in log order for the image and CameraInfo topics, and the image class."""
    from rclpy.serialization import deserialize_message

    from st4rtrack_ros.data.bag_format import MSG_CAMERA_INFO, MSG_IMAGE
    from st4rtrack_ros.ros.conversions import ns_from_stamp
    from st4rtrack_ros.ros.play import BagSource, message_class

    src = BagSource(bag)
    try:
        image_cls = message_class(MSG_IMAGE)
        keep = {t for t, ty in src.types.items() if ty in (MSG_IMAGE, MSG_CAMERA_INFO)}
        out = []
        for m in src.messages():
            if m.topic in keep:
                stamp = -1
                if src.types[m.topic] == MSG_IMAGE:
                    stamp = ns_from_stamp(deserialize_message(m.cdr, image_cls).header.stamp)
                out.append((m.topic, m.cdr, stamp))
        return out, image_cls
    finally:
        src.close()


def make_bag(out: Path, frames: int, size: str) -> Path:
    from st4rtrack_ros.cli.synth import main as synth

    if synth([str(out), "--frames", str(frames), "--size", size, "--tracks", "64", "--object-tracks", "16",
              "--no-gt", "-q"]) != 0:
        raise RuntimeError("st4rtrack-synth failed")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20_000, help="frames the node must process (default 20000)")
    ap.add_argument("--bag", type=Path, help="bag to loop (default: a synthetic one, --bag-frames × --size)")
    ap.add_argument("--bag-frames", type=int, default=120)
    ap.add_argument("--size", default="128x96", help="synthetic bag image size (default 128x96)")
    ap.add_argument("--checkpoint", type=Path, help="default: random tiny_128 weights (speed, not quality)")
    ap.add_argument("--device", default="cpu", help="model.device (default cpu)")
    ap.add_argument("--no-adaptation", action="store_true", help="background adaptation off (default on)")
    ap.add_argument("--no-outputs", action="store_true", help="subscribe to ~/status only")
    ap.add_argument("--every", type=int, default=500, help="frames between samples")
    ap.add_argument("--warmup", type=int, default=1000, help="frame of the reference sample")
    ap.add_argument("--max-rss-growth-mib", type=float, default=Bounds.rss_mib)
    ap.add_argument("--max-object-growth", type=float, default=Bounds.gc_objects_frac,
                    help="allowed growth of len(gc.get_objects()) as a fraction (default 0.02)")
    ap.add_argument("--timeout", type=float, default=5.0, help="s to wait for one frame's status before going on")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="node parameter override (YAML value), repeatable; e.g. tracking.min_visible_fraction=0.0")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--domain-id", type=int)
    args = ap.parse_args(argv)
    if not 0 < args.warmup < args.frames:
        print("soak: need 0 < --warmup < --frames", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    import torch
    from rclpy.parameter import Parameter

    from st4rtrack_ros.model.checkpoint import save_checkpoint
    from st4rtrack_ros.model.config import preset
    from st4rtrack_ros.model.network import St4RTrackNet
    from st4rtrack_ros.ros.env import domain_id_for
    from st4rtrack_ros.ros.node import TrackerNode, node_executor

    tmp = tempfile.TemporaryDirectory(prefix="st4r_soak_")
    tmpdir = Path(tmp.name)
    bag = args.bag or make_bag(tmpdir / "bag", args.bag_frames, args.size)
    msgs, image_cls = load_bag(bag)
    images = sum(1 for _, _, s in msgs if s >= 0)
    ckpt = args.checkpoint
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmpdir / "tiny_128.safetensors")
    domain = args.domain_id if args.domain_id is not None else domain_id_for(os.getpid() + 11)

    t0 = time.monotonic()
    gc.collect()
    threads_before = {t.ident for t in threading.enumerate()}
    baseline = sample(0, t0, {"phase": "before node"})
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    overrides = [Parameter("model.checkpoint", value=str(ckpt)), Parameter("model.device", value=args.device),
                 Parameter("adaptation.enabled", value=not args.no_adaptation),
                 Parameter("ros.map_period_s", value=0.0)]
    for kv in args.param:
        name, _, value = kv.partition("=")
        overrides.append(Parameter(name, value=yaml.safe_load(value)))
    node = TrackerNode(context=ctx, parameter_overrides=overrides)
    if not node.bring_up():
        raise SystemExit("the node did not come up (see the log above)")
    executor = node_executor(node, ctx)  # spun as st4rtrack-node spins it
    spin_stop = threading.Event()

    def spin() -> None:
        while not spin_stop.is_set() and ctx.ok():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin, name="soak-node-executor", daemon=True)
    spinner.start()
    driver = make_driver(rclpy, domain, image_cls, any(s < 0 for _, _, s in msgs), not args.no_outputs)
    samples = [baseline]
    processed = resent = stalled = 0
    error = ""
    lat: list[float] = []
    try:
        end = time.monotonic() + 30.0
        while driver.image_pub.get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.5)  # discovery in both directions
        i = 0
        while processed < args.frames:
            _topic, cdr, stamp = msgs[i % len(msgs)]
            i += 1
            if stamp < 0:
                driver.info_pub.publish(cdr)
                continue
            sent = time.monotonic()
            deadline = sent + args.timeout
            driver.image_pub.publish(cdr)
            with driver.got:
                while driver.last_stamp != stamp:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    driver.got.wait(left)
                ok = driver.last_stamp == stamp
            if not ok:  # lost on the way (or an OOM drop): count it and go on with the next frame
                resent += 1
                stalled += 1
                if stalled >= 10:
                    raise RuntimeError(f"no output for 10 frames in a row after {processed} frames: node stalled")
                continue
            stalled = 0
            lat.append(1e3 * (time.monotonic() - sent))
            processed += 1
            if processed % args.every == 0 or processed == args.frames or processed == args.warmup:
                st = driver.last_status
                samples.append(sample(processed, t0, {
                    "resets": int(st.resets), "node_processed": int(st.frames_processed),
                    "node_dropped": int(st.frames_dropped), "adaptation_rounds": int(st.adaptation_rounds),
                    "map_points": len(node.tracker.map.points),
                    "latency_p50_ms": round(float(np.median(lat[-args.every:])), 1)}))
                print(f"[soak] {json.dumps(samples[-1])}", file=sys.stderr, flush=True)
    except RuntimeError as e:
        error = str(e)
    finally:
        close_driver(rclpy, driver)
        t_stop = time.monotonic()
        node.trigger_shutdown()
        spin_stop.set()
        spinner.join(timeout=2.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        stop_s = time.monotonic() - t_stop
    time.sleep(0.5)  # DDS's own threads end asynchronously after the context is gone
    after = sample(processed, t0, {"phase": "after shutdown"})
    leaked = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    ref = next((s for s in samples if s["frame"] == args.warmup), samples[-1])
    last = samples[-1]
    bounds = Bounds(args.max_rss_growth_mib, args.max_object_growth)
    growth = {"rss_mib": round(last["rss_mib"] - ref["rss_mib"], 1),
              "gc_objects": last["gc_objects"] - ref["gc_objects"],
              "gc_objects_frac": round((last["gc_objects"] - ref["gc_objects"]) / ref["gc_objects"], 4),
              "threads": last["threads"] - ref["threads"], "os_threads": last["os_threads"] - ref["os_threads"]}
    failures = []
    if growth["rss_mib"] > bounds.rss_mib:
        failures.append(f"RSS grew {growth['rss_mib']} MiB > {bounds.rss_mib}")
    if growth["gc_objects_frac"] > bounds.gc_objects_frac:
        failures.append(f"gc objects grew {growth['gc_objects_frac']:.2%} > {bounds.gc_objects_frac:.0%}")
    if growth["threads"] > bounds.threads or growth["os_threads"] > bounds.threads:
        failures.append(f"threads grew by {growth['threads']} (Python), {growth['os_threads']} (OS)")
    if leaked:
        failures.append(f"threads left after shutdown: {leaked}")
    if processed < args.frames:
        failures.append(f"only {processed} frames processed {error}".strip())
    result = {
        "frames": processed, "bag": str(args.bag or f"synthetic {args.bag_frames} frames {args.size}"),
        "bag_images": images, "checkpoint": str(args.checkpoint or "random tiny_128"),
        "adaptation": not args.no_adaptation, "outputs_subscribed": not args.no_outputs,
        "wall_s": round(time.monotonic() - t0, 1),
        "frames_per_s": round(processed / max(time.monotonic() - t0, 1e-9), 2),
        "lost_and_skipped": resent, "latency_ms_p50": round(float(np.median(lat)), 1) if lat else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat else None,
        "outputs_received": driver.outputs, "shutdown_s": round(stop_s, 2),
        "bounds": vars(bounds), "warmup_sample": ref, "last_sample": last, "growth": growth,
        "after_shutdown": after, "threads_before_node": baseline["threads"], "leaked_threads": leaked,
        "samples": samples, "ok": not failures, "failures": failures,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    tmp.cleanup()
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
