"""The tracker with a real (tiny, CPU) network survives NaN/Inf network outputs and bad frames: the frame is skipped
and counted, the state is untouched, and the next good frame carries on; an image size change restarts the window."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import PairOutput, St4RTrackNet
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import BadInput, FrameInput


@pytest.fixture(scope="module")
def frames() -> list[FrameInput]:
    seq = make_sequence("easy", 8, seed=3, width=128, height=96, n_tracks=16, n_object_tracks=4)
    return [FrameInput(f.stamp_ns, f.rgb) for f in seq.frames()]


@pytest.fixture
def tracker() -> OnlineTracker:
    torch.manual_seed(0)
    net = St4RTrackNet(preset("tiny_128")).eval()
    return OnlineTracker(StreamingEngine(net), TrackerConfig(window_size=3, min_visible_fraction=0.0, num_queries=32,
                                                                  map_every=0))


def _poison(tracker: OnlineTracker, monkeypatch: pytest.MonkeyPatch, when: Callable[[bool], bool]) -> list[int]:
    """Make engine.step return NaN pointmaps when ``when(anchor_just_set)``; returns the list of poisoned calls."""
    engine, real_step, real_anchor = tracker.engine, tracker.engine.step, tracker.engine.set_anchor
    state = {"anchor": False}
    poisoned: list[int] = []

    def set_anchor(x: torch.Tensor) -> None:
        state["anchor"] = True
        real_anchor(x)

    def step(x: torch.Tensor, recon: bool = True) -> PairOutput:
        out = real_step(x, recon=recon)
        fresh, state["anchor"] = state["anchor"], False
        if when(fresh):
            poisoned.append(1)
            bad = {"track_conf": out.track_conf.clone().fill_(float("inf"))}
            if out.recon_pts is not None:  # None on a re-anchoring pass (head 2 not run)
                bad["recon_pts"] = out.recon_pts.clone().fill_(float("nan"))
            return dataclasses.replace(out, **bad)
        return out

    monkeypatch.setattr(engine, "set_anchor", set_anchor)
    monkeypatch.setattr(engine, "step", step)
    return poisoned


def test_nan_output_skips_the_frame_and_leaves_the_state(tracker: OnlineTracker, frames: list[FrameInput],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tracker.config.window_size = 8  # no re-anchoring here: the same tracks must go on after the skipped frame
    tracker.step(frames[0])
    before = tracker.step(frames[1])
    positions, index, window = tracker.tracks.positions.copy(), tracker._frame_index, tracker.window
    with monkeypatch.context() as mp:
        _poison(tracker, mp, lambda _fresh: True)
        with pytest.raises(BadInput, match="NaN/Inf") as e:
            tracker.step(frames[2])
    assert e.value.cause == "nonfinite_output" and tracker.nonfinite_outputs == 1
    assert tracker._frame_index == index and tracker.window is window and tracker.resets == 0
    assert np.array_equal(tracker.tracks.positions, positions, equal_nan=True)
    after = tracker.step(frames[3])  # the next good frame: same world, tracks go on
    assert after.frame_index == before.frame_index + 1 and np.isfinite(after.points).all()
    assert not after.reanchored and np.array_equal(before.tracks.ids, after.tracks.ids)


def test_nan_on_the_first_anchor_waits_for_the_next_frame(tracker: OnlineTracker, frames: list[FrameInput],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as mp:
        _poison(tracker, mp, lambda _fresh: True)
        with pytest.raises(BadInput):
            tracker.step(frames[0])
    assert tracker.window is None and tracker.k_model is None  # no world was founded on NaN
    first = tracker.step(frames[1])
    assert first.reanchored and first.frame_index == 0 and np.isfinite(first.pose_world_cam).all()


def test_nan_on_a_new_anchor_postpones_reanchoring(tracker: OnlineTracker, frames: list[FrameInput],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tracker.step(frames[0])
    tracker.step(frames[1])
    with monkeypatch.context() as mp:
        hits = _poison(tracker, mp, lambda fresh: fresh)  # only the (anchor, anchor) pass of a re-anchor
        res = tracker.step(frames[2])  # window full: re-anchoring on this frame gets NaN
        assert hits and tracker.nonfinite_outputs == 1
    assert not res.reanchored and res.anchor_index == 0 and np.isfinite(res.points).all()
    nxt = tracker.step(frames[3])  # the old anchor is re-encoded; this frame becomes the new anchor
    assert nxt.reanchored and nxt.anchor_index == 3 and tracker.resets == 0


def test_image_size_change_restarts_the_window(tracker: OnlineTracker, frames: list[FrameInput]) -> None:
    tracker.step(frames[0])
    tracker.step(frames[1])
    small = FrameInput(frames[2].stamp_ns, np.ascontiguousarray(frames[2].rgb[:64, :96]))
    res = tracker.step(small)
    assert tracker.resets == 1 and res.reanchored and res.frame_index == 0
    assert tracker.mapping is not None and tracker.mapping.camera_wh == (96, 64)


@pytest.mark.parametrize(("frame", "cause"), [
    (FrameInput(0, np.zeros((96, 128), np.uint8)), "not_rgb8"),
    (FrameInput(0, np.zeros((8, 128, 3), np.uint8)), "too_small"),
    (FrameInput(0, np.zeros((96, 128, 3), np.uint8), k=np.zeros((3, 3))), "bad_intrinsics"),
    (FrameInput(0, np.zeros((96, 128, 3), np.uint8), depth=np.ones((48, 64), np.float32)), "depth_size_mismatch"),
])
def test_bad_frames_are_refused_with_a_cause(tracker: OnlineTracker, frame: FrameInput, cause: str) -> None:
    with pytest.raises(BadInput) as e:
        tracker.step(frame)
    assert e.value.cause == cause and tracker.window is None
