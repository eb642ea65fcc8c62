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
import sys
from pathlib import Path

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.model.checkpoint import CheckpointError, save_checkpoint
from st4rtrack_ros.model.streaming import EngineOptions
from st4rtrack_ros.pipeline import TrackerSpec, build_worker, load_network
from st4rtrack_ros.settings import SettingsError, load_section
from st4rtrack_ros.tracking.tracker import TrackerConfig
from st4rtrack_ros.training.domain_adaptation import DomainRun, adapt_domain, plot_history


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
    run = DomainRun(bags=list(args.bags), val_bags=list(args.val_bags), val_snapshots=args.val_snapshots,
                    max_frames=args.max_frames, depth_labels=args.depth_labels, epochs=args.epochs)
    result = adapt_domain(spec, net, worker, run, log=lambda m: print(f"[adapt] {m}", file=sys.stderr, flush=True))
    status = worker.status()
    meta = {"adapted_from": str(base), "base_id": worker.base_id, "bags": json.dumps([str(b) for b in args.bags]),
            "rounds": str(status["rounds"]), "accepted": str(status["accepted"]),
            "rolled_back": str(status["rolled_back"]), "adaptation": json.dumps(dataclasses.asdict(adapt_cfg)),
            "val_bags": json.dumps([str(b) for b in args.val_bags]), "val_kept": str(result.val_kept),
            "val_loss": str(result.val_loss)}
    out = save_checkpoint(net, args.out, meta)
    (args.out.with_suffix(".history.json")).write_text(json.dumps(result.history, indent=1))
    plot = plot_history(result.history, args.out) if result.history else None
    kept_note = f", {result.val_kept} kept by the validation bags" if args.val_bags else ""
    print(f"[adapt] {status['accepted']}/{status['rounds']} rounds accepted{kept_note}; wrote {out}"
          + (f", curves {plot}" if plot else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
