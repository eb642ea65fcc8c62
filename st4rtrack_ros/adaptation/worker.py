"""Periodic background test-time adaptation (St4RTrack+), safe for a robot.

The tracker hands over a snapshot of its window every N frames. On its own thread (and CUDA stream) the worker:

1. copies the inference model's trainable subset into a shadow model (so accepted rounds accumulate);
2. builds pseudo-labels — KLT 2D tracks across the window, the aligned depth image when there is one, and with
   the motion term (``loss.w_motion``) head 1 of its initial weights on the same pairs;
3. runs K optimiser steps of the St4RTrack+ losses on the window's training frames;
4. validates on frames held out of the steps: finite weights and outputs, and a held-out loss lower by a margin;
5. swaps the subset into the inference model under the tracker's inference lock (an in-place copy, so captured
   CUDA graphs stay valid; a version number counts swaps), or rolls back by doing nothing.

Guards: a per-round wall-time budget, a duty cycle that leaves the CPU to inference, NaN/Inf and divergence
rejected, and after repeated failures the inference model goes back to its initial weights. Inference never waits
for a round, only for the swap's copy.

Out of memory (GPU shared with inference): the round is abandoned (nothing swapped), cached blocks go back to the
driver, and the next rounds use half the snapshot frames (the batch of every forward pass), down to the smallest
window the hold-out split allows; an OOM at that size switches adaptation off with the reason in ``status()``.
Inference is never touched by any of this.

Why one module over 400 lines: the worker is one object whose thread, rounds, swap, rollback, out-of-memory back-off
and saving all read and write the same shadow model, optimiser, lock and counters. Its stateless parts live beside
it: the configuration and label hooks in ``config``, the losses in ``losses``, the labels in ``pseudo_labels``, the
saved-weights format in ``persistence``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from st4rtrack_ros.adaptation.config import AdaptationConfig, LabelSource, LabelTransform
from st4rtrack_ros.adaptation.losses import PseudoLabels, WindowPrediction, window_losses
from st4rtrack_ros.adaptation.persistence import (
    AdaptedCheckpointError,
    load_adapted,
    save_adapted,
    weights_fingerprint,
)
from st4rtrack_ros.adaptation.pseudo_labels import (
    KLTConfig,
    ScriptedDepth,
    ScriptedTracker,
    anchor_queries,
    klt_tracks,
)
from st4rtrack_ros.geometry.pose import PoseConfig
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot

__all__ = ["AdaptationWorker", "RoundResult", "trainable_names"]

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised inside the shadow model's forward when stop() was called: a round ends within one layer."""


@dataclass
class RoundResult:
    accepted: bool
    reason: str
    loss_before: float
    loss_after: float
    train_losses: list[float]
    seconds: float


def trainable_names(net: St4RTrackNet, params: str) -> list[str]:
    """Parameter names of an ``adaptation.params`` subset (the network defines the subsets)."""
    return net.subset_names(params)


class AdaptationWorker:
    def __init__(self, net: St4RTrackNet, config: AdaptationConfig, lock: threading.Lock | None = None,
                 base_id: str | None = None, label_transform: LabelTransform | None = None,
                 label_source: LabelSource | None = None) -> None:
        self.net = net
        self.label_transform = label_transform  # see LabelTransform (None: the labels as made)
        self.label_source = label_source  # see LabelSource (None: KLT tracks, the depth image or the plug-ins)
        self.base_id = base_id or weights_fingerprint(net)  # identifies the base model adapted files belong to
        self.config = config
        self.lock = lock or threading.Lock()
        self.device = next(net.parameters()).device
        self.loss_cfg = config.loss_config()
        self.klt_cfg = KLTConfig(**config.klt)
        self.track_model = ScriptedTracker(config.track_model) if config.track_model else None
        self.depth_model = ScriptedDepth(config.depth_model) if config.depth_model else None
        self.shadow = copy.deepcopy(net).float().train()
        self.names = trainable_names(self.shadow, config.params)
        live = dict(net.named_parameters())
        shadow = dict(self.shadow.named_parameters())
        self._pairs = [(shadow[n], live[n]) for n in self.names]
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        for p, _ in self._pairs:
            p.requires_grad_(True)
        # Why hooks: a forward over a window can take seconds on a CPU; the node must stop within ~2 s of SIGTERM.
        for module in self.shadow.modules():
            module.register_forward_pre_hook(self._check_stop)
        self._initial = [q.detach().clone() for _, q in self._pairs]
        self._val_labels: dict[int, tuple[WindowSnapshot, PseudoLabels]] = {}  # validation_loss's, by snapshot
        # the radius of each tensor's max_drift ball around its initial weights (empty: no bound)
        self._radii = [config.max_drift * float(t.float().norm()) for t in self._initial] if config.max_drift else []
        #: Frames per snapshot now: config.window_frames, halved after each out-of-memory round (the tracker reads it).
        self.window_frames = config.window_frames
        self.min_window_frames = config.holdout_frames + 2  # anchor + ≥ 1 training frame + the held-out frames
        self.oom = 0  # rounds abandoned for lack of memory
        self.disabled_reason = ""  # why the worker switched itself off ("" = it did not)
        self._gen = torch.Generator().manual_seed(config.seed)
        self._enabled = config.enabled
        self._slot: WindowSnapshot | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.version = 0
        self._saved_version = 0
        self.rounds = self.accepted = self.rolled_back = self.resets = 0
        self._failures = 0
        self.last: RoundResult | None = None
        self.history: deque[RoundResult] = deque(maxlen=1000)  # recent rounds (loss curves, stability)

    # -- control -------------------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._enabled

    def set_enabled(self, on: bool) -> None:
        """Switch rounds on or off (an operator's "on" also lifts a self-imposed off, at the current window)."""
        self._enabled = bool(on)
        if on:
            self.disabled_reason = ""

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="st4r-adaptation", daemon=True)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop without waiting (the round ends within one layer); ``stop`` then joins it."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to stop after its current step, keep the adapted weights; True if it ended in time."""
        self.request_stop()
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
            self._thread = None if ended else self._thread
        if ended and self.config.save_path and self.version > self._saved_version:
            self.save()
        return ended

    # -- persistence ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> Path:
        """Write the adapted subset (atomically) with its provenance; the live weights are copied under the lock."""
        if not (path or self.config.save_path):
            raise ValueError("no path to save adapted weights to (adaptation.save_path is empty)")
        target = Path(path or self.config.save_path)
        with self.lock:
            tensors = {n: q.detach().clone() for n, (_, q) in zip(self.names, self._pairs, strict=True)}
        info = {**{k: v for k, v in self.status().items() if k != "busy"}, "names": len(tensors),
                "config": dataclasses.asdict(self.config)}
        out = save_adapted(target, tensors, self.base_id, _json_safe(info))
        self._saved_version = self.version
        log.info("adaptation: saved weights version %d to %s", self.version, out)
        return out

    def load(self, path: str | Path | None = None) -> dict[str, Any]:
        """Resume from adapted weights made for this base model; the version continues from the file's."""
        tensors, info = load_adapted(Path(path or self.config.save_path), self.base_id)
        if set(tensors) != set(self.names):
            raise AdaptedCheckpointError(
                f"adapted file holds another parameter subset ({len(tensors)} tensors; this worker adapts "
                f"'{self.config.params}' = {len(self.names)})")
        for n, (_, q) in zip(self.names, self._pairs, strict=True):
            if tuple(tensors[n].shape) != tuple(q.shape):
                raise AdaptedCheckpointError(f"shape of {n} differs: {tuple(tensors[n].shape)}")
        self.set_live_subset(tensors)
        self.version = int(info.get("version", 0))
        self.rounds, self.accepted = int(info.get("rounds", 0)), int(info.get("accepted", 0))
        self.rolled_back = int(info.get("rolled_back", 0))
        self._saved_version = self.version
        log.info("adaptation: resumed weights version %d from %s", self.version, path or self.config.save_path)
        return info

    def live_subset(self) -> dict[str, torch.Tensor]:
        """A copy of the inference model's trainable subset (to restore later with :meth:`set_live_subset`)."""
        with self.lock, torch.no_grad():
            return {n: q.detach().clone() for n, (_, q) in zip(self.names, self._pairs, strict=True)}

    def set_live_subset(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy a subset (same names and shapes) into the inference model and the shadow; a new weights version."""
        with self.lock, torch.no_grad():
            for n, (p, q) in zip(self.names, self._pairs, strict=True):
                q.copy_(tensors[n])
                p.copy_(tensors[n].float())
            self.version += 1

    @torch.no_grad()
    def validation_loss(self, snapshots: Sequence[WindowSnapshot]) -> float:
        """This worker's loss of the inference weights on whole snapshots (e.g. other bags of a domain), averaged.

        The labels of a fixed validation set do not change between rounds (KLT tracks, depth, the base weights'
        head 1; the study's label noise is drawn once), so each snapshot's are made once and kept while later calls
        pass the same snapshot object.
        Not thread-safe against a running round (it uses the shadow): offline use (st4rtrack-adapt) only.
        """
        for p, q in self._pairs:
            p.copy_(q.float())
        kept, self._val_labels = self._val_labels, {}
        losses = []
        for snap in snapshots:
            frames = list(range(len(snap.images)))
            hit = kept.get(id(snap))
            if hit is None or hit[0] is not snap:  # a new object (an id can be reused after the old one died)
                hit = (snap, self._labels(snap, frames))
            self._val_labels[id(snap)] = hit
            losses.append(float(self._loss(snap, frames, hit[1])))
        finite = [v for v in losses if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    def submit(self, snapshot: WindowSnapshot) -> bool:
        """Offer a window; refused (False) when disabled or a round is running: the tracker never waits.

        With ``synchronous`` the round runs here, in the caller's thread (reproducible offline evaluation).
        """
        if not self._enabled or self._busy.is_set() or self._slot is not None:
            return False
        if self.config.synchronous:
            self.run_round(snapshot)
            return True
        self._slot = snapshot
        self._wake.set()
        return True

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "enabled": self._enabled, "busy": self._busy.is_set(), "version": self.version, "rounds": self.rounds,
            "accepted": self.accepted, "rolled_back": self.rolled_back, "resets": self.resets,
            "params": self.config.params, "last_reason": last.reason if last else "",
            "last_loss_before": last.loss_before if last else math.nan,
            "last_loss_after": last.loss_after if last else math.nan,
            "last_round_s": last.seconds if last else math.nan,
            "window_frames": self.window_frames, "oom": self.oom, "disabled_reason": self.disabled_reason,
            "max_drift": self.config.max_drift,
            "pseudo_labels": self.label_sources(),
        }

    def label_sources(self) -> str:
        """Where the pseudo-labels come from (a plug-in that is absent switches its source off, and says so)."""
        if self.label_source is not None:
            return f"tracks and depth: {getattr(self.label_source, 'name', type(self.label_source).__name__)}"
        loss = self.loss_cfg
        tracks = f"tracks: {self.track_model.path.name}" if self.track_model else "tracks: KLT"
        if loss.w_traj == 0 and loss.w_align == 0:  # the RGB-D recipe: the 2D terms are off
            tracks += " (unused: w_traj = w_align = 0)"
        depth = (f"depth: {self.depth_model.path.name} (when no depth image)" if self.depth_model
                 else "depth: depth image only (no depth_model plug-in)")
        if loss.depth_on_track_anchor:
            depth += ", also on head 1's anchor pointmap"
        return f"{tracks}; {depth}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            snap, self._slot = self._slot, None
            if snap is None or self._stop.is_set():
                continue
            self._busy.set()
            try:
                self.run_round(snap)
            except Exception as e:  # a round must never take the tracker down
                log.exception("adaptation round failed: %s", e)
                self._record(RoundResult(False, f"error: {e}", math.nan, math.nan, [], 0.0))
            finally:
                self._busy.clear()

    # -- one round -----------------------------------------------------------------------------------------------

    def _labels(self, snap: WindowSnapshot, frames: list[int]) -> PseudoLabels:
        rgb = snap.rgb[frames]
        if self.label_source is not None:
            query, uv, vis, depth = self.label_source(snap, frames)
        else:
            query, uv, vis, depth = self._own_labels(snap, frames)
        if self.label_transform is not None:
            uv, depth = self.label_transform(uv, depth, rgb.shape[1:3], self._gen)
        dev = self.device
        return PseudoLabels(query_uv=torch.as_tensor(query, dtype=torch.float32, device=dev),
                            tracks_uv=torch.as_tensor(uv, device=dev), track_vis=torch.as_tensor(vis, device=dev),
                            mono_depth=None if depth is None else torch.as_tensor(depth, dtype=torch.float32,
                                                                                   device=dev),
                            base_track_pts=self._base_track(snap, frames) if self.loss_cfg.w_motion > 0 else None)

    def _own_labels(self, snap: WindowSnapshot, frames: list[int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """KLT (or the track plug-in) from the anchor's corners; the depth image, else the depth plug-in."""
        rgb = snap.rgb[frames]
        query = anchor_queries(rgb[0], self.klt_cfg)
        track = self.track_model or (lambda frames_rgb, q: klt_tracks(frames_rgb, q, self.klt_cfg))
        if snap.chain_rgb is not None and snap.chain_index is not None:
            uv, vis = track(np.stack(snap.chain_rgb[: int(snap.chain_index[frames].max()) + 1]), query)
            uv, vis = uv[snap.chain_index[frames]], vis[snap.chain_index[frames]]
        else:
            uv, vis = track(rgb, query)
        depth = snap.depth[frames] if snap.depth is not None else None
        if depth is None and self.depth_model is not None:
            depth = self.depth_model(rgb)
        return query, uv, vis, depth

    @torch.no_grad()
    def _base_track(self, snap: WindowSnapshot, frames: list[int]) -> torch.Tensor:
        """Head 1 of the initial (base) weights on the pairs of ``frames``: the ``motion`` term's label. Once per
        round and split, so the steps pay nothing for it."""
        imgs = snap.images[frames].to(self.device)
        base = {n: t.float() for n, t in zip(self.names, self._initial, strict=True)}
        out = torch.func.functional_call(self.shadow, base, (imgs[:1].expand(len(frames), -1, -1, -1), imgs))
        return out.track_pts

    def _loss(self, snap: WindowSnapshot, frames: list[int], labels: PseudoLabels) -> torch.Tensor:
        imgs = snap.images[frames].to(self.device)
        out = self.shadow(imgs[:1].expand(len(frames), -1, -1, -1), imgs)
        pred = WindowPrediction(out.track_pts, out.recon_pts, out.track_conf, out.recon_conf)
        res = window_losses(pred, labels, self.loss_cfg, k=snap.k.to(self.device), pose_cfg=PoseConfig(refine_iters=1))
        if not any(res.present.values()):
            return torch.full((), math.nan, device=self.device)
        return res.total

    @torch.no_grad()
    def _project(self) -> None:
        """Pull each trained tensor back onto its max_drift ball around the initial weights (a no-op without one)."""
        for (p, _), init, radius in zip(self._pairs, self._initial, self._radii, strict=False):
            p0 = init.float()
            delta = p - p0
            norm = delta.norm().double()  # stays on the device: no host sync per tensor and step
            factor = (radius / norm.clamp_min(1e-30)).to(p.dtype)
            p.copy_(torch.where(norm > radius, p0 + delta * factor, p))

    def max_relative_drift(self) -> float:
        """Largest ‖θ − θ₀‖ / ‖θ₀‖ over the trained tensors of the inference model (0 at start)."""
        with self.lock, torch.no_grad():
            return max((float((q.float() - p0).norm() / p0.norm().clamp_min(1e-12))
                        for (_, q), p0 in zip(self._pairs, (t.float() for t in self._initial), strict=True)),
                       default=0.0)

    def _split(self, n: int) -> tuple[list[int], list[int]]:
        """Anchor in both; held-out frames spread over the window (seeded), the rest train."""
        others = torch.randperm(n - 1, generator=self._gen)[: self.config.holdout_frames] + 1
        held = sorted(int(i) for i in others)
        train = [0] + [i for i in range(1, n) if i not in held]
        return train, [0, *held]

    def _check_stop(self, *_args: Any) -> None:
        if self._stop.is_set():
            raise _Stopped

    def run_round(self, snap: WindowSnapshot) -> RoundResult:
        """One adaptation round, synchronously (the thread calls this; tests call it directly)."""
        ctx = torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()
        t0 = time.perf_counter()
        try:
            with ctx:
                return self._round(self._fit_window(snap))
        except _Stopped:  # stop() during a forward pass: nothing swapped, not a failure
            result = RoundResult(False, "stopped", math.nan, math.nan, [], time.perf_counter() - t0)
            self._record(result, failure=False)
            return result
        except torch.OutOfMemoryError as e:
            message = str(e).splitlines()[0] if str(e) else "out of memory"
        # Outside the except block: the traceback (and the activations its frames hold) is gone by now.
        return self._back_off(message, time.perf_counter() - t0)

    def _fit_window(self, snap: WindowSnapshot) -> WindowSnapshot:
        """The anchor plus evenly spread frames when the snapshot is larger than the current window."""
        n = len(snap.images)
        if n <= self.window_frames:
            return snap
        pick = [0, *np.linspace(1, n - 1, self.window_frames - 1).round().astype(int).tolist()]
        return dataclasses.replace(snap, images=snap.images[pick], rgb=snap.rgb[pick],
                                   depth=None if snap.depth is None else snap.depth[pick],
                                   chain_index=None if snap.chain_index is None else snap.chain_index[pick],
                                   stamps_ns=None if snap.stamps_ns is None else snap.stamps_ns[pick])

    def _back_off(self, message: str, seconds: float) -> RoundResult:
        """After an out-of-memory round: free what the round held, then a smaller window, or adaptation off."""
        self.shadow.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.oom += 1
        old = self.window_frames
        if old > self.min_window_frames:
            self.window_frames = max(self.min_window_frames, old // 2)
            reason = f"out of memory ({message}): window {old} → {self.window_frames} frames"
        else:
            self._enabled = False
            self.disabled_reason = f"out of memory at the smallest window ({old} frames): adaptation off"
            reason = self.disabled_reason
        log.warning("adaptation: %s", reason)
        result = RoundResult(False, reason, math.nan, math.nan, [], seconds)
        self._record(result, failure=False)  # not a quality failure: must not restore the initial weights
        return result

    def _round(self, snap: WindowSnapshot) -> RoundResult:
        cfg = self.config
        t0 = time.perf_counter()
        with torch.no_grad():
            for p, q in self._pairs:
                p.copy_(q.float())
        train, held = self._split(len(snap.images))
        train_labels, held_labels = self._labels(snap, train), self._labels(snap, held)
        with torch.no_grad():
            before = float(self._loss(snap, held, held_labels))
        opt = torch.optim.AdamW([p for p, _ in self._pairs], lr=cfg.lr, weight_decay=0.0)
        losses: list[float] = []
        for _ in range(cfg.steps):
            ts = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = self._loss(snap, train, train_labels)
            if not torch.isfinite(loss):
                losses.append(float("nan"))
                break
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p, _ in self._pairs], cfg.grad_clip)
            opt.step()
            self._project()
            losses.append(float(loss.detach()))
            spent = time.perf_counter() - ts
            if self._stop.is_set() or time.perf_counter() - t0 > cfg.max_round_s:
                break
            if cfg.duty_cycle < 1.0 and not cfg.synchronous:  # offline rounds have no inference to leave room for
                self._stop.wait(spent * (1.0 - cfg.duty_cycle) / cfg.duty_cycle)  # stop() cuts the pause short
        with torch.no_grad():
            after = float(self._loss(snap, held, held_labels))
        finite = all(torch.isfinite(p).all() for p, _ in self._pairs)
        if not (finite and math.isfinite(after) and math.isfinite(before)):
            reason, ok = "non-finite loss or weights", False
        elif after < before * (1.0 - cfg.min_improvement):
            reason, ok = "held-out loss improved", True
        else:
            reason, ok = "held-out loss did not improve", False
        if ok:
            with self.lock, torch.no_grad():  # the inference model changes only here, between two frames
                for p, q in self._pairs:
                    q.copy_(p)
                self.version += 1
        result = RoundResult(ok, reason, before, after, losses, time.perf_counter() - t0)
        self._record(result)
        return result

    def _record(self, result: RoundResult, failure: bool = True) -> None:
        self.rounds += 1
        self.last = result
        self.history.append(result)
        if result.accepted:
            self.accepted += 1
            self._failures = 0
            if self.config.save_path and self.accepted % max(self.config.save_every_accepted, 1) == 0:
                self.save()
        else:
            self.rolled_back += 1
            self._failures += int(failure)
            if self._failures >= self.config.max_consecutive_failures:
                self.restore_initial()
        log.info("adaptation round %d: %s (held-out %.4g → %.4g, %.1f s), version %d", self.rounds, result.reason,
                 result.loss_before, result.loss_after, result.seconds, self.version)

    def restore_initial(self) -> None:
        """Back to the weights the tracker started with (after repeated failures, or on request)."""
        with self.lock, torch.no_grad():
            for (p, q), init in zip(self._pairs, self._initial, strict=True):
                q.copy_(init)
                p.copy_(init.float())
            self.version += 1
        self.resets += 1
        self._failures = 0
        log.warning("adaptation: restored the initial weights (version %d)", self.version)


def _json_safe(obj: Any) -> Any:
    """NaN → None, tuples → lists: metadata must be strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
