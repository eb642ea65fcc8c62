"""Domain-level adaptation from recorded bags: the online St4RTrack+ rounds run over every bag of a deployment domain.

Each bag is replayed through a tracker whose adaptation worker runs its rounds synchronously (the same losses,
pseudo-labels and guards as online adaptation); with validation bags a round the window accepted is kept only if it
also lowers the loss on windows of those bags, so the result improves the domain rather than one scene.
``st4rtrack-adapt`` (``cli/adapt.py``) wraps it and writes the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from st4rtrack_ros.adaptation.worker import AdaptationWorker
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot
from st4rtrack_ros.tracking.types import FrameInput


@dataclass
class DomainRun:
    """Which recordings and how: ``bags`` adapted on, ``val_bags`` only validate (their first ``val_snapshots``
    windows, spread over the bags); ``max_frames`` per bag (0 = all); ``depth_labels``: the bags' depth images."""

    bags: list[Path]
    val_bags: list[Path] = field(default_factory=list)
    val_snapshots: int = 8
    max_frames: int = 0
    depth_labels: bool = False
    epochs: int = 1


@dataclass
class DomainResult:
    history: list[dict[str, Any]]  # one entry per round: epoch, bag, frame, accepted, before, after (val, kept)
    val_loss: float  # the best validation loss (NaN without validation bags)
    val_kept: int  # accepted rounds the validation bags kept


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


def bag_frames(bag: Path, max_frames: int, depth: bool) -> Iterator[FrameInput]:
    """A bag's frames as tracker input; nothing else is read: a robot's recording has no ground truth."""
    with BenchmarkBagReader(bag) as reader:
        for i, f in enumerate(reader.frames()):
            if max_frames and i >= max_frames:
                return
            yield FrameInput(f.stamp_ns, f.image, f.k, f.gt_depth if depth else None)


def validation_windows(run: DomainRun, spec: TrackerSpec, net: torch.nn.Module,
                       worker: AdaptationWorker) -> list[WindowSnapshot]:
    """Windows of the validation bags, taken as the online tracker would offer them, spread over the bags."""
    snaps: list[WindowSnapshot] = []
    per_bag = -(-run.val_snapshots // max(len(run.val_bags), 1))
    for bag in run.val_bags:
        recorder = _SnapshotRecorder(worker, per_bag)
        tracker = build_tracker(spec, net=net, adapter=recorder)  # type: ignore[arg-type]
        for frame in bag_frames(bag, run.max_frames, run.depth_labels):
            tracker.step(frame)
        snaps += recorder.snapshots
    return snaps[: run.val_snapshots]


def plot_history(history: list[dict], out: Path) -> Path:
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


def adapt_domain(spec: TrackerSpec, net: torch.nn.Module, worker: AdaptationWorker, run: DomainRun,
                 log: Callable[[str], None] = lambda _m: None) -> DomainResult:
    """Run the rounds over ``run.bags`` for ``run.epochs`` passes, training ``net`` in place through ``worker``
    (synchronous rounds); with validation bags, keep a round only if the validation loss drops."""
    val = validation_windows(run, spec, net, worker) if run.val_bags else []
    best = worker.validation_loss(val) if val else math.nan
    kept, domain_kept = (worker.live_subset() if val else {}), 0
    if val:
        log(f"{len(val)} validation windows from {len(run.val_bags)} bags: loss {best:.4g}")
    history: list[dict[str, Any]] = []
    for epoch in range(run.epochs):
        for bag in run.bags:
            tracker = build_tracker(spec, net=net, adapter=worker)
            for i, frame in enumerate(bag_frames(bag, run.max_frames, run.depth_labels)):
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
                log(f"epoch {epoch + 1}/{run.epochs} {bag.name} frame {i}: round {worker.rounds} "
                    f"{last.reason} ({last.loss_before:.4g} → {last.loss_after:.4g}), accepted {worker.accepted}{note}")
    return DomainResult(history=history, val_loss=best, val_kept=domain_kept)
