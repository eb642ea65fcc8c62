"""Background adaptation: rounds accept or roll back, swaps are atomic, failures are contained, threads stop."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import torch

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.adaptation.pseudo_labels import KLTConfig, klt_tracks
from st4rtrack_ros.adaptation.worker import AdaptationWorker, trainable_names
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import PARAM_SETS, St4RTrackNet
from st4rtrack_ros.model.preprocess import to_tensor
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


@pytest.fixture(scope="module")
def frames():
    return list(make_sequence("easy", 12, seed=4, width=128, height=80, n_tracks=16, n_object_tracks=4).frames())


def _snapshot(frames, idx=(0, 2, 4, 6, 8, 10)) -> WindowSnapshot:
    rgb = np.stack([frames[i].rgb for i in idx])
    return WindowSnapshot(images=torch.stack([to_tensor(r) for r in rgb]), rgb=rgb,
                          k=torch.as_tensor(frames[0].k, dtype=torch.float32),
                          depth=np.stack([frames[i].depth for i in idx]))


def _net(seed: int = 0) -> St4RTrackNet:
    torch.manual_seed(seed)
    return St4RTrackNet(preset("tiny_128")).eval()


def _params(net, names):
    d = dict(net.named_parameters())
    return [d[n].detach().clone() for n in names]


def test_klt_follows_a_shifted_texture_and_drops_lost_points():
    rng = np.random.default_rng(0)
    base = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    import cv2

    base = cv2.GaussianBlur(base, (5, 5), 1.5)
    frames = np.stack([np.roll(base, (0, 2 * i), axis=(0, 1)) for i in range(4)])  # 2 px/frame to the right
    query = np.array([[40.0, 60.0], [80.0, 50.0], [157.0, 60.0]])
    uv, vis = klt_tracks(frames, query, KLTConfig(win=21))
    assert np.allclose(uv[3, :2], query[:2] + np.array([6.0, 0.0]), atol=0.3)
    assert vis[:, :2].all() and not vis[3, 2]  # the last point leaves the image


def test_klt_survives_an_exposure_change():
    """Auto-exposure / white balance between two frames (gain and offset) must not lose every track."""
    import cv2

    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur((rng.random((120, 160, 3)) * 200).astype(np.uint8), (5, 5), 1.5)
    shifted = np.roll(base, (0, 3), axis=(0, 1))
    brighter = np.clip(shifted.astype(np.float32) * 1.3 + 20, 0, 255).astype(np.uint8)
    query = np.array([[40.0, 60.0], [80.0, 50.0], [100.0, 70.0]])
    uv, vis = klt_tracks(np.stack([base, brighter]), query, KLTConfig())
    assert vis[1].all() and np.allclose(uv[1], query + np.array([3.0, 0.0]), atol=0.5)


def test_labels_follow_the_chain_not_the_spread_out_frames(frames):
    """With the consecutive-frame chain the labels equal KLT through every frame, read at the snapshot's ones."""
    chain = np.stack([f.rgb for f in frames[:9]])
    idx = np.array([0, 4, 8])
    snap = WindowSnapshot(images=torch.stack([to_tensor(r) for r in chain[idx]]), rgb=chain[idx],
                          k=torch.as_tensor(frames[0].k, dtype=torch.float32), chain_rgb=chain, chain_index=idx)
    w = AdaptationWorker(_net(), AdaptationConfig(enabled=True, window_frames=3, holdout_frames=1))
    labels = w._labels(snap, [0, 1, 2])
    uv, vis = klt_tracks(chain, labels.query_uv.numpy(), w.klt_cfg)
    assert np.allclose(labels.tracks_uv.numpy(), uv[idx]) and np.array_equal(labels.track_vis.numpy(), vis[idx])


def test_round_accepts_or_rolls_back_and_only_swaps_on_accept(frames):
    net = _net()
    cfg = AdaptationConfig(enabled=True, steps=3, lr=1e-4, duty_cycle=1.0)
    w = AdaptationWorker(net, cfg)
    names = trainable_names(net, "heads")
    assert names and all(n.startswith("downstream_head") for n in names)
    before = _params(net, names)
    frozen = net.enc_blocks[0].attn.qkv.weight.detach().clone()
    res = w.run_round(_snapshot(frames))
    assert np.isfinite(res.loss_before) and len(res.train_losses) == 3
    after = _params(net, names)
    changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert changed == res.accepted and w.version == int(res.accepted)
    assert torch.equal(net.enc_blocks[0].attn.qkv.weight, frozen)  # outside the subset: never touched
    assert w.status()["rounds"] == 1


def test_rounds_are_deterministic(frames):
    a = AdaptationWorker(_net(), AdaptationConfig(enabled=True, steps=2, lr=1e-4, duty_cycle=1.0))
    b = AdaptationWorker(_net(), AdaptationConfig(enabled=True, steps=2, lr=1e-4, duty_cycle=1.0))
    ra, rb = a.run_round(_snapshot(frames)), b.run_round(_snapshot(frames))
    assert ra.train_losses == pytest.approx(rb.train_losses, rel=1e-6)
    assert ra.accepted == rb.accepted


def _shadow_drift(w: AdaptationWorker) -> float:
    """Largest ‖θ − θ₀‖ / ‖θ₀‖ of the shadow's trained tensors (what the last round's steps produced)."""
    return max(float((p.detach() - p0.float()).norm() / p0.float().norm()) for (p, _), p0 in zip(w._pairs, w._initial,
                                                                                        strict=True))


def test_max_drift_keeps_every_trained_tensor_in_its_ball_around_the_initial_weights(frames):
    cfg = dict(enabled=True, steps=3, lr=1e-2, duty_cycle=1.0, min_improvement=-1e9)  # big steps, always accepted
    free = AdaptationWorker(_net(), AdaptationConfig(**cfg))
    free.run_round(_snapshot(frames))
    assert _shadow_drift(free) > 0.02  # without the bound these steps go well past it
    bounded = AdaptationWorker(_net(), AdaptationConfig(**cfg, max_drift=0.02))
    for _ in range(2):  # accepted rounds accumulate; the ball is around the initial weights, not the last round's
        assert bounded.run_round(_snapshot(frames)).accepted
    assert _shadow_drift(bounded) <= 0.02 * (1 + 1e-5)
    assert 0.0 < bounded.max_relative_drift() <= 0.02 * (1 + 1e-5)
    assert bounded.status()["max_drift"] == 0.02
    with pytest.raises(ValueError, match="max_drift"):
        AdaptationConfig(max_drift=-0.1)


def test_motion_label_is_head1_of_the_initial_weights_after_rounds_changed_them(frames):
    """The motion term's label comes from the base weights, not from the accumulated adapted ones; off, none is made."""
    net = _net()
    reference = _net()  # the same initial weights, never adapted
    loss = dict(w_traj=0.0, w_align=0.0, depth_on_track_anchor=True, w_motion=10.0)
    cfg = AdaptationConfig(enabled=True, steps=3, lr=1e-2, params="track_head", duty_cycle=1.0,
                           min_improvement=-1e9, loss=loss)
    w = AdaptationWorker(net, cfg)
    snap = _snapshot(frames)
    res = w.run_round(snap)
    assert res.accepted and w.max_relative_drift() > 0 and all(np.isfinite(res.train_losses))
    frames_idx = [0, 2, 4]
    with torch.no_grad():
        imgs = snap.images[frames_idx]
        want = reference(imgs[:1].expand(3, -1, -1, -1), imgs).track_pts
        now = net(imgs[:1].expand(3, -1, -1, -1), imgs).track_pts
    label = w._labels(snap, frames_idx).base_track_pts
    assert torch.allclose(label, want, atol=1e-5) and not torch.allclose(now, want, atol=1e-3)
    off = AdaptationWorker(_net(), AdaptationConfig(enabled=True, loss={"w_traj": 0.0}))
    assert off._labels(snap, frames_idx).base_track_pts is None


def test_validation_labels_are_made_once_per_snapshot_and_give_the_same_loss(frames, monkeypatch):
    """st4rtrack-adapt validates every round on the same snapshots: their labels (KLT, the base head 1) are made
    once; a new snapshot object gets its own; only the current set is kept."""
    cfg = AdaptationConfig(enabled=True, loss={"w_motion": 1.0})
    w = AdaptationWorker(_net(), cfg)
    a, b = _snapshot(frames), _snapshot(frames, (1, 3, 5, 7, 9, 11))
    calls: list[WindowSnapshot] = []
    real = w._labels
    monkeypatch.setattr(w, "_labels", lambda s, f: calls.append(s) or real(s, f))
    first = w.validation_loss([a, b])
    assert math.isfinite(first) and calls == [a, b]
    assert w.validation_loss([a, b]) == first and len(calls) == 2
    assert math.isclose(AdaptationWorker(_net(), cfg).validation_loss([a, b]), first, rel_tol=1e-6)  # uncached
    c = _snapshot(frames)  # same content, another object
    w.validation_loss([a, c])
    assert len(calls) == 3 and calls[-1] is c and set(w._val_labels) == {id(a), id(c)}


def test_nan_rolls_back_and_repeated_failures_restore_initial_weights(frames, monkeypatch):
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=True, steps=1, duty_cycle=1.0, max_consecutive_failures=2))
    names = trainable_names(net, "heads")
    initial = _params(net, names)
    with torch.no_grad():  # pretend an earlier round had been accepted
        dict(net.named_parameters())[names[0]].add_(1.0)
    monkeypatch.setattr(w, "_loss", lambda *a, **k: torch.full((), float("nan")))
    r1 = w.run_round(_snapshot(frames))
    assert not r1.accepted and "non-finite" in r1.reason
    assert not torch.equal(_params(net, names)[0], initial[0])  # rolled back = inference model untouched
    w.run_round(_snapshot(frames))
    assert w.resets == 1 and all(torch.equal(a, b) for a, b in zip(_params(net, names), initial, strict=True))


def test_submit_is_refused_while_busy_or_disabled_and_the_thread_stops(frames, monkeypatch):
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=False, steps=1, duty_cycle=1.0))
    assert not w.submit(_snapshot(frames))
    w.set_enabled(True)
    gate = threading.Event()

    def slow_round(snap):
        gate.wait(5)
        return None

    monkeypatch.setattr(w, "run_round", slow_round)
    w.start()
    assert w.submit(_snapshot(frames))
    deadline = time.time() + 5
    while not w.status()["busy"] and time.time() < deadline:
        time.sleep(0.01)
    assert w.status()["busy"] and not w.submit(_snapshot(frames))
    gate.set()
    assert w.stop(timeout=5)


def test_tracker_offers_snapshots_and_inference_runs_during_a_round(frames):
    net = _net()
    w = AdaptationWorker(net, AdaptationConfig(enabled=True, every_n_frames=4, window_frames=4, holdout_frames=1,
                                               steps=2, lr=1e-4, duty_cycle=1.0))
    offered = []
    real_submit = w.submit
    w.submit = lambda snap: offered.append(snap) or real_submit(snap)  # type: ignore[method-assign]
    cfg = TrackerConfig(window_size=50, min_visible_fraction=0.0, num_queries=32, map_every=0)
    tracker = OnlineTracker(StreamingEngine(net), cfg, w)
    assert tracker.inference_lock is w.lock
    w.start()
    try:
        for f in frames:
            tracker.step(FrameInput(f.stamp_ns, f.rgb, f.k))
        assert len(offered) >= 2
        snap = offered[0]
        assert snap.images.shape == (4, 3, 80, 128) and snap.rgb.shape == (4, 80, 128, 3) and snap.depth is None
        # KLT gets every frame since the anchor; the snapshot's frames sit at chain_index in it
        assert snap.chain_rgb is not None and snap.chain_index is not None and snap.chain_index[0] == 0
        assert len(snap.chain_rgb) == int(snap.chain_index[-1]) + 1 and np.all(np.diff(snap.chain_index) > 0)
        assert np.array_equal(np.stack(snap.chain_rgb)[snap.chain_index], snap.rgb)
        # the stamps say which frames the snapshot holds (the anchor first): an offline label source reads them
        by_stamp = {f.stamp_ns: f for f in frames}
        assert snap.stamps_ns is not None and snap.stamps_ns[0] == frames[0].stamp_ns
        assert all(np.array_equal(by_stamp[int(t)].rgb, im) for t, im in zip(snap.stamps_ns, snap.rgb, strict=True))
        deadline = time.time() + 30
        while w.status()["busy"] and time.time() < deadline:
            time.sleep(0.05)
        assert w.rounds >= 1
    finally:
        assert w.stop(timeout=10)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="params"):
        AdaptationConfig(params="everything")
    with pytest.raises(ValueError, match="holdout"):
        AdaptationConfig(window_frames=3, holdout_frames=2)
    with pytest.raises(ValueError, match="unknown"):
        AdaptationConfig.from_dict({"stepz": 3})
    with pytest.raises(KeyError):
        AdaptationConfig(loss={"w_trajectory": 1.0})
    assert "heads" in PARAM_SETS and "track_head" in PARAM_SETS


def test_synchronous_mode_runs_the_round_in_submit(frames):
    w = AdaptationWorker(_net(), AdaptationConfig(enabled=True, steps=1, duty_cycle=1.0, synchronous=True))
    assert w.submit(_snapshot(frames)) and w.rounds == 1 and not w.status()["busy"]


class _ShiftTracker(torch.nn.Module):
    """A stand-in *plug-in* (not the network): every query moves 1.5 px right per frame."""

    def forward(self, video: torch.Tensor, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = torch.arange(video.shape[1], dtype=torch.float32)[:, None]
        uv = queries[0, :, 1:][None] + torch.stack([1.5 * steps, 0 * steps], -1)
        return uv[None], torch.ones(1, video.shape[1], queries.shape[1])


class _FlatDepth(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 1.0 + images.mean(1)


def test_torchscript_plugins_replace_klt_and_supply_depth(frames, tmp_path):
    track_path, depth_path = tmp_path / "tracker.pt", tmp_path / "depth.pt2"
    torch.jit.script(_ShiftTracker()).save(str(track_path))  # TorchScript
    frames_dim = {"images": {0: torch.export.Dim("f", min=1, max=64)}}
    torch.export.save(torch.export.export(_FlatDepth(), (torch.rand(3, 3, 80, 128),), dynamic_shapes=frames_dim),
                      str(depth_path))  # torch.export
    cfg = AdaptationConfig(enabled=True, steps=1, duty_cycle=1.0, track_model=str(track_path),
                           depth_model=str(depth_path))
    w = AdaptationWorker(_net(), cfg)
    assert "tracker.pt" in w.status()["pseudo_labels"] and "depth.pt2" in w.status()["pseudo_labels"]
    snap = _snapshot(frames)
    snap.depth = None  # no depth image: the depth plug-in labels it
    labels = w._labels(snap, [0, 1, 2])
    q = labels.query_uv.numpy()
    assert np.allclose(labels.tracks_uv.numpy()[2], q + np.array([3.0, 0.0])) and labels.track_vis.all()
    assert labels.mono_depth is not None and labels.mono_depth.shape == (3, 80, 128)
    assert np.isfinite(w.run_round(snap).loss_before)


def test_plugins_absent_or_remote_are_refused_clearly(tmp_path):
    assert "KLT" in AdaptationWorker(_net(), AdaptationConfig()).status()["pseudo_labels"]
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        AdaptationWorker(_net(), AdaptationConfig(track_model="https://example.com/cotracker.pt"))
    with pytest.raises(FileNotFoundError, match="not a local file"):
        AdaptationWorker(_net(), AdaptationConfig(depth_model=str(tmp_path / "missing.pt")))
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match=r"not a TorchScript or torch\.export archive"):
        AdaptationWorker(_net(), AdaptationConfig(track_model=str(bogus)))


def test_labels_pass_through_the_hook_and_are_untouched_without_one(frames):
    """No hook: the labels are KLT's and the snapshot's depth, and no random number is drawn for them. A hook gets
    the labels, the image size and the worker's generator, and its result is what the round trains on."""
    snap = _snapshot(frames)
    cfg = AdaptationConfig(enabled=True)
    plain = AdaptationWorker(_net(), cfg)
    state = plain._gen.get_state()
    labels = plain._labels(snap, [0, 1, 2])
    uv, _ = klt_tracks(snap.rgb[[0, 1, 2]], labels.query_uv.numpy(), plain.klt_cfg)
    assert np.allclose(labels.tracks_uv.numpy(), uv) and np.array_equal(labels.mono_depth.numpy(), snap.depth[:3])
    assert torch.equal(plain._gen.get_state(), state)

    seen = []

    def hook(uv, depth, hw, generator):
        seen.append((uv.shape, depth.shape, hw, generator))
        return uv + 1.0, depth * 2.0

    hooked = AdaptationWorker(_net(), cfg, label_transform=hook)
    out = hooked._labels(snap, [0, 1, 2])
    assert seen == [(uv.shape, snap.depth[:3].shape, snap.rgb.shape[1:3], hooked._gen)]
    assert np.allclose(out.tracks_uv.numpy(), labels.tracks_uv.numpy() + 1.0)
    assert np.allclose(out.mono_depth.numpy(), 2.0 * snap.depth[:3])


def test_a_label_source_replaces_klt_and_the_transform_applies_after_it(frames):
    """With a label source the round trains on its labels (no KLT), the label transform sees the source's labels,
    and the worker's status names the source; without one it is KLT (test above). Snapshot stamps follow a window
    that is cut down."""
    snap = _snapshot(frames)
    snap.stamps_ns = np.array([frames[i].stamp_ns for i in (0, 2, 4, 6, 8, 10)])
    calls = []

    class Source:
        name = "stub source"

        def __call__(self, s, fr):
            calls.append((s, list(fr)))
            query = np.array([[10.0, 20.0], [30.0, 40.0]])
            uv = (query[None] + np.arange(len(fr))[:, None, None]).astype(np.float32)
            vis = np.ones((len(fr), 2), bool)
            vis[-1, 1] = False
            return query, uv, vis, np.full((len(fr), *s.rgb.shape[1:3]), 2.0, np.float32)

    seen = []

    def hook(uv, depth, hw, generator):
        seen.append(uv.copy())
        return uv + 0.5, depth

    cfg = AdaptationConfig(enabled=True, steps=1, duty_cycle=1.0)
    assert "KLT" in AdaptationWorker(_net(), cfg).status()["pseudo_labels"]
    w = AdaptationWorker(_net(), cfg, label_source=Source(), label_transform=hook)
    assert w.status()["pseudo_labels"] == "tracks and depth: stub source"
    labels = w._labels(snap, [0, 2, 3])
    assert calls == [(snap, [0, 2, 3])]
    assert np.array_equal(labels.query_uv.numpy(), [[10.0, 20.0], [30.0, 40.0]])
    assert np.array_equal(seen[0][2], [[12.0, 22.0], [32.0, 42.0]])  # the transform got the source's tracks
    assert np.array_equal(labels.tracks_uv.numpy(), seen[0] + 0.5)
    assert labels.track_vis.numpy().sum() == 5 and float(labels.mono_depth.mean()) == 2.0
    assert np.isfinite(w.run_round(snap).loss_before)
    w.window_frames = 4
    small = w._fit_window(snap)
    assert np.array_equal(small.stamps_ns, snap.stamps_ns[[0, 1, 3, 5]])
