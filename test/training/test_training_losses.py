"""The supervised loss: its confidence term, the moving-pixel reweighting and its scale invariance."""

from __future__ import annotations

import math

import pytest
import torch

from st4rtrack_ros.model.network import PairOutput
from st4rtrack_ros.training.losses import LossConfig, confidence_loss, pair_scale, supervised_loss


def _batch(b: int = 2, h: int = 6, w: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    track = torch.randn(b, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    recon = torch.randn(b, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    recon[0] = track[0]  # pair 0 is (anchor, anchor): both pointmaps are the anchor's surface
    dyn = torch.zeros(b, h, w, dtype=torch.bool)
    dyn[:, :2, :3] = True
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[:, -1] = False
    return {"track_pts": track, "recon_pts": recon, "track_valid": valid, "recon_valid": valid.clone(),
            "track_dyn": dyn, "recon_dyn": dyn.clone(), "is_self": torch.tensor([True, False])}


def _out(batch, conf1, conf2, noise: float = 0.0, scale: float = 1.0) -> PairOutput:
    g = torch.Generator().manual_seed(1)
    t = (batch["track_pts"] + noise * torch.randn(batch["track_pts"].shape, generator=g)) * scale
    r = (batch["recon_pts"] + noise * torch.randn(batch["recon_pts"].shape, generator=g)) * scale
    return PairOutput(track_pts=t, track_conf=conf1, recon_pts=r, recon_conf=conf2)


def test_zero_error_leaves_only_the_log_confidence_term():
    batch = _batch()
    # exact prediction up to a global scale: the scale-relative error is zero everywhere
    conf1 = 1 + torch.rand(batch["track_valid"].shape)
    conf2 = 1 + torch.rand(batch["track_valid"].shape)
    cfg = LossConfig(alpha=0.2)
    total, terms = supervised_loss(_out(batch, conf1, conf2, scale=3.7), batch, cfg)
    v = batch["track_valid"]
    expected = -0.2 * (torch.log(conf1[v]).mean() + torch.log(conf2[v]).mean())
    assert float(total) == pytest.approx(float(expected), abs=1e-5)
    assert float(terms["depth"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["epe_track"]) == pytest.approx(0.0, abs=1e-5)


def test_moving_pixels_get_a_fixed_detached_weight():
    h, w = 2, 3
    err = torch.tensor([[[0.5, 0.2, 0.1], [0.3, 0.4, 0.6]]], requires_grad=True)
    conf = torch.tensor([[[2.0, 3.0, 1.5], [1.2, 4.0, 2.5]]], requires_grad=True)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    dyn = torch.zeros(1, h, w, dtype=torch.bool)
    dyn[0, 1, 1] = True  # the moving pixel has the largest confidence (4): the reference is the static max (3)
    cfg = LossConfig(alpha=0.2, dyn_factor=5.0)
    loss = confidence_loss(err, conf, valid, dyn, cfg)
    loss.backward()
    n = h * w
    # the moving pixel's error is weighted by 5 × 3 = 15, not by its own confidence
    assert float(err.grad[0, 1, 1]) == pytest.approx(15.0 / n)
    assert float(err.grad[0, 0, 0]) == pytest.approx(2.0 / n)
    # its confidence still learns the calibrating gradient e − α/c (the error is detached there) ...
    assert float(conf.grad[0, 1, 1]) == pytest.approx((0.4 - 0.2 / 4.0) / n)
    # ... and the weight is detached: no gradient reaches the static pixel holding the max through w
    assert float(conf.grad[0, 0, 1]) == pytest.approx((0.2 - 0.2 / 3.0) / n)
    plain = confidence_loss(err, conf, valid, dyn, LossConfig(dynamic_reweight=False))
    expected = (conf * err - 0.2 * torch.log(conf)).mean()
    assert float(plain.detach()) == pytest.approx(float(expected.detach()))


def test_loss_is_invariant_to_scaling_prediction_and_ground_truth():
    batch = _batch()
    conf = 1 + torch.rand(batch["track_valid"].shape)
    cfg = LossConfig()
    ref, _ = supervised_loss(_out(batch, conf, conf, noise=0.3), batch, cfg)
    for s_pred, s_gt in ((2.5, 1.0), (1.0, 0.1), (7.0, 3.0)):
        scaled = {k: v * s_gt if k.endswith("_pts") else v for k, v in batch.items()}
        out = _out(batch, conf, conf, noise=0.3, scale=s_pred)
        loss, _ = supervised_loss(out, scaled, cfg)
        assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    assert float(ref) > 0.0


def test_scale_is_the_mean_distance_of_valid_points_and_align_uses_self_pairs():
    pts = torch.zeros(1, 2, 2, 3)
    pts[0, 0, 0, 2], pts[0, 0, 1, 2], pts[0, 1, 0, 2] = 2.0, 4.0, 100.0
    valid = torch.tensor([[[True, True], [False, False]]])
    assert float(pair_scale(pts, valid)[0]) == pytest.approx(3.0)
    batch = _batch()
    conf = torch.full(batch["track_valid"].shape, math.e)
    out = _out(batch, conf, conf)
    out.recon_pts = out.track_pts.clone()  # heads agree → L_align = 0 on the self pair
    _, terms = supervised_loss(out, batch, LossConfig())
    assert float(terms["align"]) == pytest.approx(0.0, abs=1e-6)
    batch["is_self"][:] = False
    out.recon_pts = out.track_pts + 1.0
    _, terms = supervised_loss(out, batch, LossConfig())
    assert float(terms["align"]) == 0.0  # no self pair in the batch: no alignment term


def test_shared_scale_makes_pairs_of_one_anchor_agree_on_scale():
    """Per pair, each pair's output scale is free; with shared_scale the two pairs of a group (one anchor) must
    agree: exact shapes at two different scales cost nothing per pair, and a positive error shared."""
    batch = _batch()
    conf = torch.full(batch["track_valid"].shape, 2.0)
    exact = _out(batch, conf, conf)
    scales = torch.tensor([1.0, 2.0])[:, None, None, None]  # pair 1 twice as large as pair 0
    disagree = PairOutput(track_pts=exact.track_pts * scales, track_conf=conf, recon_pts=exact.recon_pts * scales,
                          recon_conf=conf)
    per_pair, _ = supervised_loss(disagree, batch, LossConfig())
    base, _ = supervised_loss(exact, batch, LossConfig())
    assert float(per_pair) == pytest.approx(float(base), abs=1e-6)
    shared, terms = supervised_loss(disagree, batch, LossConfig(shared_scale=True), group=2)
    assert float(shared) > float(base) + 0.1
    assert float(terms["epe_track"]) == pytest.approx(0.0, abs=1e-5)  # metrics stay per pair
    agree, _ = supervised_loss(_out(batch, conf, conf, scale=3.0), batch, LossConfig(shared_scale=True), group=2)
    assert float(agree) == pytest.approx(float(base), abs=1e-5)  # a common scale is still free
    with pytest.raises(ValueError, match="groups"):
        supervised_loss(exact, batch, LossConfig(shared_scale=True), group=3)
