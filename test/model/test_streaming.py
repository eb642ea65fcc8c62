"""The streaming engine gives the pair forward's numbers, with no host synchronisation in the step."""

from __future__ import annotations

import pytest
import torch

from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import EngineOptions, StreamingEngine


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return St4RTrackNet(preset("tiny_128")).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 80, 128, generator=g) * 2 - 1


def test_streaming_equals_pair_forward(net):
    anchor, frames = _images(1, 0), _images(4, 1)
    engine = StreamingEngine(net)
    engine.set_anchor(anchor)
    streamed = engine.step(frames)
    one_by_one = [engine.step(f) for f in frames]
    with torch.no_grad():
        pair = net(anchor.expand(4, -1, -1, -1), frames)
    for name in ("track_pts", "track_conf", "recon_pts", "recon_conf"):
        ref = getattr(pair, name)
        assert (getattr(streamed, name) - ref).abs().max() < 1e-5, name
        single = torch.cat([getattr(o, name) for o in one_by_one])
        assert (single - ref).abs().max() < 1e-5, name


def test_pair_protocol_option_gives_the_same_numbers(net):
    anchor, frames = _images(1, 7), _images(3, 8)
    cached, pair = StreamingEngine(net), StreamingEngine(net, EngineOptions(cache_anchor=False))
    cached.set_anchor(anchor)
    pair.set_anchor(anchor)
    assert (cached.step(frames).recon_pts - pair.step(frames).recon_pts).abs().max() < 1e-5


def test_new_anchor_replaces_the_cache(net):
    a1, a2, f = _images(1, 2), _images(1, 3), _images(1, 4)
    engine = StreamingEngine(net)
    engine.set_anchor(a1)
    first = engine.step(f).track_pts
    engine.set_anchor(a2)
    second = engine.step(f).track_pts
    with torch.no_grad():
        ref = net(a2, f).track_pts
    assert (second - ref).abs().max() < 1e-5
    assert (first - second).abs().max() > 1e-3


def test_reanchoring_on_the_stepped_frame_encodes_it_once(net, monkeypatch):
    """step(f); set_anchor(f); step(f) — what the tracker does at re-anchoring — runs the encoder once for f, with
    exactly the outputs of encoding it each time; a changed tensor or changed weights are encoded again."""
    a, f = _images(1, 11), _images(1, 12)
    calls = []
    engine = StreamingEngine(net)
    real = engine._encode
    monkeypatch.setattr(engine, "_encode", lambda x: calls.append(1) or real(x))
    engine.set_anchor(a)
    engine.step(f)
    engine.set_anchor(f)
    own = engine.step(f)
    assert len(calls) == 2  # the old anchor, then f once
    fresh = StreamingEngine(net)  # clones defeat the reuse: the reference encodes every time
    fresh.set_anchor(f.clone())
    ref = fresh.step(f.clone())
    for name in ("track_pts", "track_conf", "recon_pts", "recon_conf"):
        assert torch.equal(getattr(own, name), getattr(ref, name)), name
    f.mul_(0.5)  # written in place: encoded again
    engine.step(f)
    assert len(calls) == 3
    with torch.no_grad():
        next(net.parameters()).add_(0.0)  # any in-place write to the weights (adaptation's copy_)
    engine.step(f)
    assert len(calls) == 4
    with torch.inference_mode():  # frames made under inference mode (the node's tracker) have no write counter
        g = _images(1, 13)
        engine.step(g)
        engine.set_anchor(g)
        engine.step(g)
    assert len(calls) == 5


@pytest.mark.parametrize("options", [EngineOptions(), EngineOptions(cache_anchor=False),
                                     EngineOptions(int8_linear=True)], ids=["cached", "pair", "int8"])
def test_step_without_head_two_gives_head_one_exactly(net, options):
    """recon=False (re-anchoring) skips head 2 only: the tracking maps are the full step's, bit for bit."""
    anchor, frames = _images(1, 21), _images(2, 22)
    engine = StreamingEngine(net, options)
    engine.set_anchor(anchor)
    full, track_only = engine.step(frames), engine.step(frames, recon=False)
    assert track_only.recon_pts is None and track_only.recon_conf is None
    assert len(track_only.maps()) == 2 and len(full.maps()) == 4
    assert torch.equal(full.track_pts, track_only.track_pts) and torch.equal(full.track_conf, track_only.track_conf)
    with pytest.raises(ValueError, match="head 2"):
        _ = track_only.recon_sigma2


def test_step_needs_an_anchor_and_matching_size(net):
    engine = StreamingEngine(net)
    with pytest.raises(RuntimeError, match="set_anchor"):
        engine.step(_images(1, 0))
    engine.set_anchor(_images(1, 0))
    with pytest.raises(ValueError, match="differs"):
        engine.step(torch.zeros(1, 3, 96, 128))


def test_step_runs_on_meta_device_so_it_has_no_host_syncs():
    """Meta tensors hold no data: any .item(), int(tensor) or value-dependent branch in the step would raise."""
    with torch.device("meta"):
        meta_net = St4RTrackNet(preset("tiny_128"))
        engine = StreamingEngine(meta_net)
        engine.set_anchor(torch.empty(1, 3, 80, 128))
        out = engine.step(torch.empty(2, 3, 80, 128))
    assert out.track_pts.shape == (2, 80, 128, 3) and out.track_pts.device.type == "meta"


def test_graph_and_bf16_options_fall_back_on_cpu(net):
    anchor, frames = _images(1, 5), _images(2, 6)
    ref = StreamingEngine(net)
    ref.set_anchor(anchor)
    fast = StreamingEngine(net, EngineOptions(precision="bf16", cuda_graph=True))
    fast.set_anchor(anchor)
    a, b = ref.step(frames), fast.step(frames)
    assert a.track_pts.dtype == b.track_pts.dtype == torch.float32  # heads stay fp32
    assert torch.isfinite(b.track_pts).all()
    rel = (a.recon_pts - b.recon_pts).norm(dim=-1).mean() / a.recon_pts.norm(dim=-1).mean()
    assert rel < 0.05
    with pytest.raises(ValueError):
        EngineOptions(precision="fp8")


def test_compile_failure_falls_back_to_eager(net, monkeypatch):
    def broken_compile(fn, **_):
        def run(*a, **k):
            raise RuntimeError("simulated compiler failure")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    anchor, frames = _images(1, 9), _images(2, 10)
    eng = StreamingEngine(net, EngineOptions(compile=True))
    eng.set_anchor(anchor)
    out = eng.step(frames)
    with torch.no_grad():
        ref = net(anchor.expand(2, -1, -1, -1), frames)
    assert (out.recon_pts - ref.recon_pts).abs().max() < 1e-5


def test_fastest_options_are_plain_on_cpu():
    assert EngineOptions.fastest("cpu") == EngineOptions()
    fast = EngineOptions.fastest("cuda")
    assert fast.precision == "bf16" and fast.cuda_graph and fast.parallel_decoders


def test_tables_cached_under_inference_mode_still_serve_autograd(net):
    """The RoPE table cache is shared by inference (inference_mode) and adaptation/training (autograd)."""
    from st4rtrack_ros.model import rope

    rope._TABLES.clear()
    engine = StreamingEngine(net)
    engine.set_anchor(_images(1, 11))  # fills the cache inside inference_mode
    img = _images(1, 12)
    out = net(img, img)  # autograd on: must not trip over inference tensors
    out.recon_pts.sum().backward()
    assert net.downstream_head2.dpt.head[4].bias.grad is not None
    net.zero_grad(set_to_none=True)
