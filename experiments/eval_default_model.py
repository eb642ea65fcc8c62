#!/usr/bin/env python3
"""The shipped default model on held-out synthetic sequences of every preset, against trivial baselines scored by
the same harness (st4rtrack-eval), and adaptation on vs off — the tables of docs/default_model.md.

Held-out = scene seeds 1000+ (training uses 10000+, validation 0..n_val-1). Bags are cached under --work.

  .venv/bin/python experiments/eval_default_model.py --seeds 1000 1001 1002 \\
      --json results/default_model/default_model_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.cli.eval import main as eval_main
from st4rtrack_ros.data.bag_io import synthetic_bag
from st4rtrack_ros.evaluation.report import mean_sd
from st4rtrack_ros.settings import default_checkpoint

PRESETS = ("easy", "occlusion", "fast", "shift")  # the held-out protocol of docs/default_model.md



def run_eval(bag: Path, out: Path, ckpt: Path, extra: list[str]) -> dict:
    if not (out / "metrics.json").exists():
        # cached by path: give each checkpoint its own --work
        assert eval_main([str(bag), "--out", str(out), "--checkpoint", str(ckpt), "--device", "cpu", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--work", type=Path, default=Path("out/eval_default"))
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), help="synthetic presets of the protocol table")
    ap.add_argument("--adapt-presets", nargs="*", default=["shift", "occlusion"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = (256, 160)
    rows: dict[str, dict] = {}
    for preset in args.presets:
        per = []
        for seed in args.seeds:
            bag = synthetic_bag(args.work / "bags", preset, seed, args.frames, size)
            per.append(run_eval(bag, args.work / "protocol" / f"{preset}_{seed}", args.checkpoint, []))
            print(f"[eval-default] {preset} seed {seed} done", file=sys.stderr, flush=True)
        rows[preset] = {
            "depth_abs_rel": [m["depth"]["abs_rel"] for m in per],
            "depth_abs_rel_constant": [m["baselines"]["constant_depth"]["abs_rel"] for m in per],
            "ate": [m["camera"]["ate"] for m in per],
            "ate_static": [m["baselines"]["static_camera"]["ate"] for m in per],
            "epe": [m["tracking"]["median"]["epe"] for m in per],
            "epe_static": [m["baselines"]["static_points"]["epe"] for m in per],
            "apd": [m["tracking"]["median"]["apd"] for m in per],
            "apd_static": [m["baselines"]["static_points"]["apd"] for m in per],
            "epe_static_true": [m["baselines"]["static_true_points"]["epe"] for m in per],
            "epe_dynamic": [m["tracking"]["median"]["epe_dynamic"] for m in per],
        }
    adapt: dict[str, dict] = {}
    for preset in args.adapt_presets:
        off, on = [], []
        for seed in args.seeds:
            bag = synthetic_bag(args.work / "bags", preset, seed, args.frames, size)
            off.append(run_eval(bag, args.work / "online" / f"{preset}_{seed}", args.checkpoint, ["--mode", "online"]))
            on.append(run_eval(bag, args.work / "online_adapt" / f"{preset}_{seed}", args.checkpoint,
                               ["--mode", "online", "--adapt"]))
            print(f"[eval-default] adaptation {preset} seed {seed} done", file=sys.stderr, flush=True)
        adapt[preset] = {
            "epe_off": [m["tracking"]["median"]["epe"] for m in off],
            "epe_on": [m["tracking"]["median"]["epe"] for m in on],
            "abs_rel_off": [m["depth"]["abs_rel"] for m in off], "abs_rel_on": [m["depth"]["abs_rel"] for m in on],
            "ate_off": [m["camera"]["ate"] for m in off], "ate_on": [m["camera"]["ate"] for m in on],
            "rounds": [m["meta"]["adaptation"]["rounds"] for m in on],
            "accepted": [m["meta"]["adaptation"]["accepted"] for m in on],
        }
    lines = ["| preset | depth AbsRel (model) | AbsRel (constant depth) | ATE m (model) | ATE (static camera) | "
             "track EPE m (model) | EPE (static points) | EPE (true static points) | APD (model) | "
             "APD (static points) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in rows.items():
        lines.append(f"| {p} | {mean_sd(r['depth_abs_rel'])} | {mean_sd(r['depth_abs_rel_constant'])} | "
                     f"{mean_sd(r['ate'])} | {mean_sd(r['ate_static'])} | {mean_sd(r['epe'])} | "
                     f"{mean_sd(r['epe_static'])} | {mean_sd(r['epe_static_true'])} | {mean_sd(r['apd'])} | "
                     f"{mean_sd(r['apd_static'])} |")
    if adapt:
        lines += ["", "| preset (online mode) | track EPE off | EPE on | AbsRel off | AbsRel on | ATE off | ATE on | "
                  "rounds accepted/run |", "|---|---|---|---|---|---|---|---|"]
        for p, a in adapt.items():
            acc = ", ".join(f"{x}/{y}" for x, y in zip(a["accepted"], a["rounds"], strict=True))
            lines.append(f"| {p} | {mean_sd(a['epe_off'])} | {mean_sd(a['epe_on'])} | {mean_sd(a['abs_rel_off'])} | "
                         f"{mean_sd(a['abs_rel_on'])} | {mean_sd(a['ate_off'])} | {mean_sd(a['ate_on'])} | {acc} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "seeds": args.seeds, "frames": args.frames,
                                         "protocol": rows,
                                         "adaptation": adapt, "table": lines}, indent=1))


if __name__ == "__main__":
    main()
