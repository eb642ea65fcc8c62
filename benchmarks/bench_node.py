#!/usr/bin/env python3
"""The node against the tracker it wraps: output rate and latency of ``st4rtrack-node`` over DDS versus the offline
online-mode :class:`~st4rtrack_ros.tracking.tracker.OnlineTracker` on the same bag, in one run.

1. offline: the tracker ``st4rtrack_ros.pipeline.build_tracker`` makes from the node's own default parameters (the
   same spec the node builds) steps over every frame of the bag, decoded beforehand; rate = frames / Σ step time.
   It runs before and after the live runs (the machine is shared: the mean of both brackets the load).
2. live: for each input rate, the node is started as a subprocess (``live_eval.NodeProcess``) and the bag is replayed
   into it from this process (``live_eval.replay``) for ``--duration`` s (looped, stamps shifted), with every output
   subscribed (``live_eval.OutputRecorder``): points, map, tracks, track_markers, camera_pose, path, status,
   /diagnostics. The node's last /diagnostics (its per-stage timings, where the node reports them) is kept.
   ``--baseline-src DIR`` runs a second node from another copy of the package (PYTHONPATH), before the current one,
   for before/after ratios measured side by side.

3. the node's own frames (``--same-frames N``, default 256): after each live run the offline tracker steps N of the
   frames the node processed, in its order and with the stamps it saw (from the middle of the run). A node fed
   faster than it steps drops frames, so the frames it steps lie further apart (and a looped bag jumps back more
   often): the tracker re-anchors more, an extra network call each time. This is the tracker doing the node's work.
   Not for a ``--baseline-src`` node: the offline tracker is always this checkout's.

ratio = node output rate / offline tracker rate (the mean of the offline runs before and after the block of live
runs); ``ratio_to_offline_same_frames`` = node output rate / the rate of 3. (re-anchors of both offline runs are
counted). On a shared machine the load drifts between those runs, so each live run also reports
``ratio_to_own_step``: its output rate over the rate its own tracker steps allowed at that moment
(TrackerStatus.step_ms, capped by the input rate): 1.0 = the node adds nothing to the tracker. Targets: ratio ≥ 0.8
with every output subscribed and latency p95 ≤ 2 × p50.

  .venv/bin/python benchmarks/bench_node.py BAG --hz 10 30 --duration 90 --json results/benchmarks/bench_node_X.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.data.bag_io import read_frames
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.ros import cdr, markers
from st4rtrack_ros.ros import conversions as cv
from st4rtrack_ros.ros import params as P
from st4rtrack_ros.ros.env import domain_id_for
from st4rtrack_ros.ros.live_eval import OUTPUTS, NodeProcess, OutputRecorder, live_stats, node_inputs_for_bag, replay
from st4rtrack_ros.tracking.types import FrameInput


def load() -> dict[str, Any]:
    """Load average and the top CPU consumers, to say how busy the shared machine was."""
    top = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"], capture_output=True,
                         text=True).stdout.splitlines()[:6]
    return {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count(), "top": [" ".join(t.split()) for t in top]}


def offline_rate(bag: Path, params: dict[str, Any], warmup: int = 4, max_frames: int = 0,
                 main_thread: bool = False, schedule: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Frames/s of ``tracker.step`` over the bag (frames decoded beforehand, as the node decodes in its callback);
    ``warmup`` frames first (then a reset), so one-off allocations are not counted.

    ``schedule``: step these frames instead of every frame in bag order, as (stamp given to the tracker, the
    frame's stamp in the bag) — the frames a live node processed, in its order, with the stamps it saw. A node
    that drops frames sees larger motion between the frames it steps (and the bag's loops), so it re-anchors more
    often than the tracker stepping every frame: this measures the tracker on the node's own work.

    The steps run in a worker thread, as in the node (``main_thread`` runs them in this process's main thread
    instead: on the loaded shared machine that was 10-50x slower, with the same torch threads)."""
    import threading

    import torch

    tracker = build_tracker(TrackerSpec.from_params(params))
    frames = list(read_frames(bag))
    if schedule is not None:
        by_stamp = {f.stamp_ns: f for f in frames}
        inputs = [FrameInput(stamp, by_stamp[bag_stamp].image, by_stamp[bag_stamp].k, None)
                  for stamp, bag_stamp in schedule]
    else:
        inputs = [FrameInput(f.stamp_ns, f.image, f.k, None) for f in frames]
    inputs = inputs[:max_frames] if max_frames else inputs
    steps: list[float] = []
    stage: dict[str, list[float]] = {}
    kept: dict[str, Any] = {"reanchors": 0}

    def run() -> None:
        with torch.inference_mode():
            for f in inputs[:warmup]:
                tracker.step(f)
            tracker.reset("warm-up done")
            for f in inputs:
                t0 = time.perf_counter()
                res = tracker.step(f)
                steps.append(time.perf_counter() - t0)
                kept["reanchors"] += bool(res.reanchored)
                for k, v in res.timings_ms.items():
                    stage.setdefault(k, []).append(v)
                kept["last"] = res
                if res.map_points is not None:
                    kept["last_map"] = res

    if main_thread:
        run()
    else:
        worker = threading.Thread(target=run, name="offline-tracker")
        worker.start()
        worker.join()
    steps_ms = np.array(steps) * 1e3
    return {"frames": len(inputs), "fps": len(inputs) / float(np.sum(steps)), "thread": "main" if main_thread
            else "worker", "_last": kept.get("last"), "_last_map": kept.get("last_map"),
            "reanchors": kept["reanchors"], "frames_in": "node's" if schedule is not None else "every",
            "step_p50_ms": float(np.percentile(steps_ms, 50)), "step_p95_ms": float(np.percentile(steps_ms, 95)),
            "stage_mean_ms": {k: float(np.mean(v)) for k, v in stage.items()}}


def build_costs(res: Any, map_res: Any, params: dict[str, Any], reps: int = 10) -> dict[str, dict[str, float]]:
    """Median ms to turn one tracker result into publishable data, per output: message objects + rclpy
    serialisation (what ``publish(msg)`` costs: rclpy converts the objects, the rmw serialises) versus the CDR bytes
    the node now publishes (``publish(bytes)`` hands them over as they are). Same process, same result, one after
    the other."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
    from visualization_msgs.msg import MarkerArray

    from st4rtrack_ros.ros.publishing import Outputs

    hdr, st, frame = Header(frame_id="st4r_world"), (1, 2), "st4r_world"
    tr = res.tracks
    pos = cv.to_rep103_points(np.asarray(tr.positions, np.float64))
    hist = cv.to_rep103_points(np.asarray(tr.history, np.float64))
    mk = {"cap": int(params["ros.max_marker_tracks"]), "trail": int(params["ros.marker_history"]),
          "scheme": str(params["ros.marker_color"]), "scale": 0.01}
    margs = (tr.ids, pos, hist, tr.visible, tr.dynamic, tr.confidence)
    cloud = cv.cloud_array(cv.to_rep103_points(res.points), res.colors, res.point_confidence,
                           int(params["ros.max_cloud_points"]))
    mres = map_res or res
    mcloud = cv.cloud_array(cv.to_rep103_points(mres.map_points if mres.map_points is not None else mres.points),
                            mres.map_colors if mres.map_points is not None else mres.colors, None,
                            int(params["ros.max_map_points"]))
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker

    cases = {
        "tracks": (lambda: serialize_message(Outputs._track_array(hdr, tr, pos)),
                   lambda: cdr.track_array_cdr(st, frame, tr.ids, pos, tr.visible, tr.dynamic, tr.confidence,
                                              tr.sigma2, tr.age)),
        "points": (lambda: serialize_message(cv.fill_cloud(PointCloud2(header=hdr), PointField, cloud)),
                   lambda: cdr.cloud_cdr(st, frame, cloud)),
        "map": (lambda: serialize_message(cv.fill_cloud(PointCloud2(header=hdr), PointField, mcloud)),
                lambda: cdr.cloud_cdr(st, frame, mcloud)),
        # rosidl's field checks on (what ROS_PYTHON_CHECK_FIELDS=1 turns on): assigning bytes to a uint8[] field
        # then tests every byte in Python
        "points_field_checks": (lambda: serialize_message(cv.fill_cloud(PointCloud2(header=hdr, check_fields=True),
                                                                        PointField, cloud)),
                                lambda: cdr.cloud_cdr(st, frame, cloud)),
        "markers": (lambda: serialize_message(MarkerArray(markers=markers.build_markers(Marker, Point, ColorRGBA,
                                                                                        hdr, *margs, **mk))),
                    lambda: cdr.marker_array_cdr(st, frame, markers.plan_markers(*margs, **mk))),
    }

    def median_ms(fn: Any) -> float:
        t = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return float(np.median(t) * 1e3)

    out = {name: {"objects_ms": median_ms(a), "cdr_ms": median_ms(b)} for name, (a, b) in cases.items()}
    out["_sizes"] = {"tracks": len(tr), "cloud_points": len(cloud), "map_points": len(mcloud),
                     "marker_vertices": int(sum(min(len(h), mk["trail"]) for h in hist))}
    return out


#: py-spy sample attribution: the first category (in this order) with a frame whose function matches one pattern.
PROFILE_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (image callback)", ("image_to_rgb", "on_image")),
    ("status", ("_publish_status",)),
    ("diagnostics", ("_publish_diagnostics",)),
    ("publish: tracks", ("_track_array", "track_array_cdr")),
    ("publish: markers", ("_markers ", "build_markers", "plan_markers", "marker_array_cdr")),
    ("publish: clouds (points + map)", ("cloud_array", "fill_cloud", "cloud_cdr", "_cloud ")),
    ("publish: path", ("_path_msg", "path_cdr")),
    ("publish: pose, tf, send", ("Outputs.publish", "publish (rclpy")),
    ("tracker: network", ("StreamingEngine.step",)),
    ("tracker: map update", ("MapAccumulator.add",)),
    ("tracker: rest (preprocess, pose, tracks, cloud)", ("OnlineTracker.step",)),
    ("executor (spin, DDS callbacks)", ("spin_once",)),
)


def summarise_profile(path: Path) -> dict[str, Any]:
    """Share of py-spy samples (active threads, one sample per thread per tick) per category and per thread."""
    cats: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] = threads.get(frames[0], 0) + n
        name = next((c for c, pats in PROFILE_CATEGORIES if any(p in f for f in frames[1:] for p in pats)), "other")
        cats[name] = cats.get(name, 0) + n
    share = {k: round(v / max(total, 1), 4) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}
    return {"samples": total, "share": share, "threads": {k: round(v / max(total, 1), 4) for k, v in threads.items()}}


def live_run(bag: Path, hz: float, duration: float, out: Path, env: dict[str, str] | None,
             raw: bool, profile_s: float = 0.0, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One replay into a fresh node with every output subscribed; the summary plus the node's last diagnostics.
    ``raw``: the recorder takes every output but status as bytes (no Python deserialisation)."""
    domain = domain_id_for(os.getpid() + int(hz) + (7 if env else 0))
    node = NodeProcess({**node_inputs_for_bag(bag), **(overrides or {})}, domain_id=domain, log_dir=out / "node",
                       env=env)
    rec = OutputRecorder(domain, outputs=sorted(OUTPUTS), raw=[o for o in OUTPUTS if o != "status"] if raw else ())
    try:
        if not rec.wait_for(lambda: not node.alive() or "ready:" in node.log(), 180.0) or not node.alive():
            raise RuntimeError(f"the node did not start:\n{node.log()[-3000:]}")
        before = load()
        spy = None
        if profile_s > 0:  # idle threads are not sampled: only work counts
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                    str(node.proc.pid), "--duration", str(int(profile_s)), "--rate", "50",
                                    "--format", "raw", "--threads", "--nonblocking",
                                    "--output", str(out / "node_pyspy.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        sink = replay(rec, bag, hz=hz, duration_s=duration)
        last = sink.order[-1] if sink.order else None
        rec.wait_for(lambda: any(cv.ns_from_stamp(m.header.stamp) == last
                                 for _, m in rec.inbox.get(rec.topic("status"))[-5:]), 5.0)
        stats = live_stats(sink, rec, time.monotonic() - t0)
        stamps = (cv.ns_from_stamp(m.header.stamp) for _, m in rec.inbox.get(rec.topic("status")))
        schedule = [(st, sink.bag_stamp[st]) for st in stamps if st in sink.bag_stamp]  # what the node stepped
        diags = rec.inbox.get("/diagnostics")
        counts = {t: rec.inbox.count(rec.topic(t)) for t in OUTPUTS}
    finally:
        rec.close()
        node.stop()
    s = stats.summary()
    # the node's own tracker step (TrackerStatus.step_ms) during this run: the rate its tracker allowed here and now
    step = np.array([m.step_ms for _, m in rec.inbox.get(rec.topic("status"))])
    if len(step):
        s["node_step_p50_ms"], s["node_step_mean_ms"] = float(np.median(step)), float(np.mean(step))
        bound = min(s["input_hz"] or np.inf, 1e3 / float(np.mean(step)))
        s["step_bound_hz"], s["ratio_to_own_step"] = bound, s["output_hz"] / bound
    if spy is not None:
        spy.wait(timeout=60)
        if (out / "node_pyspy.txt").exists():
            s["py_spy"] = summarise_profile(out / "node_pyspy.txt")
    s["received_per_output"] = counts
    s["load_before"], s["load_after"] = before, load()
    if diags:
        s["node_diagnostics"] = {st.name: {kv.key: kv.value for kv in st.values} for st in diags[-1][1].status}
    np.savetxt(out / "latency_ms.txt", stats.latency_ms, fmt="%.2f")
    s["_schedule"] = schedule
    return s


def middle(seq: list[Any], n: int) -> list[Any]:
    """``n`` consecutive items from the middle of ``seq`` (all of it when shorter)."""
    start = max((len(seq) - n) // 2, 0)
    return seq[start:start + n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", type=Path)
    ap.add_argument("--hz", type=float, nargs="+", default=[10.0, 30.0])
    ap.add_argument("--duration", type=float, default=90.0, help="seconds of replay per input rate")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="a copy of the package's parent folder (holding st4rtrack_ros/ and config/) to run first")
    ap.add_argument("--label", default="node", help="name of the current node's runs (e.g. 'before' when the whole "
                    "benchmark runs under PYTHONPATH of an older copy)")
    ap.add_argument("--deserialize", action="store_true", help="the recorder deserialises every output in Python "
                    "(default: only status; the others are received as bytes, as a C++ consumer like RViz costs)")
    ap.add_argument("--profile", type=float, default=0.0, help="py-spy the node for this many s of each replay "
                    "(pip install py-spy into the venv; not a project requirement)")
    ap.add_argument("--repeats", type=int, default=1, help="blocks of live runs, each followed by an offline run")
    ap.add_argument("--offline-frames", type=int, default=0, help="frames of each offline run (0 = the whole bag)")
    ap.add_argument("--main-thread-check", type=int, default=0, help="also step this many frames offline from the "
                    "main thread (on the loaded shared machine far slower than from a worker thread)")
    ap.add_argument("--same-frames", type=int, default=256, help="after each live run, step the offline tracker "
                    "over this many of the frames the node processed (from the middle of the run, in its order; "
                    "0 = off): the ratio to the tracker doing the node's own work")
    ap.add_argument("--out", type=Path, default=Path("out/bench_node"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a node parameter for the node and the offline tracker alike, e.g. model.cpu_threads=1")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, _, v in (p.partition("=") for p in args.param)}
    params = {**P.defaults(), **node_inputs_for_bag(args.bag), **overrides}
    result: dict[str, Any] = {"bag": str(args.bag), "hz": args.hz, "duration_s": args.duration,
                              "recorder_deserializes": args.deserialize,
                              "load_start": load(), "command": " ".join(sys.argv), "params": overrides}
    def offline() -> dict[str, Any]:
        o = offline_rate(args.bag, params, max_frames=args.offline_frames)
        print(f"[bench_node] offline {o['fps']:.2f} frames/s", file=sys.stderr)
        return o

    off = [offline()]
    if args.main_thread_check:  # the same tracker stepped from the main thread (see offline_rate)
        one = offline_rate(args.bag, params, max_frames=args.main_thread_check, main_thread=True)
        result["offline_main_thread"] = {k: v for k, v in one.items() if not k.startswith("_")}
        print(f"[bench_node] offline from the main thread {one['fps']:.2f} frames/s", file=sys.stderr)
    result["message_building"] = build_costs(off[0].pop("_last"), off[0].pop("_last_map"), params)
    print(f"[bench_node] message building {json.dumps(result['message_building'])}", file=sys.stderr)
    variants = ([("before", {"PYTHONPATH": str(args.baseline_src.resolve())})] if args.baseline_src else []) + \
        [("after" if args.baseline_src else args.label, None)]
    live: dict[str, dict[str, Any]] = {}
    result.update({"offline": off, "live": live})
    for rep in range(args.repeats):
        block = []
        for name, env in variants:
            for hz in args.hz:
                key = f"{name}_{hz:g}hz_r{rep}"
                s = live_run(args.bag, hz, args.duration, args.out / key, env, not args.deserialize, args.profile,
                             overrides)
                schedule = s.pop("_schedule")
                # the offline tracker is this checkout's: a --baseline-src node runs other code, so no ratio for it
                if args.same_frames and len(schedule) > 4 and env is None:
                    o = offline_rate(args.bag, params, schedule=middle(schedule, args.same_frames))
                    o.pop("_last"), o.pop("_last_map")
                    s["offline_same_frames"] = o
                    s["ratio_to_offline_same_frames"] = s["output_hz"] / o["fps"]
                    print(f"[bench_node] {key}: offline over the node's frames {o['fps']:.2f} frames/s, "
                          f"{o['reanchors']} re-anchors in {o['frames']} frames", file=sys.stderr)
                live[key] = s
                block.append(s)
                print(f"[bench_node] {key}: out {s['output_hz']:.2f} Hz (own step bound "
                      f"{s.get('step_bound_hz', 0):.2f}), e2e p50/p95 {s['latency_p50_ms']:.0f}/"
                      f"{s['latency_p95_ms']:.0f} ms", file=sys.stderr)
        off.append(offline())
        off[-1].pop("_last"), off[-1].pop("_last_map")
        fps = float(np.mean([off[-2]["fps"], off[-1]["fps"]]))  # the offline runs bracketing this block
        for s in block:
            s["offline_fps"] = fps
            s["ratio_to_offline"] = s["output_hz"] / fps
            s["p95_over_p50"] = s["latency_p95_ms"] / s["latency_p50_ms"] if s["latency_p50_ms"] else None
        if args.json:  # after every block: a long run that is cut short keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result | {"load_end": load()}, indent=1))
    result["load_end"] = load()
    print(json.dumps({k: {"out_hz": round(v["output_hz"], 2), "ratio": round(v["ratio_to_offline"], 3),
                          "ratio_same_frames": round(v.get("ratio_to_offline_same_frames", 0), 3),
                          "ratio_own_step": round(v.get("ratio_to_own_step", 0), 3),
                          "p50": round(v["latency_p50_ms"], 1), "p95": round(v["latency_p95_ms"], 1),
                          "p95/p50": round(v["p95_over_p50"] or 0, 2)} for k, v in live.items()}
                     | {"offline_fps": [round(o["fps"], 2) for o in off]}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"[bench_node] wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
