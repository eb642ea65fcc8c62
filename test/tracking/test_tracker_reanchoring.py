"""Re-anchoring runs the new anchor's self-pair without head 2 (its output is not used): every tracker output is
the same as with both heads, and only re-anchoring passes skip it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


def _run(force_both_heads: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list[bool]]:
    torch.manual_seed(0)
    net = St4RTrackNet(preset("tiny_128")).eval()
    tracker = OnlineTracker(StreamingEngine(net), TrackerConfig(window_size=3, num_queries=32, map_every=2))
    real, asked = tracker.engine.step, []

    def step(x: torch.Tensor, recon: bool = True):
        asked.append(recon)
        return real(x, recon=recon or force_both_heads)

    monkeypatch.setattr(tracker.engine, "step", step)
    seq = make_sequence("easy", 8, seed=5, width=128, height=96, n_tracks=16, n_object_tracks=4)
    return [tracker.step(FrameInput(f.stamp_ns, f.rgb, f.k)) for f in seq.frames()], asked


def test_reanchoring_without_head_two_changes_no_output(monkeypatch: pytest.MonkeyPatch) -> None:
    lean, asked = _run(False, monkeypatch)
    both, _ = _run(True, monkeypatch)
    reanchors = sum(r.reanchored for r in lean[1:])
    assert reanchors >= 2 and asked.count(False) == reanchors  # the first frame (a new world) runs both heads
    for a, b in zip(lean, both, strict=True):
        assert a.reanchored == b.reanchored and a.anchor_index == b.anchor_index
        np.testing.assert_array_equal(a.pose_world_cam, b.pose_world_cam)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.tracks.positions, b.tracks.positions)
        np.testing.assert_array_equal(a.tracks.ids, b.tracks.ids)
