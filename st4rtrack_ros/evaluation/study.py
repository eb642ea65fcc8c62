"""``st4rtrack-study CONFIG --out DIR``: St4RTrack vs St4RTrack+ under occlusion, fast motion and noisy pseudo-labels.

Every cell (preset × pseudo-label corruption × seed × variant) starts from the same checkpoint, streams the same
synthetic bag through the online tracker with adaptation rounds run synchronously (reproducible), and is scored by
the evaluation harness. Variants differ only in their loss switches (or run no adaptation). Results are appended to
``results.jsonl`` as cells finish (a rerun skips finished cells), then summarised: ``study.md`` (mean ± sd over
seeds), error-vs-corruption and error-vs-preset plots, and the held-out loss before/after each round (stability).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from st4rtrack_ros.adaptation.worker import AdaptationConfig, AdaptationWorker
from st4rtrack_ros.data.bag_io import read_frames, write_sequence
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.report import compute_metrics
from st4rtrack_ros.evaluation.runner import RunConfig, run_frames
from st4rtrack_ros.model.checkpoint import load_checkpoint
from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine
from st4rtrack_ros.settings import check_keys, default_checkpoint
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

# Loss switches of each variant (LossConfig overrides); None = no adaptation.
VANILLA = {"use_occlusion_mask": False, "use_sigma2": False, "traj_pseudo_visibility": False,
           "align_pseudo_visibility": True}
DEFAULT_VARIANTS: dict[str, dict[str, Any] | None] = {
    "no adaptation": None,
    "St4RTrack (vanilla)": VANILLA,
    "+ occlusion mask": {**VANILLA, "use_occlusion_mask": True},
    "+ σ² weighting": {**VANILLA, "use_sigma2": True},
    "St4RTrack+ (both)": {},
}


@dataclasses.dataclass
class StudyConfig:
    checkpoint: str = ""  # empty: the embedded default model
    presets: list[str] = dataclasses.field(default_factory=lambda: ["easy", "occlusion", "fast", "shift"])
    corruption: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.1, 0.3])  # 2D tracks replaced
    depth_noise: float = 0.1  # σ of multiplicative depth-label noise (applied with corruption > 0)
    depth_holes: float = 0.2  # fraction of depth-label pixels removed (applied with corruption > 0)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [2000, 2001, 2002])  # held-out scene seeds
    frames: int = 48
    size: list[int] = dataclasses.field(default_factory=lambda: [256, 160])
    variants: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    adaptation: dict[str, Any] = dataclasses.field(default_factory=lambda: {"every_n_frames": 8, "steps": 4})
    tracking: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "cpu"

    @classmethod
    def from_yaml(cls, path: Path) -> StudyConfig:
        d = yaml.safe_load(path.read_text()) or {}
        check_keys(cls, d, "study keys")
        return cls(**d)


def _cell_key(preset: str, corruption: float, seed: int, variant: str) -> str:
    return f"{preset}|{corruption}|{seed}|{variant}"


def run_cell(cfg: StudyConfig, bag: Path, corruption: float, variant: str) -> dict[str, Any]:
    """One cell: fresh model, tracker (+ worker unless 'no adaptation'), harness metrics and round history."""
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else default_checkpoint()
    net = load_checkpoint(ckpt, device=cfg.device)
    loss = cfg.variants[variant]
    worker = None
    if loss is not None:
        noisy = corruption > 0
        ad = AdaptationConfig.from_dict({**cfg.adaptation, "enabled": True, "synchronous": True, "loss": loss,
                                         "corrupt_tracks": corruption,
                                         "depth_noise": cfg.depth_noise if noisy else 0.0,
                                         "depth_holes": cfg.depth_holes if noisy else 0.0})
        worker = AdaptationWorker(net, ad)
    tracker_cfg = TrackerConfig.from_dict({**cfg.tracking, "use_depth_scale": False})
    tracker = OnlineTracker(StreamingEngine(net, EngineOptions.fastest(cfg.device)), tracker_cfg, worker)
    t0 = time.perf_counter()
    run = run_frames(read_frames(bag), tracker, RunConfig(max_frames=0, mode="online", progress_every=0,
                                                          depth_to_tracker=True))
    m = compute_metrics(run)
    hist = [dataclasses.asdict(r) for r in worker.history] if worker else []
    diverged = any(not math.isfinite(h["loss_after"]) or (math.isfinite(h["loss_before"]) and h["loss_before"] > 0
                                                         and h["loss_after"] > 10 * h["loss_before"]) for h in hist)
    tr = m.get("tracking", {}).get("median", {})
    return {
        "epe": tr.get("epe"), "apd": tr.get("apd"), "epe_dynamic": tr.get("epe_dynamic"),
        "apd_dynamic": tr.get("apd_dynamic"), "abs_rel": m.get("depth", {}).get("abs_rel"),
        "delta_1_25": m.get("depth", {}).get("delta_1_25"), "ate": m.get("camera", {}).get("ate"),
        "rounds": worker.rounds if worker else 0, "accepted": worker.accepted if worker else 0,
        "rolled_back": worker.rolled_back if worker else 0, "diverged": diverged, "history": hist,
        "seconds": time.perf_counter() - t0,
    }


def run_study(cfg: StudyConfig, out: Path, log: Any = sys.stderr) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    cells = list(itertools.product(cfg.presets, cfg.corruption, cfg.seeds, cfg.variants))
    w, h = cfg.size
    t0 = time.perf_counter()
    with results_path.open("a") as f:
        for n, (preset, corr, seed, variant) in enumerate(cells, 1):
            key = _cell_key(preset, corr, seed, variant)
            if key in done:
                continue
            bag = out / "bags" / f"{preset}_{seed}_{cfg.frames}_{w}x{h}"
            if not (bag / "metadata.yaml").exists():
                write_sequence(make_sequence(preset, cfg.frames, seed, width=w, height=h), bag)
            same = next((done[k] for k in (_cell_key(preset, c, seed, variant) for c in cfg.corruption)
                         if k in done), None) if cfg.variants[variant] is None else None
            # Without adaptation nothing reads the pseudo-labels: one run serves every corruption level.
            cell = {k: v for k, v in same.items() if k not in ("key", "corruption")} if same else \
                run_cell(cfg, bag, corr, variant)
            r = {**cell, "key": key, "preset": preset, "corruption": corr, "seed": seed, "variant": variant}
            f.write(json.dumps(r) + "\n")
            f.flush()
            done[key] = r
            elapsed = time.perf_counter() - t0
            print(f"[study] {n}/{len(cells)} {key}: EPE {r['epe']}, rounds {r['accepted']}/{r['rounds']} accepted "
                  f"({elapsed:.0f} s)", file=log, flush=True)
    results = [done[_cell_key(*c)] for c in cells]
    write_summary(cfg, results, out)
    return results


def _ms(vals: list[Any]) -> str:
    v = [x for x in vals if x is not None]
    if not v:
        return "–"
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _paired(results: list[dict[str, Any]], variant: str, ref: str, key: str) -> list[float]:
    """``key`` of ``variant`` minus that of ``ref`` over the cells (preset, corruption, seed) both have."""
    by = {(r["preset"], r["corruption"], r["seed"], r["variant"]): r.get(key) for r in results}
    return [by[(p, c, s, variant)] - val for (p, c, s, v), val in by.items()
            if v == ref and val is not None and by.get((p, c, s, variant)) is not None]


def write_summary(cfg: StudyConfig, results: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(cfg.variants)
    lines = ["# St4RTrack vs St4RTrack+ study", "",
             f"presets {cfg.presets}, corruption {cfg.corruption} (depth noise {cfg.depth_noise}, holes "
             f"{cfg.depth_holes} when > 0), seeds {cfg.seeds}, {cfg.frames} frames at {cfg.size[0]}×{cfg.size[1]}, "
             f"adaptation {cfg.adaptation}", "",
             "Tracking EPE (m, median-scale aligned; mean ± sd over seeds):", "",
             "| preset | corruption | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for preset, corr in itertools.product(cfg.presets, cfg.corruption):
        cells = [_ms([r["epe"] for r in results if r["preset"] == preset and r["corruption"] == corr
                      and r["variant"] == v]) for v in variants]
        lines.append(f"| {preset} | {corr:.0%} | " + " | ".join(cells) + " |")
    lines += ["", "All cells per variant: EPE, APD, dynamic EPE, AbsRel, ATE, rounds accepted / rolled back, "
              "diverged:", "", "| variant | EPE | APD | EPE dyn | AbsRel | ATE | accepted | rolled back | diverged |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v in variants:
        rs = [r for r in results if r["variant"] == v]
        lines.append(f"| {v} | {_ms([r['epe'] for r in rs])} | {_ms([r['apd'] for r in rs])} | "
                     f"{_ms([r['epe_dynamic'] for r in rs])} | {_ms([r['abs_rel'] for r in rs])} | "
                     f"{_ms([r['ate'] for r in rs])} | {sum(r['accepted'] for r in rs)} | "
                     f"{sum(r['rolled_back'] for r in rs)} | {sum(r['diverged'] for r in rs)} |")
    lines += ["", "Paired differences (same preset, corruption and seed; negative = lower error; wins = cells "
              "where the variant's error is lower):", "",
              "| variant | ΔEPE vs no adaptation | wins | ΔEPE vs vanilla | wins | ΔAbsRel vs no adaptation | wins |",
              "|---|---|---|---|---|---|---|"]
    ref_none, ref_van = variants[0], (variants[1] if len(variants) > 1 else variants[0])
    for v in variants[1:]:
        cols = []
        for ref, key in ((ref_none, "epe"), (ref_van, "epe"), (ref_none, "abs_rel")):
            d = _paired(results, v, ref, key)
            cols += [f"{statistics.mean(d):+.4f}" if d else "–", f"{sum(x < 0 for x in d)}/{len(d)}"]
        lines.append(f"| {v} | " + " | ".join(cols) + " |")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, v in enumerate(variants):  # one colour per variant in every panel
        ys = [statistics.mean([r["epe"] for r in results if r["variant"] == v and r["corruption"] == c
                               and r["epe"] is not None] or [math.nan]) for c in cfg.corruption]
        axes[0].plot([100 * c for c in cfg.corruption], ys, "o-", color=f"C{i}", label=v)
        ps = [statistics.mean([r["epe"] for r in results if r["variant"] == v and r["preset"] == p
                               and r["epe"] is not None] or [math.nan]) for p in cfg.presets]
        axes[1].plot(cfg.presets, ps, "o-", color=f"C{i}", label=v)
        hist = [h for r in results if r["variant"] == v for h in r["history"]]
        if hist:
            axes[2].plot([h["loss_after"] / h["loss_before"] if h["loss_before"] else math.nan for h in hist], ".",
                         color=f"C{i}", label=v)
    axes[0].set(xlabel="corrupted 2D pseudo-tracks (%)", ylabel="track EPE (m)", title="error vs corruption")
    axes[1].set(xlabel="preset", ylabel="track EPE (m)", title="error vs preset (occlusion, motion, shift)")
    axes[2].set(xlabel="round", ylabel="held-out loss after / before", title="round stability")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "study.png", dpi=100)
    plt.close(fig)
    lines += ["", "![study](study.png)", ""]
    path = out / "study.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="st4rtrack-study", description=__doc__)
    ap.add_argument("config", type=Path, help="study YAML (config/study.yaml: the full study)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        cfg = StudyConfig.from_yaml(args.config)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as e:
        print(f"st4rtrack-study: {e}", file=sys.stderr)
        return 2
    run_study(cfg, args.out)
    print(f"[study] summary: {args.out / 'study.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
