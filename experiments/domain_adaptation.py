#!/usr/bin/env python3
"""Domain-level adaptation, measured: adapt the shipped model offline (st4rtrack-adapt) on recorded bags of one
synthetic "domain" (a preset: its nuisances and texture family fixed), then score held-out scenes of the same domain
with st4rtrack-eval's harness — base vs domain checkpoint, each with online TTA off and on.

  .venv/bin/python experiments/domain_adaptation.py --preset shift --train-seeds 3000 3001 3002 3003 \
      --test-seeds 1000 1001 1002 --json results/domain_adaptation/domain_adaptation.json

Bags, checkpoints and results are cached under --work (keyed by the base model's bytes, the config, and the offline
stage's bags and schedule); rerunning continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapt_sweep import run_one

from st4rtrack_ros.cli.adapt import main as adapt_main
from st4rtrack_ros.data.bag_io import synthetic_bag
from st4rtrack_ros.evaluation.report import mean_sd
from st4rtrack_ros.settings import default_checkpoint, load_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint(), help="the base model")
    ap.add_argument("--preset", default="shift")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[3000, 3001, 3002, 3003])
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--train-frames", type=int, default=48)
    ap.add_argument("--frames", type=int, default=64, help="frames per held-out sequence")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--every", type=int, default=4, help="frames between offline rounds")
    ap.add_argument("--steps", type=int, default=10, help="optimiser steps per offline round")
    ap.add_argument("--lr", type=float, default=1e-4, help="offline and online learning rate")
    ap.add_argument("--config", type=Path, help="parameters file whose adaptation section both stages use")
    ap.add_argument("--val-seeds", type=int, nargs="*", default=[],
                    help="scenes of the domain kept out of the rounds; a round is kept only if it lowers their loss "
                         "(st4rtrack-adapt --val-bags)")
    ap.add_argument("--max-drift", type=float, default=0.0,
                    help="offline stage only: trust region around the base weights (st4rtrack-adapt --max-drift)")
    ap.add_argument("--depth-labels", action="store_true", help="RGB-D: the bags' depth images are labels")
    ap.add_argument("--work", type=Path, default=Path("out/domain"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    base = args.checkpoint
    bags = args.work / "bags"
    train_bags = [synthetic_bag(bags, args.preset, s, args.train_frames) for s in args.train_seeds]
    # caches belong to one base model (a folder checkpoint: keyed by its path)
    base_id = hashlib.sha256(base.read_bytes() if base.is_file() else str(base.resolve()).encode()).hexdigest()[:8]
    tag = f"{args.config.stem if args.config else 'defaults'}{'_rgbd' if args.depth_labels else ''}_{base_id}"
    if args.lr != ap.get_default("lr"):  # the online stage uses it too, so base rows depend on it
        tag += f"_lr{args.lr:g}"
    # the offline stage's inputs name its checkpoint: a cached one is reused only for the same bags and schedule
    offline = json.dumps([args.train_seeds, args.train_frames, args.epochs, args.every, args.steps])
    variant = (f"_drift{args.max_drift:g}" if args.max_drift else "") + ("_val" + "-".join(map(str, args.val_seeds))
                                                                      if args.val_seeds else "") + \
        "_" + hashlib.sha256(offline.encode()).hexdigest()[:6]
    val_bags = [synthetic_bag(bags, args.preset, s, args.train_frames) for s in args.val_seeds]
    domain = args.work / f"{args.preset}_{tag}{variant}_domain.safetensors"
    if not domain.exists():
        t0 = time.perf_counter()
        rc = adapt_main([*map(str, train_bags), "--out", str(domain), "--checkpoint", str(base), "--device", "cpu",
                         "--epochs", str(args.epochs), "--every", str(args.every), "--steps", str(args.steps),
                         "--lr", str(args.lr), "--max-drift", str(args.max_drift),
                         *(["--val-bags", *map(str, val_bags)] if val_bags else []),
                         *(["--config", str(args.config)] if args.config else []),
                         *(["--depth-labels"] if args.depth_labels else [])])
        assert rc == 0, "st4rtrack-adapt failed"
        print(f"[domain] adapted in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    section = load_section(args.config, "adaptation") if args.config else {}
    online = {**section, "every_n_frames": 8, "steps": 10, "lr": args.lr}  # the adaptation table's online schedule
    online.pop("enabled", None)
    rows: dict[str, list[dict]] = {}
    for name, ckpt, adapt in [("base, TTA off", base, None), ("domain, TTA off", domain, None),
                              ("base, TTA on", base, online), ("domain, TTA on", domain, online)]:
        rows[name] = []
        for seed in args.test_seeds:
            run_tag = tag + (variant if ckpt == domain else "")  # base rows are shared by every offline variant
            cache = args.work / "eval" / run_tag / name.replace(", ", "_").replace(" ", "_") / f"{seed}.json"
            if not cache.exists():
                bag = synthetic_bag(args.work / "bags", args.preset, seed, args.frames, (256, 160))
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(run_one(ckpt, bag, adapt, "protocol", args.frames, args.depth_labels),
                                              indent=1))
            rows[name].append(json.loads(cache.read_text()))
            r = rows[name][-1]
            print(f"[domain] {name} seed {seed}: EPE {r['epe']:.3f} AbsRel {r['abs_rel']:.3f}", file=sys.stderr,
                  flush=True)
    print(f"| {args.preset}: held-out seeds {args.test_seeds} | track EPE | EPE dynamic | APD | AbsRel | ATE |")
    print("|---|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {mean_sd([r['epe'] for r in rs])} | {mean_sd([r['epe_dynamic'] for r in rs])} | "
              f"{mean_sd([r['apd'] for r in rs])} | {mean_sd([r['abs_rel'] for r in rs])} | "
              f"{mean_sd([r['ate'] for r in rs])} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
