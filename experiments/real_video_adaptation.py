#!/usr/bin/env python3
"""Self-supervision on real videos: the shipped default adapted offline (``st4rtrack-adapt``, pseudo-labels only:
KLT tracks, no depth) on real videos, with the vanilla St4RTrack loss and with St4RTrack+ (+ occlusion mask + σ²),
then scored by ``st4rtrack-real-bench`` on the real RGB-D bag (never trained on), on a held-out real video
(label-free measures) and on the held-out synthetic presets, against the base model.

The two loss variants are the clean ablation's "vanilla" and "+ mask + σ²" rows (experiments/configs/
study_ablation.yaml): they differ in exactly the two St4RTrack+ switches. Same bags, rounds, steps and acceptance
rule (each round validated on held-out frames of the training windows and on the validation video).

  nice -n 10 .venv/bin/python experiments/real_video_adaptation.py \\
      --json results/real_benchmark/real_video_adaptation.json

Runs are cached under --work (a checkpoint or a benchmark folder that exists is reused).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from st4rtrack_ros.settings import default_checkpoint  # noqa: E402

# The clean ablation's two neighbours (LossConfig switches); everything else at the node's defaults.
VARIANTS: dict[str, dict[str, bool]] = {
    "vanilla": {"use_occlusion_mask": False, "use_sigma2": False, "traj_pseudo_visibility": False},
    "+ mask + σ²": {"use_occlusion_mask": True, "use_sigma2": True, "traj_pseudo_visibility": False},
}


def _tool(name: str) -> str:
    """A console script of this venv (installed beside the interpreter)."""
    return str(Path(sys.executable).with_name(name))


def _run(cmd: list[str]) -> None:
    print("[real-video] " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def adapt(args: argparse.Namespace, variant: str, loss: dict[str, bool]) -> Path:
    """Adapt the base on the training videos with this loss variant; returns the domain checkpoint (cached)."""
    out = args.work / f"{_slug(variant)}.safetensors"
    if out.exists():
        return out
    cfg = args.work / f"{_slug(variant)}.yaml"
    cfg.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"adaptation": {"enabled": True, "loss": loss}}}},
                                  allow_unicode=True))
    t0 = time.perf_counter()
    _run([_tool("st4rtrack-adapt"), *(str(args.data / b) for b in args.train),
          "--val-bags", *(str(args.data / b) for b in args.val), "--out", str(out),
          "--checkpoint", str(args.checkpoint),
          "--config", str(cfg), "--epochs", str(args.epochs), "--every", str(args.every), "--steps", str(args.steps),
          "--lr", str(args.lr), "--max-frames", str(args.max_frames), "--device", "cpu"])
    print(f"[real-video] {variant}: adapted in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def bench(args: argparse.Namespace, name: str, ckpt: Path) -> dict[str, Any]:
    """``st4rtrack-real-bench`` of one checkpoint on the scoring bags (cached)."""
    out = args.work / f"bench_{_slug(name)}"
    if not (out / "real_benchmark.json").exists():
        _run([_tool("st4rtrack-real-bench"), "--out", str(out), "--checkpoint", str(ckpt), "--data", str(args.data),
              "--bags", *args.score, *args.val, "--presets", *args.presets, "--frames", str(args.frames),
              "--modes", "protocol", "--synthetic-modes", "protocol", "--threads", "1",
              "--work", str(args.work / "synthetic_bags")])
    return json.loads((out / "real_benchmark.json").read_text())


def summary(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per bag: depth AbsRel, ATE, APD (Sim(3)), RPE rotation; KLT reprojection residual (label-free)."""
    rows = {}
    for e in report["bags"]:
        m = e["protocol"]["metrics"]
        row = {"depth_abs_rel": (m.get("depth") or {}).get("abs_rel"), "ate_m": (m.get("camera") or {}).get("ate"),
               "apd_sim3": ((m.get("tracking") or {}).get("sim3") or {}).get("apd"),
               "rpe_rot_deg": (m.get("camera") or {}).get("rpe_rot")}
        free = e["protocol"].get("label_free") or {}
        row["klt_reprojection_px"] = (free.get("reprojection_px") or {}).get("model_median")
        rows[e["bag"]] = row
    return rows


def rounds(ckpt: Path) -> dict[str, Any]:
    """The round statistics st4rtrack-adapt wrote into the checkpoint's metadata."""
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: meta[k] for k in meta if k not in ("config", "format")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=default_checkpoint(), help="the base model")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real")
    ap.add_argument("--train", nargs="+", default=["sam2_dog", "sam2_bedroom", "udacity_highway"],
                    help="real videos adapted on (pseudo-labels only)")
    ap.add_argument("--val", nargs="+", default=["davis_sheep"], help="real video that only validates rounds")
    ap.add_argument("--score", nargs="+", default=["7scenes_redkitchen_dev"], help="real bags with ground truth")
    ap.add_argument("--presets", nargs="+", default=["easy", "occlusion", "fast", "shift"])
    ap.add_argument("--max-frames", type=int, default=64, help="frames per training video")
    ap.add_argument("--frames", type=int, default=64, help="frames per scored bag")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--work", type=Path, default=Path("out/real_video_adaptation"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    missing = [b for b in (*args.train, *args.val, *args.score) if not (args.data / b / "metadata.yaml").exists()]
    if missing:
        print(f"real bags missing under {args.data}: {missing}", file=sys.stderr)
        return 2
    ckpts = {"base (no adaptation)": args.checkpoint}
    for name, loss in VARIANTS.items():
        ckpts[name] = adapt(args, name, loss)
    results = {name: {"checkpoint": str(path), "bags": summary(bench(args, name, path)),
                      **({"adaptation": rounds(path)} if name in VARIANTS else {})}
               for name, path in ckpts.items()}
    bags = list(next(iter(results.values()))["bags"])
    lines = ["| bag | model | depth AbsRel | ATE m | APD Sim(3) | RPE rot ° | KLT reproj. px |",
             "|---|---|---|---|---|---|---|"]

    def f(v: Any, fmt: str = ".3f") -> str:
        return "–" if v is None else format(v, fmt)

    for bag in bags:
        for name, r in results.items():
            row = r["bags"][bag]
            lines.append(f"| {bag} | {name} | {f(row['depth_abs_rel'])} | {f(row['ate_m'])} | "
                         f"{f(row['apd_sim3'], '.1f')} | {f(row['rpe_rot_deg'], '.2f')} | "
                         f"{f(row['klt_reprojection_px'], '.2f')} |")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "variants": VARIANTS,
                                         "train": args.train, "val": args.val, "results": results, "table": lines},
                                        indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
