"""Adaptation under memory pressure: an out-of-memory round shrinks the snapshot window, a second one at the smallest
window switches adaptation off (with the reason in the status), and inference carries on throughout.

The OOM is injected on the CPU by raising ``torch.OutOfMemoryError`` (what CUDA raises; ``torch.cuda.OutOfMemoryError``
is the same class) from the worker's loss, around the real tiny network.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.adaptation.worker import AdaptationWorker, trainable_names
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import to_tensor
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


@pytest.fixture(scope="module")
def frames():
    return list(make_sequence("easy", 24, seed=5, width=128, height=80, n_tracks=16, n_object_tracks=4).frames())


def _snapshot(frames, idx=(0, 2, 4, 6, 8, 10)) -> WindowSnapshot:
    rgb = np.stack([frames[i].rgb for i in idx])
    return WindowSnapshot(images=torch.stack([to_tensor(r) for r in rgb]), rgb=rgb,
                          k=torch.as_tensor(frames[0].k, dtype=torch.float32))


def _net() -> St4RTrackNet:
    torch.manual_seed(0)
    return St4RTrackNet(preset("tiny_128")).eval()


def _oom(*_a, **_k):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def test_oom_round_halves_the_window_then_switches_adaptation_off(frames, monkeypatch):
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=True, steps=1, duty_cycle=1.0, window_frames=6,
                                               holdout_frames=2, max_consecutive_failures=1))
    names = trainable_names(net, "heads")
    before = [dict(net.named_parameters())[n].detach().clone() for n in names]
    seen: list[int] = []
    monkeypatch.setattr(w, "_loss", lambda snap, fr, lab: seen.append(len(snap.images)) or _oom())

    r1 = w.run_round(_snapshot(frames))
    assert not r1.accepted and "out of memory" in r1.reason and "6 → 4" in r1.reason
    st = w.status()
    assert st["enabled"] and st["window_frames"] == 4 and st["oom"] == 1 and st["disabled_reason"] == ""
    assert w.resets == 0  # an OOM is not a quality failure: the initial weights were not restored

    r2 = w.run_round(_snapshot(frames))  # the 6-frame snapshot is cut to the current 4-frame window
    assert seen == [6, 4]
    st = w.status()
    assert not st["enabled"] and st["oom"] == 2 and "out of memory" in st["disabled_reason"]
    assert r2.reason == st["disabled_reason"] and w.resets == 0
    assert not w.submit(_snapshot(frames))  # off: snapshots are refused
    after = [dict(net.named_parameters())[n] for n in names]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))  # inference weights untouched

    w.set_enabled(True)  # the operator switches it back on: at the small window, reason cleared
    assert w.status()["disabled_reason"] == "" and w.window_frames == 4


def test_inference_continues_while_background_rounds_run_out_of_memory(frames, monkeypatch):
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=True, every_n_frames=2, window_frames=6, holdout_frames=2,
                                               steps=1, duty_cycle=1.0))
    monkeypatch.setattr(w, "_loss", lambda *a: _oom())
    tracker = OnlineTracker(StreamingEngine(net), TrackerConfig(window_size=50, min_visible_fraction=0.0,
                                                                num_queries=32, map_every=0), w)
    w.start()
    try:
        results = []
        for f in frames:
            results.append(tracker.step(FrameInput(f.stamp_ns, f.rgb, f.k)))
            deadline = time.monotonic() + 10.0
            while w.status()["busy"] and time.monotonic() < deadline:  # let each offered round finish
                time.sleep(0.01)
        assert len(results) == len(frames)
        assert all(np.isfinite(r.pose_world_cam).all() and len(r.points) for r in results)
        st = w.status()
        assert st["oom"] == 2 and not st["enabled"] and "smallest window (4 frames)" in st["disabled_reason"]
        assert w.version == 0 and tracker.oom_dropped == 0
    finally:
        assert w.stop(timeout=5.0)


def test_stop_ends_a_running_round_within_a_layer(frames):
    """Shutdown (SIGTERM) must not wait for a whole round: the shadow model's forward checks the stop flag."""
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=True, steps=10_000, max_round_s=600.0, duty_cycle=1.0))
    w.start()
    assert w.submit(_snapshot(frames))
    deadline = time.monotonic() + 10.0
    while not w.status()["busy"] and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # into the optimiser steps (10,000 of them: the round cannot end by itself)
    assert w.status()["busy"]
    t = time.monotonic()
    assert w.stop(timeout=5.0)
    assert time.monotonic() - t < 1.0
    assert w.last is not None and w.last.reason == "stopped" and w.version == 0 and w.resets == 0
