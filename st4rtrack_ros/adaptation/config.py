"""What background adaptation runs: the ``adaptation`` section of config/tracker.yaml, the RGB-D recipe a camera
with aligned depth switches to, and the two label hooks the offline studies plug in (never a robot's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from st4rtrack_ros.adaptation.losses import LossConfig
from st4rtrack_ros.adaptation.pseudo_labels import KLTConfig
from st4rtrack_ros.model.network import PARAM_SETS
from st4rtrack_ros.settings import check_keys
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot

__all__ = ["ADAPTATION_LOSS_DEFAULTS", "RGBD_RECIPE", "AdaptationConfig", "LabelSource", "LabelTransform"]

#: Where online adaptation departs from LossConfig's defaults (why: docs/adaptation.md); ``adaptation.loss`` keys
#: override these, key by key.
ADAPTATION_LOSS_DEFAULTS: dict[str, Any] = {"sigma2_detach": True}

#: The RGB-D recipe (experiments/configs/adapt_rgbd.yaml), what a robot with an aligned depth topic runs by default
#: (``rgbd_recipe``): the depth image supervises head 1's anchor pointmap (the world frame's own camera: no estimated
#: pose involved), only head 1 trains, and the 2D-track terms are off. Why: on the real RGB-D bag it raised tracking
#: APD 44.2 → 54.3 (EPE −18 %), and on held-out synthetic scenes it lowered EPE on every seed (docs/adaptation.md).
RGBD_RECIPE: dict[str, Any] = {"every_n_frames": 8, "steps": 10, "lr": 1.0e-4, "params": "track_head",
                               "loss": {"w_traj": 0.0, "w_align": 0.0, "depth_on_track_anchor": True}}

#: A hook on a round's pseudo-labels, applied after they are made: ``(uv, depth, hw, generator) → (uv, depth)``.
#: ``uv`` (F, N, 2) float32: the 2D tracks in model pixels (x, y) in the F frames of the round's split, frame 0 the
#: anchor's query pixels (their visibility is left as the tracker found it); ``depth`` (F, H, W) float32 metres, 0 =
#: no label, or None; ``hw`` the model image's (H, W); ``generator`` the worker's seeded ``torch.Generator`` (the
#: stream that also picks each round's held-out frames), for a random transform that repeats with
#: ``adaptation.seed``. Return new arrays rather than writing into the given ones. None (the default): labels as made.
LabelTransform = Callable[[np.ndarray, np.ndarray | None, tuple[int, int], torch.Generator],
                          tuple[np.ndarray, np.ndarray | None]]

#: Where a round's labels come from instead of KLT and the depth image: ``(snapshot, frames) → (query, uv, vis,
#: depth)`` for the snapshot frames ``frames`` (indices into it, ``frames[0] == 0`` the anchor). ``query`` (N, 2) the
#: anchor's query pixels (model pixels, x, y); ``uv`` (F, N, 2) float32 their positions in the F frames (frame 0 =
#: ``query``; NaN = no label); ``vis`` (F, N) bool; ``depth`` (F, H, W) float32 metres, 0 = no label, or None. The
#: ``label_transform`` hook applies after it. None (the default): KLT tracks and the snapshot's depth image (or the
#: plug-ins). An offline upper bound (evaluation.oracle_labels: ground truth) comes in here, never a robot's.
LabelSource = Callable[[WindowSnapshot, list[int]],
                       tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]


@dataclass
class AdaptationConfig:
    """The ``adaptation`` section of config/tracker.yaml."""

    enabled: bool = False
    every_n_frames: int = 32  # a snapshot is offered this often (dropped if a round is still running)
    window_frames: int = 6  # frames per snapshot, the anchor first
    holdout_frames: int = 2  # of those, kept out of the steps and used to validate
    steps: int = 4  # optimiser steps per round
    lr: float = 1e-5
    params: str = "heads"  # trainable subset, one of model.network.PARAM_SETS (track_head … all)
    min_improvement: float = 0.0  # accept when held-out loss < before · (1 − this)
    max_round_s: float = 60.0  # wall-time budget per round (steps stop early)
    duty_cycle: float = 0.5  # fraction of wall time spent computing (CPU: leave cores to inference)
    max_consecutive_failures: int = 5  # then restore the initial weights
    grad_clip: float = 1.0
    # Trust region around the initial (base) weights: after every optimiser step each trained tensor is pulled back
    # onto the ball ‖θ − θ₀‖ ≤ max_drift · ‖θ₀‖ (0 = no bound). Why: accepted rounds accumulate, and a subset that a
    # round's losses do not constrain (head 1's non-anchor pairs under the RGB-D setting) drifts without one.
    max_drift: float = 0.0
    seed: int = 0
    synchronous: bool = False  # run rounds inside tracker.step (offline evaluation: reproducible, not for robots)
    save_path: str = ""  # adapted weights are kept here (atomic writes); empty = not kept
    save_every_accepted: int = 5  # save after this many accepted rounds (and on stop)
    resume: bool = False  # at start, load save_path when it exists (refused if made for another base model)
    loss: dict[str, Any] = field(default_factory=dict)  # overrides of ADAPTATION_LOSS_DEFAULTS (St4RTrack+ otherwise)
    klt: dict[str, Any] = field(default_factory=dict)  # KLTConfig overrides
    # Optional learned labellers, TorchScript or torch.export files on local disk only ("" = none: KLT tracks; depth
    # term only with a depth image). See pseudo_labels.ScriptedTracker / ScriptedDepth for the expected signatures.
    track_model: str = ""
    depth_model: str = ""
    rgbd_recipe: bool = True  # with an aligned depth input, rounds run RGBD_RECIPE (see with_depth_input)

    def __post_init__(self) -> None:
        if self.params not in PARAM_SETS:
            raise ValueError(f"adaptation.params must be one of {PARAM_SETS}, got {self.params!r}")
        if self.window_frames < 3 or not 1 <= self.holdout_frames <= self.window_frames - 2:
            raise ValueError("need window_frames ≥ 3 and 1 ≤ holdout_frames ≤ window_frames − 2")
        if not 0.0 < self.duty_cycle <= 1.0:
            raise ValueError("duty_cycle must lie in (0, 1]")
        if self.steps < 1 or self.lr <= 0 or self.every_n_frames < 1:
            raise ValueError("steps ≥ 1, lr > 0 and every_n_frames ≥ 1 are required")
        if not 0.0 <= self.max_drift < float("inf"):
            raise ValueError("max_drift must be ≥ 0 (0 = no bound) and finite")
        self.loss_config()  # fail at start-up, not in the first round
        KLTConfig(**self.klt)

    def with_depth_input(self) -> AdaptationConfig:
        """The config for a camera with aligned depth: RGBD_RECIPE over this one when ``rgbd_recipe`` (its loss keys
        merged into ``loss``), else unchanged. ``enabled`` stays as it is."""
        if not self.rgbd_recipe:
            return self
        recipe = {k: v for k, v in RGBD_RECIPE.items() if k != "loss"}
        return dataclasses.replace(self, **recipe, loss={**self.loss, **RGBD_RECIPE["loss"]})

    def loss_config(self) -> LossConfig:
        """The loss this worker optimises: the adaptation defaults, then ``loss`` overrides."""
        return LossConfig.from_dict({**ADAPTATION_LOSS_DEFAULTS, **self.loss})

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AdaptationConfig:
        d = dict(d or {})
        check_keys(cls, d, "adaptation parameters")
        return cls(**d)
