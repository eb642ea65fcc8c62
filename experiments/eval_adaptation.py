#!/usr/bin/env python3
"""Adaptation on vs off through the evaluation CLI (st4rtrack-eval), per seed, on held-out synthetic sequences —
the proof table of docs/adaptation.md.

  .venv/bin/python experiments/eval_adaptation.py --presets shift occlusion --seeds 1000 1001 1002 \
      --config experiments/configs/adapt_rgbd.yaml --depth-labels --json results/adaptation/adaptation_eval.json

Both runs of a pair get the same flags (mode, depth labels); only ``--adapt`` differs. Results are cached under --work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_default_model import run_eval

from st4rtrack_ros.data.bag_io import synthetic_bag
from st4rtrack_ros.settings import default_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    ap.add_argument("--presets", nargs="+", default=["shift", "occlusion"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--mode", choices=("protocol", "online"), default="protocol")
    ap.add_argument("--config", type=Path, help="parameters file with the adaptation section to evaluate")
    ap.add_argument("--depth-labels", action="store_true", help="RGB-D: the bag's depth goes to the tracker")
    ap.add_argument("--work", type=Path, default=Path("out/eval_adaptation"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    common = ["--mode", args.mode, *(["--config", str(args.config)] if args.config else []),
              *(["--depth-labels"] if args.depth_labels else [])]
    tag = f"{args.mode}{'_rgbd' if args.depth_labels else ''}_{args.config.stem if args.config else 'defaults'}"
    rows = []
    for preset in args.presets:
        for seed in args.seeds:
            bag = synthetic_bag(args.work / "bags", preset, seed, args.frames, (256, 160))
            off = run_eval(bag, args.work / tag / "off" / f"{preset}_{seed}", args.checkpoint, common)
            on = run_eval(bag, args.work / tag / "on" / f"{preset}_{seed}", args.checkpoint, [*common, "--adapt"])
            row = {"preset": preset, "seed": seed, "rounds": on["meta"]["adaptation"]["rounds"],
                   "accepted": on["meta"]["adaptation"]["accepted"]}
            for name, key in (("epe", ("tracking", "median", "epe")), ("epe_dynamic", ("tracking", "median",
                              "epe_dynamic")), ("apd", ("tracking", "median", "apd")),
                              ("abs_rel", ("depth", "abs_rel")), ("ate", ("camera", "ate"))):
                for side, m in (("off", off), ("on", on)):
                    v = m
                    for k in key:
                        v = v[k]
                    row[f"{name}_{side}"] = v
            rows.append(row)
            print(f"[eval-adapt] {preset} {seed}: EPE {row['epe_off']:.3f} → {row['epe_on']:.3f}", file=sys.stderr,
                  flush=True)
    lines = ["| preset | seed | track EPE off | EPE on | EPE dynamic off | on | APD off | on | AbsRel off | on | "
             "rounds accepted |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['seed']} | {r['epe_off']:.3f} | {r['epe_on']:.3f} | "
                     f"{r['epe_dynamic_off']:.3f} | {r['epe_dynamic_on']:.3f} | {r['apd_off']:.2f} | "
                     f"{r['apd_on']:.2f} | "
                     f"{r['abs_rel_off']:.3f} | {r['abs_rel_on']:.3f} | {r['accepted']}/{r['rounds']} |")
    for preset in args.presets:
        rs = [r for r in rows if r["preset"] == preset]
        rel = [r["epe_on"] / r["epe_off"] - 1 for r in rs]
        lines.append(f"| {preset} | mean | {statistics.mean(r['epe_off'] for r in rs):.3f} | "
                     f"{statistics.mean(r['epe_on'] for r in rs):.3f} ({100 * statistics.mean(rel):+.1f} %, "
                     f"{sum(x < 0 for x in rel)}/{len(rel)} seeds lower) | | | | | | | |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                         "table": lines}, indent=1))


if __name__ == "__main__":
    main()
