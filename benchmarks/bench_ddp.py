"""Data-parallel training throughput: samples/s of ``st4rtrack-train`` in 1 vs N processes, same global batch.

Each variant trains the same run (preset, global batch, data) for a few steps; rank 0 times the optimizer steps after
a warm-up. Variants are named ``{processes}p{threads}t`` plus options: ``-w1`` one DataLoader rendering worker per
process, ``-bf16`` bf16 autocast, ``-ckpt`` activation checkpointing. One process runs as a plain
``st4rtrack-train`` would (no torchrun); more run under ``python -m torch.distributed.run --standalone`` (gloo on
the CPU, NCCL with ``--device cuda``). Variants are run in turn, round after round, so that a shared machine's load
hits them alike; ratios are taken within a round, then the median over rounds.

  .venv/bin/python benchmarks/bench_ddp.py --json results/benchmarks/bench_ddp_cpu.json            # this CPU
  python benchmarks/bench_ddp.py --device cuda --preset vitl_512 --batch 16 \\
      --variants 1p8t 8p8t --json out.json                                           # one node of 8 GPUs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_VARIANT = re.compile(r"^(\d+)p(\d+)t((?:-w\d+|-bf16|-ckpt)*)$")


def parse_variant(name: str) -> dict:
    m = _VARIANT.match(name)
    if not m:
        raise argparse.ArgumentTypeError(f"variant {name!r}: expected e.g. 2p1t, 1p1t-w1, 1p2t-bf16, 1p2t-ckpt")
    opts = m.group(3)
    w = re.search(r"-w(\d+)", opts)
    return {"procs": int(m.group(1)), "threads": int(m.group(2)), "workers": int(w.group(1)) if w else 0,
            "amp": "bf16" if "-bf16" in opts else "none", "ckpt": "-ckpt" in opts}


def worker(a: argparse.Namespace) -> None:
    """One process of a variant (rank 0 writes the step times)."""
    import torch

    from st4rtrack_ros.model.config import preset
    from st4rtrack_ros.training.config import TrainConfig
    from st4rtrack_ros.training.data import DataConfig
    from st4rtrack_ros.training.loop import Trainer

    torch.set_num_threads(a.threads)
    w, h = preset(a.preset).img_size
    cfg = TrainConfig(model_preset=a.preset, steps=a.steps, batch_size=a.batch, warmup_steps=2, eval_every=0,
                      ckpt_every=0, log_every=10_000, num_workers=a.workers, amp=a.amp, grad_checkpoint=a.ckpt,
                      device=a.device, data=DataConfig(width=w, height=h, pairs_per_seq=a.pairs_per_seq))
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)

        def on_step(_: Trainer, __: dict) -> None:
            sync()
            times.append(time.perf_counter())

        res = trainer.run(on_step=on_step)
        if res.is_main:  # peak memory of rank 0: the GPU's allocator, or the process's resident set on the CPU
            peak = torch.cuda.max_memory_allocated(trainer.device) if trainer.device.type == "cuda" else \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            Path(a.worker).write_text(json.dumps({"times": times, "losses": res.losses,
                                                  "world": trainer.dist.world, "peak_mib": peak / 2**20}))


def run_variant(v: dict, a: argparse.Namespace, out: Path) -> dict:
    args = [__file__, "--worker", str(out), "--preset", a.preset, "--batch", str(a.batch), "--steps", str(a.steps),
            "--pairs-per-seq", str(a.pairs_per_seq), "--threads", str(v["threads"]), "--workers", str(v["workers"]),
            "--amp", v["amp"], "--device", a.device, *(["--ckpt"] if v["ckpt"] else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(v["threads"]), "PYTHONUNBUFFERED": "1"}
    if v["procs"] == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(v["procs"]),
               *args]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-4000:]}")
    r = json.loads(out.read_text())
    t = r["times"][a.warmup - 1:]  # the clock starts at the end of the last warm-up step
    sps = a.batch * (len(t) - 1) / (t[-1] - t[0])
    return {"samples_per_s": sps, "s_per_step": (t[-1] - t[0]) / (len(t) - 1), "wall_s": wall,
            "load_avg_1min_before": load, "final_loss": r["losses"][-1], "world": r["world"],
            "rank0_peak_mib": r["peak_mib"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["1p1t-w1", "2p1t", "1p1t-w1-bf16"],
                    help="the first is the baseline of the ratios (default, for a 2-core CPU: the documented best "
                         "single-process setting, 2 processes, and it with bf16)")
    ap.add_argument("--preset", default="small_256")
    ap.add_argument("--batch", type=int, default=4, help="global batch (pairs per optimizer step)")
    ap.add_argument("--pairs-per-seq", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3, help="steps not timed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    # worker mode (internal)
    ap.add_argument("--worker", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--amp", default="none")
    ap.add_argument("--ckpt", action="store_true")
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return 0
    names = list(dict.fromkeys(a.variants))
    variants = {n: parse_variant(n) for n in names}
    import torch

    from st4rtrack_ros.training.loop import bf16_cpu_supported

    results: dict[str, list[dict]] = {n: [] for n in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for n, v in variants.items():
                r = run_variant(v, a, Path(tmp) / f"{n}.json")
                results[n].append(r)
                print(f"round {rnd + 1}/{a.rounds} {n}: {r['samples_per_s']:.2f} samples/s "
                      f"({r['s_per_step']:.3f} s/step, load {r['load_avg_1min_before']:.1f})", file=sys.stderr,
                      flush=True)
    base = names[0]
    ratios = {f"{n} / {base}": {"per_round": [x["samples_per_s"] / y["samples_per_s"]
                                              for x, y in zip(results[n], results[base], strict=True)]}
              for n in names[1:]}
    for r in ratios.values():
        r["median"] = statistics.median(r["per_round"])
    summary = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "what": "samples/s of st4rtrack-train at a fixed global batch; variants {procs}p{threads}t[-w workers]"
                "[-bf16][-ckpt]; ratios taken within a round, median over rounds",
        "note": "measured on a SHARED machine (other developers' jobs ran at the same time: see the load averages); "
                "read the ratios, not the absolute numbers",
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "cpu_bf16": bf16_cpu_supported(), "device": a.device},
        "setup": {"preset": a.preset, "global_batch": a.batch, "pairs_per_seq": a.pairs_per_seq, "steps": a.steps,
                  "warmup_steps_untimed": a.warmup, "rounds": a.rounds},
        "variants": {n: {**variants[n], "runs": results[n],
                         "median_samples_per_s": statistics.median(x["samples_per_s"] for x in results[n])}
                     for n in names},
        "ratios": ratios,
    }
    text = json.dumps(summary, indent=1)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(text + "\n")
    print(json.dumps({n: round(v["median_samples_per_s"], 3) for n, v in summary["variants"].items()}
                     | {k: round(r["median"], 3) for k, r in ratios.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
