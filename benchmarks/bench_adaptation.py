#!/usr/bin/env python3
"""Per-frame tracker latency with background adaptation running vs without, side by side in one process.

Both runs stream the same synthetic frames through an OnlineTracker on the same model; in the second, an
AdaptationWorker is offered a window every few frames so rounds run back to back in its thread. Reports p50/p95
latency of ``tracker.step`` for both and the ratio (targets: ≤ 1.5 on the CPU preset, ≤ 1.2 on a GPU).

  .venv/bin/python benchmarks/bench_adaptation.py                         # CPU, small_256
  python3 benchmarks/bench_adaptation.py --preset vitl_512 --device cuda  # GPU (engine: fastest options)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.tracking.tracker import TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


def run(net, frames, device, adapt: AdaptationConfig | None, passes: int) -> tuple[list[float], dict]:
    spec = TrackerSpec(device=str(device), tracking=TrackerConfig(window_size=10**6, min_visible_fraction=0.0,
                                                                  map_every=0), adaptation=adapt)
    tracker = build_tracker(spec, net=net)  # the engine's fastest options for the device
    worker = tracker.adaptation
    if worker:
        worker.start()
    lat = []
    dt = frames[1].stamp_ns - frames[0].stamp_ns
    try:
        for i in range(passes * len(frames)):
            f = frames[i % len(frames)]
            t = time.perf_counter()
            tracker.step(FrameInput(frames[0].stamp_ns + i * dt, f.rgb, f.k))
            lat.append((time.perf_counter() - t) * 1e3)
    finally:
        if worker:
            worker.stop(30)
    return lat[len(frames) // 2:], (worker.status() if worker else {})  # drop warm-up (capture, first round)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small_256")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--params", default="heads")
    ap.add_argument("--duty-cycle", type=float, default=None, help="default: 0.25 on CPU, 1.0 on GPU")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = preset(args.preset)
    w, h = cfg.img_size
    frames = list(make_sequence("easy", args.frames, seed=0, width=w, height=h, n_tracks=8, n_object_tracks=2
                                ).frames())
    torch.manual_seed(0)
    duty = args.duty_cycle if args.duty_cycle is not None else (1.0 if device.type == "cuda" else 0.25)
    adapt = AdaptationConfig(enabled=True, every_n_frames=2, window_frames=6, holdout_frames=2, steps=4,
                             params=args.params, duty_cycle=duty)
    results = {}
    for name, a in (("off", None), ("on", adapt)):
        with torch.device(device):
            net = St4RTrackNet(cfg).eval()
        lat, status = run(net, frames, device, a, args.passes)
        results[name] = {"p50_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)), "n": len(lat),
                         "adaptation": status}
        print(f"adaptation {name}: p50 {results[name]['p50_ms']:.1f} ms, p95 {results[name]['p95_ms']:.1f} ms "
              f"{status}", file=sys.stderr, flush=True)
    ratio = results["on"]["p50_ms"] / results["off"]["p50_ms"]
    out = {"preset": args.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "duty_cycle": duty, "params": args.params, **results,
           "ratio_p50": ratio, "ratio_p95": results["on"]["p95_ms"] / results["off"]["p95_ms"]}
    print(json.dumps(out, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
