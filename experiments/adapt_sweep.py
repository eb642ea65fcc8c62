#!/usr/bin/env python3
"""Which adaptation schedule moves the metrics? Online St4RTrack+ TTA configurations against adaptation off, on
held-out synthetic sequences, with the same harness as st4rtrack-eval (protocol or online mode).

  .venv/bin/python experiments/adapt_sweep.py --presets shift --seeds 1000 1001 1002 \
      --variant off --variant 'dense:every_n_frames=8,steps=10,lr=1e-4'

A variant is ``name:key=value,...`` over the ``adaptation`` section (``off`` = no adaptation). Results are cached per
(variant, preset, seed) under --work; the table goes to stdout (and --json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


from st4rtrack_ros.adaptation.worker import AdaptationWorker
from st4rtrack_ros.data.bag_io import BenchmarkBagReader, synthetic_bag
from st4rtrack_ros.evaluation.report import compute_metrics, mean_sd
from st4rtrack_ros.evaluation.runner import RunConfig, RunResult, protocol_config, run_frames
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.settings import default_checkpoint
from st4rtrack_ros.tracking.tracker import TrackerConfig


def parse_variant(text: str) -> tuple[str, dict | None]:
    name, _, rest = text.partition(":")
    if name == "off":
        return name, None
    kv = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        head, _, sub = k.strip().partition(".")  # loss.use_sigma2=false → {"loss": {"use_sigma2": False}}
        if sub:
            kv.setdefault(head, {})[sub] = _value(v.strip())
        else:
            kv[head] = _value(v.strip())
    return name, kv


def _value(text: str) -> object:
    """int, float (``1e-4`` too, which YAML 1.1 reads as a string), else YAML."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def replay(ckpt: Path, bag: Path, adapt: dict | None, mode: str, frames: int, depth: bool
           ) -> tuple[RunResult, AdaptationWorker | None, float]:
    """One bag through the st4rtrack-eval harness on the CPU (seeded; adaptation rounds synchronous):
    the run, the worker (None without adaptation) and the wall time."""
    torch.manual_seed(0)
    tcfg = TrackerConfig()
    if mode == "protocol":
        tcfg = protocol_config(tcfg)
    tracker = build_tracker(TrackerSpec(checkpoint=str(ckpt), device="cpu", fit=tcfg.fit, tracking=tcfg,
                                        adaptation=None if adapt is None else
                                        {**adapt, "enabled": True, "synchronous": True}))
    worker: AdaptationWorker | None = tracker.adaptation  # type: ignore[assignment]
    t0 = time.perf_counter()
    with BenchmarkBagReader(bag) as reader:
        run = run_frames(reader.frames(), tracker, RunConfig(max_frames=frames, mode=mode, progress_every=0,
                                                              depth_to_tracker=depth))
    return run, worker, time.perf_counter() - t0


def run_one(ckpt: Path, bag: Path, adapt: dict | None, mode: str, frames: int, depth: bool) -> dict:
    run, worker, wall = replay(ckpt, bag, adapt, mode, frames, depth)
    m = compute_metrics(run)
    out = {"epe": m["tracking"]["median"]["epe"], "epe_dynamic": m["tracking"]["median"].get("epe_dynamic"),
           "apd": m["tracking"]["median"]["apd"], "abs_rel": m["depth"]["abs_rel"], "ate": m["camera"]["ate"],
           "wall_s": wall}
    if worker is not None:
        st = worker.status()
        out.update(rounds=st["rounds"], accepted=st["accepted"], drift=worker.max_relative_drift(),
                   held_out=[(r.loss_before, r.loss_after) for r in worker.history])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    ap.add_argument("--presets", nargs="+", default=["shift"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--mode", choices=("protocol", "online"), default="protocol")
    ap.add_argument("--depth", action="store_true", help="hand the bag's depth to the tracker (RGB-D labels)")
    ap.add_argument("--variant", action="append", default=[], help="name:key=value,... or 'off'")
    ap.add_argument("--work", type=Path, default=Path("out/adapt_sweep"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    variants = [parse_variant(v) for v in (args.variant or ["off"])]
    table: dict = {}
    for preset in args.presets:
        for name, adapt in variants:
            rows = []
            for seed in args.seeds:
                tag = f"{args.mode}{'_d' if args.depth else ''}_{args.checkpoint.stem}"
                cache = args.work / tag / name / f"{preset}_{seed}.json"
                if cache.exists():
                    rows.append(json.loads(cache.read_text()))
                    continue
                bag = synthetic_bag(args.work / "bags", preset, seed, args.frames, (256, 160))
                r = run_one(args.checkpoint, bag, adapt, args.mode, args.frames, args.depth)
                r["variant"] = {"name": name, "adaptation": adapt}
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(r, indent=1))
                print(f"[sweep] {preset} {seed} {name}: EPE {r['epe']:.3f} dyn {r['epe_dynamic']} "
                      f"AbsRel {r['abs_rel']:.3f} rounds {r.get('accepted', '-')}/{r.get('rounds', '-')} "
                      f"({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)
                rows.append(r)
            table[(preset, name)] = rows
    print("| preset | variant | EPE | EPE dynamic | AbsRel | ATE | accepted/rounds |")
    print("|---|---|---|---|---|---|---|")
    for (preset, name), rows in table.items():
        acc = ", ".join(f"{r['accepted']}/{r['rounds']}" for r in rows) if "rounds" in rows[0] else "–"
        cols = " | ".join(mean_sd([r[k] for r in rows]) for k in ("epe", "epe_dynamic", "abs_rel", "ate"))
        print(f"| {preset} | {name} | {cols} | {acc} |")
    if args.json:
        args.json.write_text(json.dumps({f"{p}/{n}": r for (p, n), r in table.items()}, indent=1))


if __name__ == "__main__":
    main()
