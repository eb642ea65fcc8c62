"""Time synthetic sequence generation: the issue asks for a 64-frame 256×160 sequence in under 30 s on CPU.

    .venv/bin/python benchmarks/bench_synth.py [--frames 64] [--size 256x160] [--presets easy,occlusion,fast,shift]

Reports, per preset, the time to build scene + tracks, to render all frames (with nuisances), and to write the
whole bag (MCAP, raw rgb8, all ground truth). Exits 1 if any full bag takes 30 s or more.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from st4rtrack_ros.cli.synth import parse_size
from st4rtrack_ros.data.bag_io import write_sequence
from st4rtrack_ros.data.sequence import make_sequence

LIMIT_S = 30.0


def main() -> int:
    """Run the timing and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", type=parse_size, default=(256, 160))
    ap.add_argument("--presets", default="easy,occlusion,fast,shift")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w, h = args.size
    print(f"| preset | scene+tracks s | render {args.frames} frames s | full bag s | ms/frame (bag) |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for name in args.presets.split(","):
        t0 = time.perf_counter()
        seq = make_sequence(name, args.frames, args.seed, w, h)
        t1 = time.perf_counter()
        for _ in seq.frames():
            pass
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            t3 = time.perf_counter()
            write_sequence(make_sequence(name, args.frames, args.seed, w, h), Path(tmp) / "bag")
            t4 = time.perf_counter()
        worst = max(worst, t4 - t3)
        print(f"| {name} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t4 - t3:.2f} | {1e3 * (t4 - t3) / args.frames:.0f} |")
    print(f"\nslowest full bag: {worst:.2f} s (limit {LIMIT_S:.0f} s) -> {'OK' if worst < LIMIT_S else 'TOO SLOW'}")
    return 0 if worst < LIMIT_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
