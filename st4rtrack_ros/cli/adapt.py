"""``st4rtrack-adapt BAG... --checkpoint BASE --out DOMAIN.safetensors``: domain-level adaptation from recorded bags.

The same St4RTrack+ losses, pseudo-labels and guards as online adaptation (each round validated on held-out frames,
rolled back when it does not help), run over every bag of a deployment domain with a larger budget. The result is a
full checkpoint in our format that the node (``model.checkpoint``) and ``st4rtrack-eval`` start from; its metadata
records the base model's fingerprint, the bags and the round statistics. Progress on stderr, loss curves as PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from st4rtrack_ros.adaptation.worker import AdaptationConfig, AdaptationWorker, WindowSnapshot
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.model.checkpoint import CheckpointError, save_checkpoint
from st4rtrack_ros.model.streaming import EngineOptions
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker, build_worker, load_network
from st4rtrack_ros.settings import SettingsError, load_section
from st4rtrack_ros.tracking.tracker import TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="st4rtrack-adapt", description=__doc__)
    ap.add_argument("bags", type=Path, nargs="+", help="rosbag2 folders of one domain")
    ap.add_argument("--out", type=Path, required=True, help="domain checkpoint to write (.safetensors)")
    ap.add_argument("--checkpoint", type=Path, help="base model (default: the embedded default)")
    ap.add_argument("--config", type=Path, help="parameters file; its 'adaptation' and 'tracking' sections apply")
    ap.add_argument("--epochs", type=int, default=1, help="passes over the bags")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per round (default: config × 2)")
    ap.add_argument("--every", type=int, default=None, help="frames between rounds (default: the config's)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the config's)")
    ap.add_argument("--max-drift", type=float, default=None,
                    help="bound each trained tensor: ‖θ − θ_base‖ ≤ this · ‖θ_base‖ (default: the config's; 0 = none)")
    ap.add_argument("--depth-labels", action="store_true",
                    help="use the bags' aligned depth images as depth pseudo-labels (an RGB-D robot's recordings)")
    ap.add_argument("--val-bags", type=Path, nargs="*", default=[],
                    help="bags of the same domain kept out of the rounds: a round a window accepted is kept only if "
                         "it also lowers the loss on these (so the checkpoint improves the domain, not one scene)")
    ap.add_argument("--val-snapshots", type=int, default=8, help="windows taken from the validation bags")
    ap.add_argument("--max-frames", type=int, default=0, help="frames per bag (0 = all)")
    ap.add_argument("--device", default=None)
    return ap


class _SnapshotRecorder:
    """Stands in for the worker while a tracker replays a validation bag: keeps the windows it is offered."""

    def __init__(self, worker: AdaptationWorker, limit: int) -> None:
        self.enabled, self.version, self.limit = True, 0, limit
        self.config, self.window_frames, self.lock = worker.config, worker.window_frames, worker.lock
        self.snapshots: list[WindowSnapshot] = []

    def submit(self, snapshot: WindowSnapshot) -> bool:
        if len(self.snapshots) < self.limit:
            self.snapshots.append(snapshot)
        return True


def _frames(bag: Path, max_frames: int, depth: bool) -> Iterator[FrameInput]:
    """A bag's frames as tracker input; nothing else is read: a robot's recording has no ground truth."""
    with BenchmarkBagReader(bag) as reader:
        for i, f in enumerate(reader.frames()):
            if max_frames and i >= max_frames:
                return
            yield FrameInput(f.stamp_ns, f.image, f.k, f.gt_depth if depth else None)


def _validation_windows(bags: list[Path], spec: TrackerSpec, net: torch.nn.Module, worker: AdaptationWorker,
                        args: argparse.Namespace) -> list[WindowSnapshot]:
    """Windows of the validation bags, taken as the online tracker would offer them, spread over the bags."""
    snaps: list[WindowSnapshot] = []
    per_bag = -(-args.val_snapshots // max(len(bags), 1))
    for bag in bags:
        recorder = _SnapshotRecorder(worker, per_bag)
        tracker = build_tracker(spec, net=net, adapter=recorder)  # type: ignore[arg-type]
        for frame in _frames(bag, args.max_frames, args.depth_labels):
            tracker.step(frame)
        snaps += recorder.snapshots
    return snaps[: args.val_snapshots]


def _plot(history: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    r = range(1, len(history) + 1)
    ax.plot(r, [h["before"] for h in history], "k.-", label="held-out loss before round")
    ax.plot(r, [h["after"] for h in history], "g.-", label="held-out loss after round")
    acc = [i + 1 for i, h in enumerate(history) if h["accepted"]]
    ax.plot(acc, [history[i - 1]["after"] for i in acc], "go", mfc="none", label="accepted")
    ax.set_xlabel("round")
    ax.set_ylabel("St4RTrack+ loss")
    ax.legend()
    fig.tight_layout()
    path = out.with_suffix(".losses.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        adapt_cfg = AdaptationConfig.from_dict(load_section(args.config, "adaptation") if args.config else {})
        track_cfg = TrackerConfig.from_dict(load_section(args.config, "tracking") if args.config else {})
    except (SettingsError, ValueError, KeyError) as e:
        print(f"st4rtrack-adapt: {e}", file=sys.stderr)
        return 2
    adapt_cfg = dataclasses.replace(
        adapt_cfg, enabled=True, synchronous=True, save_path="",
        steps=args.steps or 2 * adapt_cfg.steps, every_n_frames=args.every or adapt_cfg.every_n_frames,
        lr=args.lr or adapt_cfg.lr,
        max_drift=adapt_cfg.max_drift if args.max_drift is None else args.max_drift)
    # Plain fp32 engine options: the rounds train the very network the trackers run (no bf16 weights).
    spec = TrackerSpec(checkpoint=str(args.checkpoint or ""), device=args.device or "", fit=track_cfg.fit,
                       tracking=track_cfg, adaptation=adapt_cfg, engine=EngineOptions())
    try:
        base = spec.resolved_checkpoint()
        net = load_network(spec)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"st4rtrack-adapt: {e}", file=sys.stderr)
        return 2
    worker = build_worker(spec, net)
    assert worker is not None
    val = _validation_windows(args.val_bags, spec, net, worker, args) if args.val_bags else []
    best = worker.validation_loss(val) if val else math.nan
    kept, domain_kept = (worker.live_subset() if val else {}), 0
    if val:
        print(f"[adapt] {len(val)} validation windows from {len(args.val_bags)} bags: loss {best:.4g}",
              file=sys.stderr, flush=True)
    history: list[dict] = []
    for epoch in range(args.epochs):
        for bag in args.bags:
            tracker = build_tracker(spec, net=net, adapter=worker)
            for i, frame in enumerate(_frames(bag, args.max_frames, args.depth_labels)):
                rounds = worker.rounds
                tracker.step(frame)
                if worker.rounds == rounds or worker.last is None:
                    continue
                last = worker.last
                entry = {"epoch": epoch, "bag": str(bag), "frame": i, "accepted": last.accepted,
                         "before": last.loss_before, "after": last.loss_after}
                note = ""
                if val and last.accepted:  # the window liked it; keep it only if the domain's other bags do too
                    v = worker.validation_loss(val)
                    entry.update(val=v, kept=v < best)
                    if v < best:
                        best, kept, domain_kept = v, worker.live_subset(), domain_kept + 1
                    else:
                        worker.set_live_subset(kept)
                    note = f"; validation {v:.4g} ({'kept' if entry['kept'] else 'reverted'}, best {best:.4g})"
                history.append(entry)
                print(f"[adapt] epoch {epoch + 1}/{args.epochs} {bag.name} frame {i}: round {worker.rounds} "
                      f"{last.reason} ({last.loss_before:.4g} → {last.loss_after:.4g}), "
                      f"accepted {worker.accepted}{note}", file=sys.stderr, flush=True)
    status = worker.status()
    meta = {"adapted_from": str(base), "base_id": worker.base_id, "bags": json.dumps([str(b) for b in args.bags]),
            "rounds": str(status["rounds"]), "accepted": str(status["accepted"]),
            "rolled_back": str(status["rolled_back"]), "adaptation": json.dumps(dataclasses.asdict(adapt_cfg)),
            "val_bags": json.dumps([str(b) for b in args.val_bags]), "val_kept": str(domain_kept),
            "val_loss": str(best)}
    out = save_checkpoint(net, args.out, meta)
    (args.out.with_suffix(".history.json")).write_text(json.dumps(history, indent=1))
    plot = _plot(history, args.out) if history else None
    kept_note = f", {domain_kept} kept by the validation bags" if val else ""
    print(f"[adapt] {status['accepted']}/{status['rounds']} rounds accepted{kept_note}; wrote {out}"
          + (f", curves {plot}" if plot else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
