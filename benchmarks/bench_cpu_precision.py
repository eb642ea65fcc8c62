#!/usr/bin/env python3
"""CPU precision modes of the streaming engine, side by side in one process, on the default small_256 weights.

For each named option set in ``st4rtrack_ros.model.streaming.CPU_MODES``:

- speed: batch-1 streaming step (anchor cached) at ``--threads`` threads; the modes run interleaved (R rounds, each
  round every mode in a rotated order, K steps each), so a machine shared with other jobs disturbs them alike: the
  table reports the median over rounds and the median of the per-round ratios to fp32;
- achieved GFLOP/s: the step's FLOPs (counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the fp32
  step; every mode does the same arithmetic) over its median time, against this CPU's GEMM peak measured in the
  same rounds with a large matmul in fp32, bf16 and int8 (``torch._int_mm``);
- accuracy against fp32 on the same inputs: the relative pointmap difference (mean |Δxyz| / mean |xyz|, tracking
  and reconstruction heads, and the confidence) over real frames, and per bag the evaluation harness's metrics
  (protocol mode): tracking EPE, depth AbsRel, ATE, with their relative change from fp32, and fp32 run a second
  time as the harness's run-to-run floor.

``--compile`` adds bf16+nhwc with the engine's ``torch.compile`` option (its first call compiles: minutes here).

Needs only the repository's venv. Example (about 15 min on a quiet 2-core CPU, 30+ on a busy one):
  nice -n 10 .venv/bin/python benchmarks/bench_cpu_precision.py --compile \\
      --json results/benchmarks/bench_cpu_precision.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.data.bag_io import BenchmarkBagReader, synthetic_bag
from st4rtrack_ros.evaluation.report import compute_metrics
from st4rtrack_ros.evaluation.runner import RunConfig, protocol_config, run_frames
from st4rtrack_ros.model.checkpoint import load_checkpoint
from st4rtrack_ros.model.preprocess import preprocess
from st4rtrack_ros.model.streaming import CPU_MODES, EngineOptions, StreamingEngine
from st4rtrack_ros.settings import default_checkpoint
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

REAL_BAG = Path(__file__).resolve().parents[2] / "shared/data/real/7scenes_redkitchen_dev"


def gemm_gflops(dtype: torch.dtype, n: int = 2048, iters: int = 5) -> float:
    """Median GFLOP/s (GOP/s for int8) of an n×n×n matmul: the rate this CPU reaches on an ideal GEMM now."""
    if dtype == torch.int8:
        a, b = (torch.randint(-64, 64, (n, n), dtype=torch.int8) for _ in range(2))
        mm = torch._int_mm
    else:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        mm = torch.mm
    mm(a, b)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def bag_images(bag: Path, wh: tuple[int, int], count: int) -> torch.Tensor:
    """The first ``count`` camera frames of a bag as network inputs (count, 3, h, w) in [-1, 1]."""
    out = []
    with BenchmarkBagReader(bag) as reader:
        for frame in reader.frames():
            out.append(preprocess(frame.image, wh)[0])
            if len(out) == count:
                break
    return torch.stack(out)


def rel_diff(out, ref) -> dict[str, float]:
    """Relative differences of one mode's PairOutput from fp32's (means over all pixels)."""
    def pts(name: str) -> float:
        a, b = getattr(out, name), getattr(ref, name)
        return float((a - b).norm(dim=-1).mean() / b.norm(dim=-1).mean())
    return {"track_pts": pts("track_pts"), "recon_pts": pts("recon_pts"),
            "recon_conf": float(((out.recon_conf - ref.recon_conf).abs() / ref.recon_conf).mean())}


def time_modes(engines: dict[str, StreamingEngine], frames: tuple[torch.Tensor, torch.Tensor], rounds: int,
               steps: int) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Per-round median step ms of every mode, every step's ms, and the GEMM peaks measured between the rounds.

    The steps alternate two frames (1, 3, H, W): the engine reuses the encoder tokens of the tensor it stepped last
    (re-anchoring), so stepping one tensor again and again would time the step without its encoder."""
    names = list(engines)
    ms: dict[str, list[float]] = {n: [] for n in names}
    every: dict[str, list[float]] = {n: [] for n in names}
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": [], "int8": []}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotated: no mode always runs first
            eng = engines[name]
            eng.step(frames[1])
            times = []
            for i in range(steps):
                t0 = time.perf_counter()
                eng.step(frames[i % 2])
                times.append((time.perf_counter() - t0) * 1e3)
            ms[name].append(statistics.median(times))
            every[name] += times
        for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
            peaks[key].append(gemm_gflops(dtype))
        print(f"[bench] round {r + 1}/{rounds}: " + ", ".join(f"{n} {ms[n][-1]:.1f} ms" for n in names),
              file=sys.stderr, flush=True)
    return ms, every, peaks


def bag_metrics(engine: StreamingEngine, bag: Path, frames: int) -> dict[str, float | None]:
    """The evaluation harness on a bag (protocol mode, fixed anchor) with this engine."""
    tracker = OnlineTracker(engine, protocol_config(TrackerConfig()))
    with BenchmarkBagReader(bag) as reader:
        run = run_frames(reader.frames(), tracker, RunConfig(max_frames=frames, mode="protocol", progress_every=0))
    m = compute_metrics(run)
    return {"epe": m.get("tracking", {}).get("median", {}).get("epe"), "abs_rel": m.get("depth", {}).get("abs_rel"),
            "ate": m.get("camera", {}).get("ate")}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = ["fp32", *[m for m in (args.modes or list(CPU_MODES)) if m != "fp32"]]
    options = {m: EngineOptions.cpu_mode(m) for m in names}
    if args.compile:  # the engine's torch.compile option on top of the bf16 path
        options["bf16+nhwc+compile"] = dataclasses.replace(EngineOptions.cpu_mode("bf16+nhwc"), compile=True)
    modes = list(options)
    # One network per mode: NHWC and the bf16-head hooks change the module they are given.
    nets = {m: load_checkpoint(args.checkpoint, device="cpu") for m in modes}
    engines = {m: StreamingEngine(nets[m], options[m]) for m in modes}
    wh = nets["fp32"].config.img_size
    images = bag_images(args.real_bag, wh, args.pointmap_frames + 1)
    first_call_s = {}
    for m, eng in engines.items():  # the first calls compile (compile mode): timed apart
        t0 = time.perf_counter()
        eng.set_anchor(images[0])
        eng.step(images[1:2])
        first_call_s[m] = time.perf_counter() - t0

    flops = FlopCounterMode(display=False)
    with flops:
        engines["fp32"].step(images[1:2])
    step_flop = flops.get_total_flops()
    by_op = {str(k): v for k, v in flops.get_flop_counts()["Global"].items()}

    # accuracy on the same inputs: every real frame through every mode, against fp32
    refs = [engines["fp32"].step(images[i:i + 1]) for i in range(1, len(images))]
    pointmap = {}
    for m in modes:
        diffs = [rel_diff(engines[m].step(images[i:i + 1]), refs[i - 1]) for i in range(1, len(images))]
        pointmap[m] = {k: statistics.mean(d[k] for d in diffs) for k in diffs[0]}

    ms, every, peaks = time_modes(engines, (images[1:2], images[2:3]), args.rounds, args.steps)
    peak = {k: statistics.median(v) for k, v in peaks.items()}
    rows = []
    for m in modes:
        med = statistics.median(ms[m])
        gflops = step_flop / med / 1e6
        rows.append({
            "mode": m, "options": {k: v for k, v in vars(options[m]).items() if v != getattr(EngineOptions(), k)},
            "p50_ms": med, "fps": 1e3 / med, "round_ms": ms[m],
            # the least disturbed steps: on a shared machine closer to the undisturbed cost than the median
            "min_ms": min(every[m]), "p10_ms": statistics.quantiles(every[m], n=10)[0],
            "first_call_s": first_call_s[m], "compiled": engines[m]._compiled,  # False: compile fell back to eager
            "ratio_vs_fp32": statistics.median(f / x for f, x in zip(ms["fp32"], ms[m], strict=True)),
            "gflops": gflops, "frac_fp32_peak": gflops / peak["fp32"], "frac_bf16_peak": gflops / peak["bf16"],
            "pointmap_rel_diff": pointmap[m],
        })

    bags = {}
    synth = synthetic_bag(args.work, "easy", 1000, args.bag_frames, wh)
    for label, bag in (("synthetic easy seed 1000", synth), ("real 7scenes_redkitchen_dev", args.real_bag)):
        per_mode = {m: bag_metrics(engines[m], bag, args.bag_frames) for m in modes}
        # the harness's own floor: fp32 again (any difference is run-to-run, not precision)
        per_mode["fp32 (rerun)"] = bag_metrics(engines["fp32"], bag, args.bag_frames)
        base = per_mode["fp32"]
        for m in per_mode:
            per_mode[m]["rel_change"] = {k: (per_mode[m][k] - base[k]) / base[k] if base[k] else None
                                         for k in ("epe", "abs_rel", "ate") if per_mode[m][k] is not None}
        bags[label] = {"path": str(bag), "frames": args.bag_frames, "modes": per_mode}
        print(f"[bench] {label}: " + ", ".join(f"{m} {per_mode[m]}" for m in modes), file=sys.stderr, flush=True)

    return {
        "checkpoint": str(args.checkpoint), "preset_wh": list(wh), "threads": args.threads,
        "torch": torch.__version__, "machine": platform.machine(), "cpu_flags": _cpu_flags(),
        "step_gflop": step_flop / 1e9, "step_gflop_by_op": {k: v / 1e9 for k, v in by_op.items()},
        "peak_gflops": peak, "peak_rounds": peaks, "rounds": args.rounds, "steps_per_round": args.steps,
        "pointmap_frames": args.pointmap_frames, "rows": rows, "bags": bags,
        "note": "shared 2-core machine: other jobs ran at the same time; compare the ratios, not absolute times",
    }


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"))


def to_markdown(res: dict) -> str:
    p = res["peak_gflops"]
    lines = [f"small_256 ({res['preset_wh'][0]}×{res['preset_wh'][1]}), {res['threads']} threads, torch "
             f"{res['torch']}; {res['step_gflop']:.2f} GFLOP a step; measured GEMM peak fp32 {p['fp32']:.0f}, "
             f"bf16 {p['bf16']:.0f} GFLOP/s, int8 {p['int8']:.0f} GOP/s (medians of {res['rounds']} rounds)", "",
             "| mode | p50 ms | frames/s | × vs fp32 | p10 ms | GFLOP/s | % fp32 peak | % bf16 peak | Δ track pts | "
             "Δ recon pts |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        d = r["pointmap_rel_diff"]
        lines.append(f"| {r['mode']} | {r['p50_ms']:.1f} | {r['fps']:.1f} | {r['ratio_vs_fp32']:.2f} | "
                     f"{r['p10_ms']:.1f} | "
                     f"{r['gflops']:.0f} | {100 * r['frac_fp32_peak']:.0f} | {100 * r['frac_bf16_peak']:.0f} | "
                     f"{100 * d['track_pts']:.3f} % | {100 * d['recon_pts']:.3f} % |")
    for label, bag in res["bags"].items():
        lines += ["", f"{label} ({bag['frames']} frames, protocol mode)", "",
                  "| mode | EPE m | AbsRel | ATE m | Δ EPE | Δ AbsRel | Δ ATE |", "|---|---|---|---|---|---|---|"]
        for m, v in bag["modes"].items():
            def f(x: float | None) -> str:
                return "–" if x is None else f"{x:.4f}"

            def rc(k: str, v: dict = v) -> str:
                x = v["rel_change"].get(k)
                return "–" if x is None else f"{100 * x:+.2f} %"
            lines.append(f"| {m} | {f(v['epe'])} | {f(v['abs_rel'])} | {f(v['ate'])} | {rc('epe')} | "
                         f"{rc('abs_rel')} | {rc('ate')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    ap.add_argument("--modes", nargs="+", choices=sorted(CPU_MODES), help="default: all (fp32 always included)")
    ap.add_argument("--compile", action="store_true", help="add bf16+nhwc with the engine's torch.compile option")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per mode per round")
    ap.add_argument("--pointmap-frames", type=int, default=16)
    ap.add_argument("--bag-frames", type=int, default=32)
    ap.add_argument("--real-bag", type=Path, default=REAL_BAG)
    ap.add_argument("--work", type=Path, default=Path("out/bench_cpu_precision"), help="synthetic bag cache")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
