#!/usr/bin/env python3
"""Network speed and memory, side by side in one process: pair mode vs the streaming engine and its options.

Modes (per-frame latency, batch 1, median and p90, and peak memory):
  pair            both images encoded every frame (the official protocol), fp32 — the baseline
  stream          anchor tokens cached, one encoder pass per frame, fp32
  stream+bf16     + bf16 autocast for encoder and decoders (heads fp32)          [CUDA only]
  stream+bf16+graph  + CUDA-graph replay of the per-frame step                   [CUDA only]
  stream fastest  EngineOptions.fastest: + bf16 weights, NHWC heads, decoder branches on two streams [CUDA]
  pair fastest    the pair protocol with the same options                        [CUDA only]
  stream+compile  torch.compile of encoder and decoder+heads (opt-in: --compile)
  re-anchor pass  a step, then that frame made the anchor and stepped again (the tracker's re-anchoring), with
                  both heads and with head 1 only (``step(recon=False)``, what the tracker runs)
then offline throughput (frames/s) of the streaming step at batch 8 and 32 with the best options for the device.

Needs only torch and numpy (runs on the GPU machine, which has no ROS). Examples:
  .venv/bin/python benchmarks/bench_model.py                      # small preset on the CPU
  python benchmarks/bench_model.py --preset vitl_512 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _time(fn, device: torch.device, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _row(name: str, times: list[float], batch: int, device: torch.device, base_ms: float | None) -> dict:
    p50 = statistics.median(times)
    p90 = sorted(times)[max(0, round(0.9 * len(times)) - 1)]
    return {
        "mode": name, "batch": batch, "p50_ms": p50, "p90_ms": p90, "fps": 1e3 * batch / p50,
        "peak_mem_mib": _peak_mib(device), "speedup_vs_pair": (base_ms / (p50 / batch)) if base_ms else 1.0,
    }


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    with torch.device(device):
        net = St4RTrackNet(cfg).eval()  # random weights: speed does not depend on their values
    h, w = cfg.image_hw
    anchor = torch.rand(1, 3, h, w, device=device) * 2 - 1
    frame = torch.rand(1, 3, h, w, device=device) * 2 - 1
    # The engine reuses the encoder tokens of the tensor it stepped last (re-anchoring): timed steps alternate two
    # frames so that every step encodes its frame, as a new camera frame does.
    frames_ab = itertools.cycle((frame, torch.rand(1, 3, h, w, device=device) * 2 - 1))
    if device.type == "cuda":
        # fp32 matmuls/convs on tensor cores (TF32); recorded in the output. --no-tf32 for strict fp32.
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    rows: list[dict] = []

    def pair():
        with torch.inference_mode():
            net(anchor, frame)

    _peak_reset(device)
    rows.append(_row("pair", _time(pair, device, args.iters, args.warmup), 1, device, None))
    base = rows[0]["p50_ms"]

    modes: list[tuple[str, EngineOptions]] = [("stream", EngineOptions())]
    best = EngineOptions.fastest(device)
    if device.type == "cuda":
        modes += [("stream+bf16", EngineOptions(precision="bf16")),
                  ("stream+bf16+graph", EngineOptions(precision="bf16", cuda_graph=True)),
                  ("stream fastest", best),
                  ("pair fastest", dataclasses.replace(best, cache_anchor=False))]
    if args.compile:
        modes.append(("stream+compile", dataclasses.replace(best, cuda_graph=False, compile=True)))
    for name, opts in modes:
        engine = StreamingEngine(net, opts)
        engine.set_anchor(anchor)
        _peak_reset(device)
        t_start = time.perf_counter()
        engine.step(frame)  # first call pays for capture/compilation/cuDNN autotuning; reported separately
        _sync(device)
        first_ms = (time.perf_counter() - t_start) * 1e3
        first_peak = _peak_mib(device)
        _peak_reset(device)
        row = _row(name, _time(lambda e=engine: e.step(next(frames_ab)), device, args.iters, args.warmup), 1, device,
                   base)
        row["first_call_ms"] = first_ms
        row["first_call_peak_mib"] = first_peak
        rows.append(row)
        print(f"  {name}: p50 {row['p50_ms']:.2f} ms", file=sys.stderr, flush=True)

    # Re-anchoring on the frame just stepped, as the tracker does it: set_anchor(f) + step(f) reuse f's encoder
    # tokens; the new anchor's own pass needs head 1 only (head 2's maps are not used there).
    engine = StreamingEngine(net, best)
    engine.set_anchor(anchor)
    for name, recon in (("step + re-anchor pass, both heads", True),
                        ("step + re-anchor pass, head 1 only (the tracker's)", False)):
        def reanchor(e=engine, r=recon):
            f = next(frames_ab)
            e.step(f)
            e.set_anchor(f)
            e.step(f, recon=r)
        row = _row(name, _time(reanchor, device, args.iters, args.warmup), 1, device, base)
        rows.append(row)  # a normal step + the re-anchor pass: subtract the "stream" row for the pass alone
        print(f"  {name}: p50 {row['p50_ms']:.2f} ms (step + re-anchor pass)", file=sys.stderr, flush=True)

    for b in args.batches:
        engine = StreamingEngine(net, best)
        engine.set_anchor(anchor)
        batches = itertools.cycle([torch.rand(b, 3, h, w, device=device) * 2 - 1 for _ in range(2)])
        _peak_reset(device)
        engine.step(next(batches))
        times = _time(lambda e=engine, fs=batches: e.step(next(fs)), device, max(3, args.iters // 4), 1)
        rows.append(_row(f"stream batch {b} ({'fastest' if device.type == 'cuda' else 'fp32'})", times, b,
                         device, base))

    return {
        "preset": args.preset, "image_wh": list(cfg.img_size), "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or
        platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in net.parameters()), "tf32": bool(args.tf32 and device.type == "cuda"),
        "rows": rows,
    }


def to_markdown(res: dict) -> str:
    lines = [f"**{res['preset']}** ({res['image_wh'][0]}×{res['image_wh'][1]}, {res['params'] / 1e6:.1f} M params) on "
             f"{res['device_name']} ({res['device']}, torch {res['torch']}, {res['threads']} threads, "
             f"TF32 {'on' if res['tf32'] else 'off'})", "",
             "| mode | batch | p50 ms | p90 ms | frames/s | × vs pair (per frame) | peak mem MiB | first call ms "
             "(peak MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        first = f"{r['first_call_ms']:.0f} ({r['first_call_peak_mib']:.0f})" if "first_call_ms" in r else "–"
        lines.append(f"| {r['mode']} | {r['batch']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['fps']:.1f} | "
                     f"{r['speedup_vs_pair']:.2f} | {r['peak_mem_mib']:.0f} | {first} |")
    mem_note = "GPU: torch max allocated in steady state; the first call (graph capture, cuDNN autotuning) " \
        "is reported apart" if res["device"].startswith("cuda") else \
        "CPU: process peak RSS so far (monotonic)"
    lines += ["", f"Memory column: {mem_note}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small_256")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="*", default=[8, 32])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow first call)")
    ap.add_argument("--no-tf32", dest="tf32", action="store_false", help="strict fp32 matmuls/convs on CUDA")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    res = run(args)
    print(to_markdown(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
