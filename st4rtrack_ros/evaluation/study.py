"""The robustness study (``st4rtrack-study``): St4RTrack vs St4RTrack+ under occlusion, fast motion and noisy
pseudo-labels.

Every cell (preset × pseudo-label corruption × seed × variant) starts from the same checkpoint, streams the same
synthetic bag through the online tracker with adaptation rounds run synchronously (reproducible), and is scored by
the evaluation harness. Variants differ only in their loss switches (or run no adaptation). Results are appended to
``results.jsonl`` as cells finish (a rerun skips finished cells), then summarised: ``study.md`` (mean ± sd over
seeds), error-vs-corruption and error-vs-preset plots, and the held-out loss before/after each round (stability).

A clean ablation (experiments/configs/study_ablation.yaml) names each variant's ``neighbours``: the variant it
differs from by exactly one resolved :class:`LossConfig` field (checked at load), and the summary adds the paired
difference to that neighbour with its spread. ``gate: false`` accepts every round with finite weights and loss, so
a table shows what the losses do rather than what the held-out gate lets through.

``labels: oracle`` (experiments/configs/study_oracle.yaml) trains on the bag's ground truth instead of KLT tracks
(evaluation.oracle_labels; the corruption still applies, after it): the upper bound of what adaptation could gain with
perfect labels.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.adaptation.losses import LossConfig
from st4rtrack_ros.data.bag_io import read_frames, write_sequence
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.label_corruption import LabelCorruption
from st4rtrack_ros.evaluation.oracle_labels import OracleLabels
from st4rtrack_ros.evaluation.real_benchmark import default_real_dir
from st4rtrack_ros.evaluation.report import compute_metrics
from st4rtrack_ros.evaluation.runner import RunConfig, run_frames
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import preprocess
from st4rtrack_ros.model.uncertainty import sigma2_from_conf
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.settings import check_keys

#: Where the adapted cells' labels come from: KLT tracks + the bag's depth images, or the bag's ground truth.
LABELS = ("klt", "oracle")

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
    # variant → its neighbour: the variant it differs from by exactly one resolved LossConfig field (checked here,
    # so an ablation row cannot silently change two things); the summary reports the paired difference to it.
    neighbours: dict[str, str] = dataclasses.field(default_factory=dict)
    # False: the held-out validation gate is off, every round with finite weights and loss is accepted. Why: each
    # variant's gate uses its own loss, so with the gate on a variant can "win" by keeping fewer rounds.
    gate: bool = True
    # "klt": the worker's own pseudo-labels (KLT 2D tracks, the bag's depth images as the robot's depth); "oracle":
    # the bag's ground truth (evaluation.oracle_labels), the upper bound. The corruption applies to either.
    labels: str = "klt"
    # Real bags (folder names under $ST4R_REAL_DATA or ../shared/data/real, or paths): one cell per corruption level
    # and variant (seed 0), on the first ``frames`` frames; scored where the bag has ground truth, and otherwise
    # reported by what needs none (rounds, held-out losses, drift).
    real_bags: list[str] = dataclasses.field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """The presets, then the real bags by folder name: the rows of the summary."""
        return [*self.presets, *(Path(b).name for b in self.real_bags)]

    def cells(self) -> list[tuple[str, float, int, str, Path | None]]:
        """(source, corruption, seed, variant, real bag path or None for a synthetic preset) of every cell."""
        synthetic = [(p, c, s, v, None) for p, c, s, v in
                     itertools.product(self.presets, self.corruption, self.seeds, self.variants)]
        root = default_real_dir()
        real = [(Path(b).name, c, 0, v, Path(b) if Path(b).is_absolute() or Path(b).exists() else root / b)
                for b, c, v in itertools.product(self.real_bags, self.corruption, self.variants)]
        return synthetic + real

    def __post_init__(self) -> None:
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {self.labels!r}")
        for v, n in self.neighbours.items():
            if v not in self.variants or n not in self.variants:
                raise ValueError(f"neighbours: {v!r} → {n!r} names a variant that is not in variants")
            diff = switch_diff(self.loss_config(n), self.loss_config(v))
            if len(diff) != 1:
                raise ValueError(f"variant {v!r} must differ from its neighbour {n!r} by exactly one switch, "
                                 f"differs by {len(diff)}: {diff}")

    @classmethod
    def from_yaml(cls, path: Path) -> StudyConfig:
        d = yaml.safe_load(path.read_text()) or {}
        check_keys(cls, d, "study keys")
        return cls(**d)

    def adaptation_config(self, variant: str) -> AdaptationConfig | None:
        """The worker configuration of a variant's cells (None: no adaptation)."""
        loss = self.variants[variant]
        if loss is None:
            return None
        gate = {} if self.gate else {"min_improvement": -math.inf}  # after < before · ∞: any finite round passes
        return AdaptationConfig.from_dict({**self.adaptation, **gate, "enabled": True, "synchronous": True,
                                           "loss": loss})

    def label_corruption(self, corruption: float) -> LabelCorruption | None:
        """The pseudo-label corruption of a cell: ``corruption`` of the 2D tracks replaced and, when that is > 0,
        the study's depth noise and holes (None: clean labels)."""
        noisy = corruption > 0
        lc = LabelCorruption(tracks=corruption, depth_noise=self.depth_noise if noisy else 0.0,
                             depth_holes=self.depth_holes if noisy else 0.0)
        return lc if lc.active else None

    def tracker_spec(self, variant: str, corruption: float = 0.0, bag: Path | None = None) -> TrackerSpec:
        """What a cell runs: the study's checkpoint on its device, the tracker without the depth image's metric
        scale (the harness aligns scale), and the variant's adaptation worker, with ``labels: oracle`` labelled by
        the ground truth of ``bag`` (the cell's bag; required then)."""
        fit = self.tracking.get("fit", "crop")
        adaptation = self.adaptation_config(variant)
        source = None
        if self.labels == "oracle" and adaptation is not None:
            if bag is None:
                raise ValueError("labels: oracle needs the cell's bag (its ground truth labels the rounds)")
            source = OracleLabels.from_bag(bag, fit)
        return TrackerSpec(checkpoint=self.checkpoint, device=self.device, fit=fit,
                           tracking={**self.tracking, "use_depth_scale": False}, adaptation=adaptation,
                           label_transform=self.label_corruption(corruption), label_source=source)

    def loss_config(self, variant: str) -> LossConfig | None:
        """The loss a variant's worker optimises, resolved as the worker resolves it (its defaults + overrides)."""
        ad = self.adaptation_config(variant)
        return None if ad is None else ad.loss_config()


def switch_diff(a: LossConfig | None, b: LossConfig | None) -> dict[str, tuple[Any, Any]]:
    """The LossConfig fields in which ``a`` and ``b`` differ, name → (a's, b's); None (no adaptation) differs from
    any loss by the whole loss, reported as one pseudo-field ``adaptation``."""
    if a is None or b is None:
        return {} if a is b else {"adaptation": (a is not None, b is not None)}
    return {f.name: (getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(LossConfig)
            if getattr(a, f.name) != getattr(b, f.name)}


def _cell_key(preset: str, corruption: float, seed: int, variant: str) -> str:
    return f"{preset}|{corruption}|{seed}|{variant}"


def run_cell(cfg: StudyConfig, bag: Path, corruption: float, variant: str) -> dict[str, Any]:
    """One cell: fresh model, tracker (+ worker unless 'no adaptation'), harness metrics and round history."""
    tracker = build_tracker(cfg.tracker_spec(variant, corruption, bag))
    net, worker = tracker.engine.net, tracker.adaptation
    t0 = time.perf_counter()
    run = run_frames(read_frames(bag), tracker, RunConfig(max_frames=cfg.frames, mode="online", progress_every=0,
                                                          depth_to_tracker=True))
    m = compute_metrics(run)
    hist = [dataclasses.asdict(r) for r in worker.history] if worker else []
    diverged = any(not math.isfinite(h["loss_after"]) or (math.isfinite(h["loss_before"]) and h["loss_before"] > 0
                                                         and h["loss_after"] > 10 * h["loss_before"]) for h in hist)
    tr = m.get("tracking", {}).get("median", {})
    # Last frame whose scored tracks still move: a ground-truth track ends (holds its position) when the tracker
    # re-anchors, and a round after that frame cannot change EPE.
    same = np.isclose(run.pred_tracks[1:], run.pred_tracks[:-1], rtol=0.0, atol=0.0, equal_nan=True)
    moved = np.flatnonzero(~same.all(axis=(1, 2)))
    return {
        "epe": tr.get("epe"), "apd": tr.get("apd"), "epe_dynamic": tr.get("epe_dynamic"),
        "apd_dynamic": tr.get("apd_dynamic"), "abs_rel": m.get("depth", {}).get("abs_rel"),
        "delta_1_25": m.get("depth", {}).get("delta_1_25"), "ate": m.get("camera", {}).get("ate"),
        "labels": cfg.labels if worker else None,  # no adaptation reads no labels
        "rounds": worker.rounds if worker else 0, "accepted": worker.accepted if worker else 0,
        "rolled_back": worker.rolled_back if worker else 0, "diverged": diverged, "history": hist,
        "tracks_moving_until": int(moved[-1]) + 1 if len(moved) else 0,
        "drift": worker.max_relative_drift() if worker else 0.0, **_sigma2_probe(net, bag, cfg.device, cfg.frames),
        "seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def _sigma2_probe(net: St4RTrackNet, bag: Path, device: str, max_frames: int) -> dict[str, float]:
    """Mean σ² (``sigma2_from_conf``) of both heads on the pair (first frame, last frame of the run) after the run:
    where a learned σ² went (the no-adaptation cell of the same bag gives the base weights' value)."""
    frames = list(itertools.islice(read_frames(bag), max_frames or None))
    wh = tuple(net.config.img_size)
    x = torch.stack([preprocess(f.image, wh)[0] for f in (frames[0], frames[-1])]).to(device)
    out = net(x[:1], x[1:])
    return {"sigma2_track": float(sigma2_from_conf(out.track_conf).mean()),
            "sigma2_recon": float(sigma2_from_conf(out.recon_conf).mean())}


def _reusable(cfg: StudyConfig, cell: dict[str, Any]) -> bool:
    """Whether a stored cell answers for ``cfg``: no adaptation reads no labels; an adapted cell must have been
    labelled as ``cfg.labels`` says (cells stored before the switch existed used KLT)."""
    return cfg.variants[cell["variant"]] is None or cell.get("labels", "klt") == cfg.labels


def run_study(cfg: StudyConfig, out: Path, log: Any = sys.stderr) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    cells = cfg.cells()
    w, h = cfg.size
    t0 = time.perf_counter()
    with results_path.open("a") as f:
        for n, (preset, corr, seed, variant, real) in enumerate(cells, 1):
            key = _cell_key(preset, corr, seed, variant)
            if key in done and _reusable(cfg, done[key]):
                continue
            bag = real or out / "bags" / f"{preset}_{seed}_{cfg.frames}_{w}x{h}"
            if real is not None and not (real / "metadata.yaml").exists():
                raise FileNotFoundError(f"real bag not found: {real} (set $ST4R_REAL_DATA)")
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
    results = [done[_cell_key(*c[:4])] for c in cells]
    write_summary(cfg, results, out)
    return results


def _ms(vals: list[Any]) -> str:
    v = [x for x in vals if x is not None]
    if not v:
        return "–"
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _spread(d: list[float], digits: int = 4) -> str:
    """Mean ± sd of paired differences and the 95 % t-interval of their mean: "+0.0120 ± 0.0300 [−0.0100, +0.0340]"."""
    if not d:
        return "–"
    m = statistics.mean(d)
    if len(d) < 2:
        return f"{m:+.{digits}f}"
    from scipy.stats import t as student_t  # pinned in requirements/base.txt

    sd = statistics.stdev(d)
    half = float(student_t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
    return f"{m:+.{digits}f} ± {sd:.{digits}f} [{m - half:+.{digits}f}, {m + half:+.{digits}f}]"


def _paired(results: list[dict[str, Any]], variant: str, ref: str, key: str) -> list[float]:
    """``key`` of ``variant`` minus that of ``ref`` over the cells (preset, corruption, seed) both have."""
    by = {(r["preset"], r["corruption"], r["seed"], r["variant"]): r.get(key) for r in results}
    return [by[(p, c, s, variant)] - val for (p, c, s, v), val in by.items()
            if v == ref and val is not None and by.get((p, c, s, variant)) is not None]


def _per_condition(cfg: StudyConfig, results: list[dict[str, Any]], variants: list[str]) -> list[str]:
    """Markdown lines: the paired differences to no adaptation (and to the first adapted variant) per preset and
    corruption level, pairs over seeds, mean ± sd [95 % t-interval]."""
    ref_none, ref_van = variants[0], variants[1]
    lines = ["", f"Per preset and corruption: each variant against no adaptation and against {ref_van} (paired over "
             "seeds, mean ± sd [95 % t-interval of the mean]; wins = seeds where the variant is lower):", "",
             f"| preset | corruption | variant | ΔEPE vs no adaptation | wins | ΔAbsRel | ΔATE | ΔEPE vs {ref_van} | "
             "wins |", "|---|---|---|---|---|---|---|---|---|"]
    for preset, corr in itertools.product(cfg.sources, cfg.corruption):
        rs = [r for r in results if r["preset"] == preset and r["corruption"] == corr]
        for v in variants[1:]:
            d, dv = _paired(rs, v, ref_none, "epe"), _paired(rs, v, ref_van, "epe")
            van = (_spread(dv), f"{sum(x < 0 for x in dv)}/{len(dv)}") if v != ref_van else ("–", "–")
            lines.append(f"| {preset} | {corr:.0%} | {v} | {_spread(d)} | {sum(x < 0 for x in d)}/{len(d)} | "
                         f"{_spread(_paired(rs, v, ref_none, 'abs_rel'))} | {_spread(_paired(rs, v, ref_none, 'ate'))}"
                         f" | {van[0]} | {van[1]} |")
    return lines


def write_summary(cfg: StudyConfig, results: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(cfg.variants)
    real = f", real bags {[Path(b).name for b in cfg.real_bags]} (seed 0)" if cfg.real_bags else ""
    lines = ["# St4RTrack vs St4RTrack+ study", "",
             f"presets {cfg.presets}{real}, corruption {cfg.corruption} (depth noise {cfg.depth_noise}, holes "
             f"{cfg.depth_holes} when > 0), seeds {cfg.seeds}, {cfg.frames} frames at {cfg.size[0]}×{cfg.size[1]}, "
             f"adaptation {cfg.adaptation}, validation gate {'on' if cfg.gate else 'off'}, labels {cfg.labels}", "",
             "Tracking EPE (m, median-scale aligned; mean ± sd over seeds):", "",
             "| preset | corruption | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for preset, corr in itertools.product(cfg.sources, cfg.corruption):
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
    if cfg.neighbours:
        lines += ["", "Each variant against its neighbour (the variant it differs from by one switch): paired "
                  "difference over (preset, corruption, seed), mean ± sd [95 % t-interval of the mean]; wins = "
                  "cells where the variant is lower; same = cells with bit-identical EPE:", "",
                  "| variant | neighbour | switch | ΔEPE | wins | same | ΔAbsRel | wins | ΔATE | wins |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for v, n in cfg.neighbours.items():
            sw = ", ".join(f"{k}: {a} → {b}" for k, (a, b) in
                           switch_diff(cfg.loss_config(n), cfg.loss_config(v)).items())
            cols = []
            for key in ("epe", "abs_rel", "ate"):
                d = _paired(results, v, n, key)
                cols += [_spread(d), f"{sum(x < 0 for x in d)}/{len(d)}"]
                if key == "epe":
                    cols.append(f"{sum(x == 0 for x in d)}/{len(d)}")
            lines.append(f"| {v} | {n} | {sw} | " + " | ".join(cols) + " |")
    if len(variants) > 1 and cfg.variants[ref_none] is None:
        lines += ["", "Each variant against no adaptation (same pairing, mean ± sd [95 % t-interval of the mean]; "
                  "same = bit-identical EPE), rounds, the worst round (held-out loss after / before), largest "
                  "relative weight drift, and mean σ² of head 1 / head 2 on the pair (first, last frame) after the "
                  "run:", "",
                  "| variant | ΔEPE vs no adaptation | wins | same | ΔAbsRel | ΔATE | accepted / rounds | "
                  "worst round | drift | σ² head 1 | σ² head 2 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in variants[1:]:
            rs = [r for r in results if r["variant"] == v]
            d, da = _paired(results, v, ref_none, "epe"), _paired(results, v, ref_none, "abs_rel")
            ratios = [h["loss_after"] / h["loss_before"] for r in rs for h in r["history"]
                      if h["loss_before"] and math.isfinite(h["loss_before"]) and math.isfinite(h["loss_after"])]
            lines.append(f"| {v} | {_spread(d)} | {sum(x < 0 for x in d)}/{len(d)} | {sum(x == 0 for x in d)}/"
                         f"{len(d)} | {_spread(da)} | {_spread(_paired(results, v, ref_none, 'ate'))} | "
                         f"{sum(r['accepted'] for r in rs)} / "
                         f"{sum(r['rounds'] for r in rs)} | {max(ratios, default=math.nan):.2f}× | "
                         f"{max((r.get('drift', math.nan) for r in rs), default=math.nan):.2e} | "
                         f"{_ms([r.get('sigma2_track') for r in rs])} | {_ms([r.get('sigma2_recon') for r in rs])} |")
        base = [r for r in results if r["variant"] == ref_none]
        lines.append(f"| {ref_none} | – | – | – | – | – | – | – | – | {_ms([r.get('sigma2_track') for r in base])} | "
                     f"{_ms([r.get('sigma2_recon') for r in base])} |")
        if len(cfg.sources) * len(cfg.corruption) > 1:
            lines += _per_condition(cfg, results, variants)
    live = [r["tracks_moving_until"] for r in results if "tracks_moving_until" in r]
    if live:
        lines += ["", f"Scored tracks move until frame {min(live)}–{max(live)} of {cfg.frames - 1} (a track ends "
                  "at re-anchoring; a round after that frame cannot change EPE)."]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, v in enumerate(variants):  # one colour per variant in every panel
        ys = [statistics.mean([r["epe"] for r in results if r["variant"] == v and r["corruption"] == c
                               and r["epe"] is not None] or [math.nan]) for c in cfg.corruption]
        axes[0].plot([100 * c for c in cfg.corruption], ys, "o-", color=f"C{i}", label=v)
        ps = [statistics.mean([r["epe"] for r in results if r["variant"] == v and r["preset"] == p
                               and r["epe"] is not None] or [math.nan]) for p in cfg.sources]
        axes[1].plot(cfg.sources, ps, "o-", color=f"C{i}", label=v)
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
