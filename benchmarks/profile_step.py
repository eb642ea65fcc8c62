#!/usr/bin/env python3
"""Where the streaming step's time goes on a GPU, and which engine options pay (torch + numpy only).

Prints: the p50 step latency (bf16 + CUDA graph) for each option set, side by side in one process; the time of the
encoder, the decoders and the heads, each captured in its own CUDA graph; and the top CUDA kernels of one eager
step from torch.profiler. Usage: python benchmarks/profile_step.py --preset vitl_512 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine


def graph_ms(fn, iters: int = 30) -> float:
    """Median time of ``fn`` replayed as a CUDA graph (after warm-up on a side stream)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="vitl_512")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = preset(args.preset)
    h, w = cfg.image_hw
    anchor = torch.rand(1, 3, h, w, device=dev) * 2 - 1
    frame = torch.rand(1, 3, h, w, device=dev) * 2 - 1
    res: dict = {"preset": args.preset, "device": torch.cuda.get_device_name(dev), "variants": {}, "parts": {}}

    variants = {
        "bf16+graph": dict(cudnn_benchmark=False),
        "+cudnn_benchmark": dict(cudnn_benchmark=True),
        "+channels_last_heads": dict(channels_last_heads=True),
        "+bf16_weights": dict(bf16_weights=True),
        "+parallel_decoders": dict(parallel_decoders=True),
        "all (EngineOptions.fastest)": dict(channels_last_heads=True, bf16_weights=True, parallel_decoders=True),
    }
    for name, kw in variants.items():
        torch.manual_seed(0)
        with torch.device(dev):
            net = St4RTrackNet(cfg).eval()
        eng = StreamingEngine(net, EngineOptions(precision="bf16", cuda_graph=True, **kw))
        eng.set_anchor(anchor)
        eng.step(frame)
        times = []
        for _ in range(40):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            eng.step(frame)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        res["variants"][name] = statistics.median(times)
        print(f"{name:24s} p50 {res['variants'][name]:.2f} ms", flush=True)

    # Parts, with the last variant's model (each part in its own graph).
    grid = net.grid_hw(frame)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        tok_a = net.encode(anchor)
        tok_f = net.encode(frame)
        dec1, dec2 = net.decode(tok_a, tok_f, grid)
        res["parts"]["encoder"] = graph_ms(lambda: net.encode(frame))
        res["parts"]["decoders"] = graph_ms(lambda: net.decode(tok_a, tok_f, grid))
        side = torch.cuda.Stream()
        res["parts"]["decoders (2 streams)"] = graph_ms(lambda: net.decode(tok_a, tok_f, grid, side))
        res["parts"]["heads"] = graph_ms(lambda: net.heads(dec1, dec2, grid))
        res["parts"]["one head"] = graph_ms(lambda: net.downstream_head1([t.float() for t in dec1], grid))
    for k, v in res["parts"].items():
        print(f"part {k:22s} {v:.2f} ms", flush=True)

    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            eng._step_eager(frame)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)
    print(table)
    res["profile_table"] = table
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
