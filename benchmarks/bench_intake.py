"""Does taking every camera image off DDS in the tracker's process slow the tracker?

The node's executor takes each image (and CameraInfo) as it arrives, decodes it in the image callback and keeps
the newest in a one-frame slot (``ros.frame_pipeline``); at 30 Hz input that is ~25 images a second the tracker
never steps. A pull-based intake would take only the newest image, only when the tracker is free. This benchmark
measures what that could gain before anything is built: the offline tracker (``bench_node.offline_rate``, stepped
in a worker thread as in the node) steps the bag while ``st4rtrack-play`` (another process, the camera) loops the
bag's image and CameraInfo topics at ``--hz``, under three intakes in this same process, interleaved:

- ``none``: nothing subscribed (the camera process still runs; DDS sends nothing to this process);
- ``callback``: the node's intake: an executor thread spinning a node whose image callback decodes every image
  (``image_to_rgb``) into a ``LatestSlot``, plus a CameraInfo subscription;
- ``pull``: the image subscription sits on a node no executor spins (depth-1 history: DDS keeps only the newest);
  a thread takes the newest raw message every ``--pull-period`` s and deserialises and decodes only that one.

  .venv/bin/python benchmarks/bench_intake.py out/quiet/bags/easy_1000_64_256x160 --hz 30 --repeats 5 \\
      --json results/benchmarks/bench_intake_contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_node import load, offline_rate

from st4rtrack_ros.data.messages import image_to_rgb
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.env import domain_id_for
from st4rtrack_ros.ros.handover import LatestSlot
from st4rtrack_ros.ros.live_eval import bag_fps, camera_topics, node_inputs_for_bag
from st4rtrack_ros.ros.play import BagSource

CONDITIONS = ("none", "callback", "pull")


def start_intake(kind: str, image_topic: str, info_topics: list[str], pull_period_s: float,
                 counter: list[int]) -> Callable[[], None]:
    """Start one intake in this process; returns its stop function. ``counter[0]`` counts decoded images."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    if kind == "none":
        return lambda: None
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    slot, stop = LatestSlot(), threading.Event()

    def decode(msg: Image) -> None:
        slot.put(image_to_rgb(msg, 0, 0))
        counter[0] += 1

    node = rclpy.create_node(f"intake_{kind}", start_parameter_services=False)
    if kind == "callback":
        node.create_subscription(Image, image_topic, decode, qos)
        for t in info_topics:
            node.create_subscription(CameraInfo, t, lambda _m: None,
                                     QoSProfile(depth=4, reliability=ReliabilityPolicy.BEST_EFFORT))
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def loop() -> None:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
    else:
        sub = node.create_subscription(Image, image_topic, lambda _m: None, qos, raw=True)

        def loop() -> None:
            while not stop.wait(pull_period_s):
                newest = None
                while (taken := sub.handle.take_message(Image, True)) is not None:
                    newest = taken
                if newest is not None:
                    decode(deserialize_message(newest[0], Image))

    thread = threading.Thread(target=loop, name=f"intake-{kind}", daemon=True)
    thread.start()

    def end() -> None:
        stop.set()
        thread.join()
        if kind == "callback":
            executor.remove_node(node)
        node.destroy_node()
    return end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", type=Path)
    ap.add_argument("--hz", type=float, default=30.0, help="camera rate (the bag is replayed faster or slower)")
    ap.add_argument("--repeats", type=int, default=4, help="rounds of the three intakes")
    ap.add_argument("--frames", type=int, default=64, help="tracker steps per measurement")
    ap.add_argument("--pull-period", type=float, default=0.18, help="s between pulls (~ one tracker step)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import rclpy

    os.environ["ROS_DOMAIN_ID"] = str(domain_id_for())  # this process and the camera only
    source = BagSource(args.bag)
    try:
        topics = camera_topics(source)
        image_topic = next(t for t, ty in topics.items() if "CameraInfo" not in ty)
        info_topics = [t for t in topics if t != image_topic]
        rate = args.hz / bag_fps(source, image_topic)
    finally:
        source.close()
    camera = subprocess.Popen([str(Path(sys.executable).with_name("st4rtrack-play")), str(args.bag), "--loop",
                               "--rate", f"{rate:g}", "--qos-profile", "sensor", "-q", "--topics", *topics],
                              env=os.environ.copy(), stdout=subprocess.DEVNULL)
    rclpy.init()
    params = {**P.defaults(), **node_inputs_for_bag(args.bag)}
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {"bag": str(args.bag), "hz": args.hz, "command": " ".join(sys.argv),
                              "load_start": load(), "runs": runs}
    try:
        time.sleep(3.0)  # discovery
        for rep in range(args.repeats):
            for kind in CONDITIONS:
                counter = [0]
                end = start_intake(kind, image_topic, info_topics, args.pull_period, counter)
                time.sleep(1.0)
                counter[0] = 0
                o = offline_rate(args.bag, params, max_frames=args.frames)
                end()
                run = {"repeat": rep, "intake": kind, "fps": o["fps"], "images_decoded": counter[0],
                       "network_mean_ms": o["stage_mean_ms"].get("network"), "step_p50_ms": o["step_p50_ms"]}
                runs.append(run)
                print(f"[bench_intake] r{rep} {kind:8s} {o['fps']:.2f} frames/s, network "
                      f"{run['network_mean_ms']:.1f} ms, {counter[0]} images decoded", file=sys.stderr)
    finally:
        camera.terminate()
        camera.wait(timeout=10)
        rclpy.try_shutdown()
    # per round, each intake's rate over that round's `none` (rounds are minutes apart; the machine drifts)
    for kind in CONDITIONS:
        mine = [r["fps"] for r in runs if r["intake"] == kind]
        base = [r["fps"] for r in runs if r["intake"] == "none"]
        rel = np.array(mine) / np.array(base)
        result[kind] = {"fps_mean": float(np.mean(mine)), "fps_over_none_per_round": rel.round(3).tolist(),
                        "fps_over_none_mean": float(rel.mean())}
    result["load_end"] = load()
    print(json.dumps({k: result[k] for k in CONDITIONS}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"[bench_intake] wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
