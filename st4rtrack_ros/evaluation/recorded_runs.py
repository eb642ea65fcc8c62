"""The runs the real-data benchmark scores: the node's tracker over a bag, in the harness's ``protocol`` or ``online``
mode (:func:`run_bag`), recording what the label-free measures need (:class:`RecordingTracker`: KLT corner queries of
the first anchor, their 3D tracks per frame, the model-size images)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from st4rtrack_ros.adaptation.pseudo_labels import KLTConfig, anchor_queries
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.evaluation.runner import RunConfig, RunResult, protocol_config, run_frames
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import fit_image, plan_mapping
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.tracking.adaptation_port import Adapter
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput, StepResult

MODES: tuple[str, ...] = ("protocol", "online")


class RecordingTracker(OnlineTracker):
    """The node's tracker that also tracks corner queries of the first anchor for the KLT comparison.

    When a caller founds the world with its own queries (the evaluation's ground-truth points, ids 0..N-1), up to
    ``klt.num_tracks`` corners of the anchor are appended (ids N..N+M-1: the harness scores only ids < N, so its
    metrics are unchanged). Per step it keeps the model-size image and the 3D positions of those M tracks (NaN once
    a track has ended, in online mode when a re-anchoring does not carry it over).
    """

    def __init__(self, engine: StreamingEngine, config: TrackerConfig | None = None, adaptation: Adapter | None = None,
                 *, klt: KLTConfig | None = None, use_camera_info: bool = True) -> None:
        super().__init__(engine, config, adaptation)
        self.klt = klt or KLTConfig()
        self.use_camera_info = use_camera_info  # False: the tracker gets no K and estimates it (Weiszfeld)
        self.first_id = 0
        self.klt_queries = np.zeros((0, 2))  # (M, 2) model pixels in the first anchor
        self.rgbs: list[np.ndarray] = []  # T × (h, w, 3) uint8 model-size images
        self.positions: list[np.ndarray] = []  # T × (M, 3) world positions of the KLT-query tracks
        self.reanchored: list[bool] = []

    def step(self, frame: FrameInput, queries: np.ndarray | None = None) -> StepResult:
        h, w = frame.rgb.shape[:2]
        mapping = self.mapping or plan_mapping((w, h), self.engine.net.config.img_size, self.config.fit)
        rgb = fit_image(frame.rgb, mapping)
        if queries is not None and self.window is None:  # founding the world with the caller's queries
            own = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
            self.first_id = len(own)
            self.klt_queries = anchor_queries(rgb, self.klt).astype(np.float64)
            queries = np.concatenate((own, self.klt_queries))
        res = super().step(frame if self.use_camera_info else dataclasses.replace(frame, k=None), queries)
        pos = np.full((len(self.klt_queries), 3), np.nan)
        ids = res.tracks.ids - self.first_id
        rows = (ids >= 0) & (ids < len(self.klt_queries))
        pos[ids[rows]] = res.tracks.positions[rows]
        self.rgbs.append(rgb)
        self.positions.append(pos)
        self.reanchored.append(bool(res.reanchored))
        return res


def run_bag(net: St4RTrackNet, bag: Path, mode: str, frames: int, device: torch.device,
            tracker_cfg: TrackerConfig | None = None, use_camera_info: bool = True
            ) -> tuple[RunResult, RecordingTracker]:
    """One pass of the tracker over the bag's first ``frames`` frames in the harness's ``mode``."""
    base = tracker_cfg or TrackerConfig()
    cfg = protocol_config(base) if mode == "protocol" else base
    tracker = build_tracker(TrackerSpec(device=str(device), fit=cfg.fit, tracking=cfg), net=net,
                            tracker_cls=functools.partial(RecordingTracker, use_camera_info=use_camera_info))
    with BenchmarkBagReader(bag) as reader:
        run = run_frames(reader.frames(), tracker, RunConfig(max_frames=frames, mode=mode, progress_every=0))
    return run, tracker
