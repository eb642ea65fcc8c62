"""Each CPU precision mode of the streaming engine gives finite outputs close to fp32 on the real network."""

from __future__ import annotations

import pytest
import torch

from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.streaming import CPU_MODES, EngineOptions, StreamingEngine

# Relative pointmap difference allowed against fp32 (mean |Δxyz| / mean |xyz|): the 1 % bar for the
# reduced-precision modes (measured here on tiny_128 with these seeds: ≤ 0.35 %; on the default small_256 weights
# see results/benchmarks/bench_cpu_precision.json), float rounding only for the fp32 ones. A wrong layout, a dropped
# head or stale weights give differences of order 1.
TOLERANCE = {"fp32": 1e-5, "fp32+nhwc": 1e-5, "int8-linear+nhwc": 0.01, "bf16-enc-dec": 0.01, "bf16+nhwc": 0.01}


def _net() -> St4RTrackNet:
    torch.manual_seed(3)
    return St4RTrackNet(preset("tiny_128")).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 80, 128, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def reference():
    """fp32 outputs of a fresh network for one anchor and two frames."""
    net = _net()
    anchor, frames = _images(1, 0), _images(2, 1)
    with torch.no_grad():
        ref = net(anchor.expand(2, -1, -1, -1), frames)
    return anchor, frames, ref


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm(dim=-1).mean() / b.norm(dim=-1).mean())


@pytest.mark.parametrize("mode", sorted(CPU_MODES))
def test_mode_is_finite_and_close_to_fp32(mode, reference):
    anchor, frames, ref = reference
    options = EngineOptions.cpu_mode(mode)
    net = _net()
    engine = StreamingEngine(net, options)  # own network: modes change its layout/hooks
    w = net.downstream_head2.dpt.scratch.layer1_rn.weight
    assert w.is_contiguous(memory_format=torch.channels_last) == options.channels_last_heads
    engine.set_anchor(anchor)
    out = engine.step(frames)
    for name in ("track_pts", "track_conf", "recon_pts", "recon_conf"):
        t = getattr(out, name)
        assert t.dtype == torch.float32 and t.shape == getattr(ref, name).shape, name
        assert torch.isfinite(t).all(), name
    assert _rel(out.track_pts, ref.track_pts) < TOLERANCE[mode]
    assert _rel(out.recon_pts, ref.recon_pts) < TOLERANCE[mode]
    conf_rel = float(((out.recon_conf - ref.recon_conf).abs() / ref.recon_conf).mean())
    assert conf_rel < TOLERANCE[mode]


def test_bf16_heads_differ_from_fp32_heads(reference):
    """bf16_heads really moves the heads to bf16 (else the mode would silently equal bf16-enc-dec)."""
    anchor, frames, _ = reference
    outs = []
    for mode in ("bf16-enc-dec", "bf16+nhwc"):
        engine = StreamingEngine(_net(), EngineOptions.cpu_mode(mode))
        engine.set_anchor(anchor)
        outs.append(engine.step(frames).recon_pts)
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_int8_copy_follows_weight_updates(reference):
    """Adaptation writes into the network's parameters in place; the int8 engine must serve the new weights."""
    anchor, frames, _ = reference
    net = _net()
    engine = StreamingEngine(net, EngineOptions(int8_linear=True))
    engine.set_anchor(anchor)
    before = engine.step(frames).recon_pts
    with torch.no_grad():
        for blk in net.dec_blocks2:
            blk.mlp.fc2.weight.mul_(0.5)  # an in-place update, as AdaptationWorker's copy_ does
        ref = net(anchor.expand(2, -1, -1, -1), frames).recon_pts
    engine.set_anchor(anchor)
    after = engine.step(frames).recon_pts
    assert (after - before).abs().max() > 1e-3
    assert _rel(after, ref) < TOLERANCE["int8-linear+nhwc"]


def test_default_path_is_unchanged(reference):
    """Without the new options the engine has no hooks on the heads and keeps NCHW weights."""
    net = _net()
    StreamingEngine(net, EngineOptions())
    assert not net.downstream_head1.dpt._forward_hooks
    w = net.downstream_head1.dpt.scratch.layer1_rn.weight
    assert w.is_contiguous()


def test_invalid_combinations_raise():
    with pytest.raises(ValueError, match="bf16_heads"):
        EngineOptions(bf16_heads=True)
    with pytest.raises(ValueError, match="int8_linear"):
        EngineOptions(precision="bf16", int8_linear=True)
    with pytest.raises(ValueError, match="unknown CPU mode"):
        EngineOptions.cpu_mode("fp8")
