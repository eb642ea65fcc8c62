#!/usr/bin/env python3
"""Correctness checks that need a GPU (torch + numpy only), run before the GPU benchmarks.

1. The streaming step makes no host synchronisation: it runs under ``torch.cuda.set_sync_debug_mode("error")``
   (fp32 and bf16), and CUDA-graph capture succeeds.
2. Golden parity on the GPU (fp32, TF32 off) when ``--golden DIR`` holds the tiny golden files.
3. Streaming == pair on the GPU at the official size (fp32, TF32 off), and bf16+graph stays close to fp32.
Prints one line per check and exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.model.config import ModelConfig, preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", type=Path)
    ap.add_argument("--preset", default="vitl_512")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print("device:", torch.cuda.get_device_name(dev), "torch", torch.__version__, flush=True)

    if args.golden:
        meta = json.loads((args.golden / "tiny_public_meta.json").read_text())
        tiny = St4RTrackNet(ModelConfig.from_dict(meta["model"]))
        tiny.load_state_dict(torch.load(args.golden / "tiny_public_state_dict.pt", weights_only=True))
        tiny = tiny.to(dev).eval()
        io = {k: torch.from_numpy(v).to(dev) for k, v in np.load(args.golden / "tiny_public_io.npz").items()}
        with torch.no_grad():
            out = tiny(io["img1"], io["img2"])
            tok = (tiny.encode(io["img1"]) - io["enc_tokens1"]).abs().max().item()
        pairs = (("track_pts", "pts3d_1"), ("track_conf", "conf_1"), ("recon_pts", "pts3d_2"), ("recon_conf", "conf_2"))
        errs = {n: (getattr(out, n) - io[r]).abs().max().item() for n, r in pairs}
        check("golden parity on GPU", tok < 1e-5 and max(errs.values()) < 1e-4, f"tokens {tok:.2e}, outputs {errs}")

    torch.manual_seed(0)
    cfg = preset(args.preset)
    with torch.device(dev):
        net = St4RTrackNet(cfg).eval()
    h, w = cfg.image_hw
    anchor = torch.rand(1, 3, h, w, device=dev) * 2 - 1
    frames = torch.rand(2, 3, h, w, device=dev) * 2 - 1

    for prec in ("fp32", "bf16"):
        eng = StreamingEngine(net, EngineOptions(precision=prec))
        eng.set_anchor(anchor)
        eng.step(frames)  # warm-up outside the sync check (allocator, cuBLAS handles)
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            eng.step(frames.flip(0))  # another tensor: the engine would reuse the encoder tokens of the same one
            ok, detail = True, "no synchronising call in the step"
        except RuntimeError as e:
            ok, detail = False, str(e).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode(0)
        check(f"no host sync in step ({prec})", ok, detail)

    fp32 = StreamingEngine(net)
    fp32.set_anchor(anchor)
    with torch.inference_mode():
        ref = net(anchor.expand(2, -1, -1, -1), frames)
    got = fp32.step(frames)
    err = max((getattr(got, n) - getattr(ref, n)).abs().max().item() for n in ("track_pts", "recon_pts"))
    scale = ref.recon_pts.abs().max().item()
    check("streaming == pair (fp32, GPU)", err <= 1e-4 * max(1.0, scale), f"max abs {err:.2e} (scale {scale:.2f})")

    fast = StreamingEngine(net, EngineOptions(precision="bf16", cuda_graph=True))
    fast.set_anchor(anchor)
    first = fast.step(frames)
    second = fast.step(frames)
    captured = bool(fast._graphs) and not fast._graph_failed
    rel = ((first.recon_pts - got.recon_pts).norm(dim=-1).mean() / got.recon_pts.norm(dim=-1).mean()).item()
    same = (first.recon_pts - second.recon_pts).abs().max().item()
    check("bf16 + CUDA graph", captured and rel < 0.05 and same == 0.0,
          f"captured={captured}, mean rel. diff vs fp32 {rel:.3%}, replay repeatable (max diff {same})")
    # A new anchor must flow into the captured graph (static buffer updated in place).
    fast.set_anchor(frames[:1])
    fp32.set_anchor(frames[:1])
    rel2 = ((fast.step(frames).recon_pts - fp32.step(frames).recon_pts).norm(dim=-1).mean() /
            fp32.step(frames).recon_pts.norm(dim=-1).mean()).item()
    check("graph follows a new anchor", rel2 < 0.05, f"mean rel. diff vs fp32 {rel2:.3%}")
    # The fastest option set (bf16 weights, NHWC heads, two decoder streams) on its own copy of the model.
    net2 = St4RTrackNet(cfg).to(dev).eval()
    net2.load_state_dict(net.state_dict())
    fastest = StreamingEngine(net2, EngineOptions.fastest(dev))
    fastest.set_anchor(anchor)
    fp32.set_anchor(anchor)
    ref32 = fp32.step(frames)
    outs = [fastest.step(frames) for _ in range(3)]
    captured = bool(fastest._graphs) and not fastest._graph_failed
    rel3 = max(((o.recon_pts - ref32.recon_pts).norm(dim=-1).mean() / ref32.recon_pts.norm(dim=-1).mean()).item()
               for o in outs)
    rep = max((o.track_pts - outs[0].track_pts).abs().max().item() for o in outs)
    check("EngineOptions.fastest", captured and rel3 < 0.05 and rep == 0.0,
          f"captured={captured}, worst mean rel. diff vs fp32 {rel3:.3%}, replays identical (max diff {rep})")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
