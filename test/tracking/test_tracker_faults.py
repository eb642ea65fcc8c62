"""Out of memory during inference: the frame is dropped (FrameDropped), the engine's caches are cleared, and the next
frame works — in the same world frame, unless the OOM hit halfway through an anchor swap (then the world restarts).

Injected on the CPU by raising ``torch.OutOfMemoryError`` from the real tiny network's streaming engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameDropped, FrameInput


@pytest.fixture(scope="module")
def frames():
    return list(make_sequence("easy", 8, seed=3, width=128, height=80, n_tracks=16, n_object_tracks=4).frames())


@pytest.fixture(scope="module")
def net() -> St4RTrackNet:
    torch.manual_seed(0)
    return St4RTrackNet(preset("tiny_128")).eval()


def _tracker(net: St4RTrackNet, window: int = 50) -> OnlineTracker:
    return OnlineTracker(StreamingEngine(net), TrackerConfig(window_size=window, min_visible_fraction=0.0,
                                                             num_queries=32, map_every=0))


def _fail_once(monkeypatch: pytest.MonkeyPatch, obj: object, name: str, at_call: int) -> list[int]:
    """Make ``obj.name`` raise torch.OutOfMemoryError on its ``at_call``-th call (1-based)."""
    real, calls = getattr(obj, name), [0]

    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == at_call:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")
        return real(*a, **k)

    monkeypatch.setattr(obj, name, wrapped)
    return calls


def _run(tracker: OnlineTracker, frames) -> list:
    out = []
    for f in frames:
        try:
            out.append(tracker.step(FrameInput(f.stamp_ns, f.rgb, f.k)))
        except FrameDropped:
            out.append(None)
    return out


def test_oom_in_a_frame_drops_it_clears_the_cache_and_keeps_the_world(net, frames, monkeypatch):
    ref = _run(_tracker(net), frames)
    tr = _tracker(net)
    _fail_once(monkeypatch, tr.engine, "step", at_call=4)  # frame 3's network pass
    got = []
    for i, f in enumerate(frames):
        if i == 3:
            with pytest.raises(FrameDropped, match="out of memory"):
                tr.step(FrameInput(f.stamp_ns, f.rgb, f.k))
            assert not tr.engine.has_anchor  # the anchor cache (and any CUDA graphs) were dropped
            got.append(None)
            continue
        got.append(tr.step(FrameInput(f.stamp_ns, f.rgb, f.k)))
    assert tr.oom_dropped == 1 and tr.resets == 0
    assert tr.engine.has_anchor  # re-encoded from the kept anchor image on the next frame
    for i in (4, 5, 6, 7):  # same anchor, same world: the same poses as a run without the fault
        assert got[i].anchor_index == 0
        np.testing.assert_allclose(got[i].pose_world_cam, ref[i].pose_world_cam, atol=1e-5)
    assert len(got[7].tracks) == len(ref[7].tracks)


def test_oom_on_the_first_frame_and_while_re_anchoring(net, frames, monkeypatch):
    tr = _tracker(net, window=3)
    _fail_once(monkeypatch, tr.engine, "set_anchor", at_call=1)  # the very first frame: nothing to keep
    res = _run(tr, frames[:2])
    assert res[0] is None and res[1] is not None and res[1].frame_index == 0 and tr.oom_dropped == 1
    # An OOM after the window was replaced but before the tracks moved to it: half-made state, so a new world.
    _fail_once(monkeypatch, tr.tracks, "restart", at_call=1)
    resets = tr.resets
    res = _run(tr, frames[2:6])
    assert res.count(None) == 1 and tr.oom_dropped == 2 and tr.resets == resets + 1
    ok = [r for r in res if r is not None]
    assert all(np.isfinite(r.pose_world_cam).all() for r in ok) and ok[-1].tracks.ids.size
