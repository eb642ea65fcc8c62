"""St4RTrack / St4RTrack+ losses: zero at the truth, switches, σ² bound, missing labels, degenerate inputs."""

import math

import pytest
import torch

from st4rtrack_ros.adaptation.losses import (
    LossConfig,
    PseudoLabels,
    WindowPrediction,
    compute_losses,
    window_losses,
)
from st4rtrack_ros.adaptation.synthetic import make_scene
from st4rtrack_ros.model.uncertainty import SIGMA2_MAX, SIGMA2_MIN

HIGH_CONF = 2.0 / SIGMA2_MIN  # σ² at the floor: the heteroscedastic log term is exactly 0


@pytest.fixture(scope="module")
def scene():
    """Occluder-free window: bilinear reads of head 2 at sub-pixel tracks are exact up to perspective curvature."""
    return make_scene(frames=4, height=48, width=80, n_tracks=96, seed=0, occluder=False)


@pytest.fixture(scope="module")
def occ_scene():
    """The same window with a floating occluder: some tracks are hidden in later frames."""
    return make_scene(frames=4, height=48, width=80, n_tracks=96, seed=0)


def _pred(scene, conf: float = HIGH_CONF, track=None, recon=None):
    shape = scene.track_pts.shape[:3]
    return WindowPrediction(
        track_pts=scene.track_pts if track is None else track,
        recon_pts=scene.recon_pts if recon is None else recon,
        track_conf=torch.full(shape, conf),
        recon_conf=torch.full(shape, conf),
    )


def _labels(scene, tracks=None, vis=None, depth="truth"):
    return PseudoLabels(
        query_uv=scene.query_uv,
        tracks_uv=scene.tracks_uv if tracks is None else tracks,
        track_vis=vis,
        mono_depth=scene.depth * 2.7 if depth == "truth" else depth,  # scale-free label
    )


def _grads_finite(*ts):
    return all(t.grad is None or torch.isfinite(t.grad).all() for t in ts)


@pytest.mark.parametrize("cfg", [LossConfig.vanilla(), LossConfig.plus()], ids=["vanilla", "plus"])
def test_zero_for_perfect_predictions(scene, cfg):
    out = compute_losses(_pred(scene), _labels(scene, vis=scene.visible), scene.k, scene.t_world_cam, cfg)
    assert all(out.present[t] for t in ("traj", "depth", "align")) and not out.present["motion"]  # motion: off
    assert out.terms["traj"].item() < 1e-3  # pixels
    assert out.terms["depth"].item() < 1e-9
    # align reads head 2 between pixel centres; on a tilted plane that is exact up to perspective curvature
    assert out.terms["align"].item() < 1e-3 * scene.depth.mean().item()
    assert out.total.item() < 1e-2


def test_window_losses_estimates_camera_and_backpropagates_to_head2(scene):
    recon = scene.recon_pts.clone().requires_grad_(True)
    track = scene.track_pts.clone().requires_grad_(True)
    out = window_losses(_pred(scene, track=track, recon=recon), _labels(scene), LossConfig.plus(w_depth=0, w_align=0))
    assert out.poses.success.all() and out.total.item() < 1e-3
    assert torch.allclose(out.k, scene.k, atol=1e-2)
    # traj depends on head 2 only through the pose: a non-zero gradient there proves the GN step is differentiable
    track2 = (scene.track_pts + torch.tensor([0.05, 0.0, 0.0])).requires_grad_(True)
    out = window_losses(_pred(scene, track=track2, recon=recon), _labels(scene), LossConfig.plus(w_depth=0, w_align=0))
    out.total.backward()
    assert recon.grad.abs().sum() > 0 and track2.grad.abs().sum() > 0 and _grads_finite(recon, track2)


def test_occlusion_mask_switch_on_a_corrupted_occluded_track(occ_scene):
    scene = occ_scene
    f, n = torch.nonzero(scene.occluded)[0].tolist()  # a track hidden behind the occluder in frame f
    tracks = scene.tracks_uv.clone()
    tracks[f, n] += torch.tensor([25.0, -10.0])  # the tracker drifted while it could not see the point
    lab = _labels(scene, tracks=tracks, depth=None)
    van = compute_losses(_pred(scene), lab, scene.k, scene.t_world_cam, LossConfig.vanilla())
    masked = compute_losses(
        _pred(scene), lab, scene.k, scene.t_world_cam, LossConfig.vanilla(use_occlusion_mask=True, mask_floor=0.0)
    )
    assert van.terms["traj"].item() > 0.5
    assert masked.terms["traj"].item() < 1e-4
    assert not masked.mask[f, n] and masked.mask[0].all()
    floored = compute_losses(
        _pred(scene), lab, scene.k, scene.t_world_cam, LossConfig.vanilla(use_occlusion_mask=True, mask_floor=0.1)
    )
    assert 1e-4 < floored.terms["traj"].item() < van.terms["traj"].item()


def test_pseudo_visibility_masks_align_in_vanilla(scene):
    def align(tracks, vis):
        lab = _labels(scene, tracks=tracks, vis=vis)
        return compute_losses(_pred(scene), lab, scene.k, scene.t_world_cam, LossConfig.vanilla())

    vis = torch.ones_like(scene.visible)
    clean = align(scene.tracks_uv, vis).terms["align"].item()  # perspective-curvature floor, ~1e-4
    n = int((scene.tracks_uv[2] - scene.k[:2, 2]).norm(dim=-1).argmin())  # a track near the image centre
    tracks = scene.tracks_uv.clone()
    tracks[2, n] += 12.0
    assert align(tracks, vis).terms["align"].item() > clean + 1e-3
    vis[2, n] = False
    out = align(tracks, vis)
    assert abs(out.terms["align"].item() - clean) < 2e-5
    assert out.terms["traj"].item() > 0.1  # vanilla traj has no visibility mask


def test_depth_term_is_scale_invariant_per_frame(scene):
    mono = scene.depth * torch.tensor([1.0, 3.0, 0.2, 7.0])[:, None, None]
    lab = PseudoLabels(mono_depth=mono)
    out = compute_losses(_pred(scene), lab, scene.k, scene.t_world_cam, LossConfig.vanilla())
    assert out.present == {"traj": False, "depth": True, "align": False, "motion": False}
    assert out.terms["depth"].item() < 1e-9
    warped = mono * (1 + 0.2 * torch.rand_like(mono))
    out = compute_losses(_pred(scene), PseudoLabels(mono_depth=warped), scene.k, scene.t_world_cam)
    assert out.terms["depth"].item() > 1e-4
    assert out.total.item() == pytest.approx(10.0 * out.terms["depth"].item())


def test_anchor_depth_label_reaches_head1_pairs_only_when_asked(scene):
    """depth_on_track_anchor: head 1's anchor pair only; depth_on_track_pairs: every pair with one shared scale (a
    static scene keeps the anchor's depth in each, so the truth scores zero, and so does a global rescale of head 1,
    but not one pair drifting in scale from the others)."""
    lab = PseudoLabels(mono_depth=scene.depth * 2.7)
    pairs = LossConfig(depth_on_track_pairs=True)
    assert compute_losses(_pred(scene), lab, scene.k, scene.t_world_cam, pairs).terms["depth"].item() < 1e-9
    assert compute_losses(_pred(scene, track=scene.track_pts * 3.0), lab, scene.k, scene.t_world_cam,
                          pairs).terms["depth"].item() < 1e-9
    one_pair_off = scene.track_pts.clone()
    one_pair_off[2] *= 1.5
    assert compute_losses(_pred(scene, track=one_pair_off), lab, scene.k, scene.t_world_cam,
                          pairs).terms["depth"].item() > 1e-3
    noisy = scene.track_pts * (1 + 0.1 * torch.rand(scene.track_pts.shape, generator=torch.Generator().manual_seed(0)))
    off = compute_losses(_pred(scene, track=noisy.clone().requires_grad_(True)), lab, scene.k, scene.t_world_cam)
    assert not off.total.requires_grad  # by default the depth label never reaches head 1
    grads = {}
    for name, cfg in [("anchor", LossConfig(depth_on_track_anchor=True)),
                      ("pairs", LossConfig(depth_on_track_pairs=True))]:
        track = noisy.clone().requires_grad_(True)
        compute_losses(_pred(scene, track=track), lab, scene.k, scene.t_world_cam, cfg).total.backward()
        grads[name] = [float(g.abs().sum()) for g in track.grad]
    assert grads["anchor"][0] > 0 and grads["anchor"][1:] == [0.0] * 3
    assert all(g > 0 for g in grads["pairs"])


def test_motion_term_keeps_the_base_motion_but_lets_the_geometry_move(scene):
    """Zero when head 1 equals the base, is the base rescaled, or is the base with one displacement field added to
    every pair (the anchor's geometry corrected, every pair following it); non-zero when one pair moves on its own.
    Its gradient reaches the pair that moved and the anchor pair, and never the base."""
    cfg = LossConfig(w_traj=0.0, w_depth=0.0, w_align=0.0, w_motion=1.0)
    base = scene.track_pts

    def motion(track, base_pts=base):
        lab = PseudoLabels(base_track_pts=base_pts)
        return compute_losses(_pred(scene, track=track), lab, scene.k, scene.t_world_cam, cfg).terms["motion"]

    gen = torch.Generator().manual_seed(0)
    correction = 0.2 * torch.rand(base.shape[1:], generator=gen) * base[0].norm(dim=-1, keepdim=True).mean()
    assert motion(base).item() == 0.0
    assert motion(base * 2.5).item() < 1e-6
    assert motion(base + correction).item() < 1e-3  # ≠ 0 only through the anchor scale the shift changes a little
    one_pair_off = base.clone()
    one_pair_off[2] += correction
    assert motion(one_pair_off).item() > 10 * motion(base + correction).item()
    track, base_pts = one_pair_off.clone().requires_grad_(True), base.clone().requires_grad_(True)
    motion(track, base_pts).backward()
    assert [float(g.abs().sum()) > 0 for g in track.grad] == [True, False, True, False] and base_pts.grad is None
    nan_pts = one_pair_off.clone()
    nan_pts[1, 0, 0] = float("nan")
    assert torch.isfinite(motion(nan_pts))
    with pytest.raises(ValueError, match="base_track_pts"):
        motion(base, base[:2])


def test_missing_labels_drop_terms(scene):
    out = compute_losses(_pred(scene), PseudoLabels(), scene.k, scene.t_world_cam)
    assert not any(out.present.values()) and out.total.item() == 0.0
    out = compute_losses(_pred(scene), _labels(scene, depth=None), scene.k, scene.t_world_cam)
    assert out.present == {"traj": True, "depth": False, "align": True, "motion": False}
    cfg = LossConfig.plus(w_traj=0.0)
    out = compute_losses(_pred(scene), _labels(scene), scene.k, scene.t_world_cam, cfg)
    assert out.present == {"traj": False, "depth": True, "align": True, "motion": False}
    out = compute_losses(_pred(scene), _labels(scene), scene.k, scene.t_world_cam, LossConfig.plus(w_motion=1.0))
    assert not out.present["motion"]  # switched on, but no base prediction to compare with


def test_sigma2_cannot_switch_the_loss_off():
    """Drive one outlier's confidence down by gradient descent: its σ² stays ≤ σ²_max and it keeps a pull."""
    scene = make_scene(frames=2, height=32, width=48, n_tracks=8, seed=1)
    tracks = scene.tracks_uv.clone()
    tracks[1, 0] += 30.0  # one outlier
    logit = torch.zeros(2, 32, 48, requires_grad=True)
    opt = torch.optim.Adam([logit], lr=0.5)
    cfg = LossConfig.plus(use_occlusion_mask=False, w_depth=0.0, w_align=0.0, sigma2_normalize=False,
                          sigma2_detach=False)  # the trainable (likelihood) form, where σ² could try to escape
    lab = PseudoLabels(query_uv=scene.query_uv, tracks_uv=tracks)
    for _ in range(100):
        pred = WindowPrediction(scene.track_pts, scene.recon_pts, track_conf=1 + logit.exp(), recon_conf=None)
        out = compute_losses(pred, lab, scene.k, scene.t_world_cam, cfg)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    q = scene.query_uv[0].long()
    assert logit[1, q[1], q[0]].item() < -3.0  # the optimiser did push this point's σ² towards the ceiling
    assert out.stats["traj_sigma2_mean"].item() <= SIGMA2_MAX
    # the loss still moves the outlier's prediction: its gradient is at least that of weight 1/σ²_max
    track = scene.track_pts.clone().requires_grad_(True)
    pred = WindowPrediction(track, scene.recon_pts, track_conf=1 + logit.detach().exp())
    compute_losses(pred, lab, scene.k, scene.t_world_cam, cfg).total.backward()
    g_out = track.grad[1, q[1], q[0]].norm().item()
    assert g_out > 1e-3
    # and the loss grows with the outlier's residual (it was not switched off)
    far = tracks.clone()
    far[1, 0] += 30.0
    pred = WindowPrediction(scene.track_pts, scene.recon_pts, track_conf=1 + logit.detach().exp())
    near_v = compute_losses(pred, lab, scene.k, scene.t_world_cam, cfg).total.item()
    far_v = compute_losses(pred, PseudoLabels(scene.query_uv, far), scene.k, scene.t_world_cam, cfg).total.item()
    assert far_v > near_v * 1.5


def test_config_from_dict_and_validation():
    d = {"w_traj": 1.0, "use_sigma2": False, "tau_mode": "absolute", "scale_fit_bounds": [0.8, 1.2]}
    cfg = LossConfig.from_dict(d)
    assert cfg.w_traj == 1.0 and not cfg.use_sigma2 and cfg.scale_fit_bounds == (0.8, 1.2)
    assert LossConfig.from_dict(None) == LossConfig()
    with pytest.raises(KeyError):
        LossConfig.from_dict({"w_trajj": 1.0})
    with pytest.raises(ValueError):
        LossConfig(sigma2_max=math.inf)
    with pytest.raises(ValueError):
        LossConfig(sigma2_prior=0.0, sigma2_detach=False)  # a free σ² without its prior could be raised at no cost
    assert LossConfig(sigma2_prior=0.0, sigma2_detach=True).sigma2_detach
    with pytest.raises(ValueError):
        LossConfig(tau_mode="percent")
    v = LossConfig.vanilla()
    assert (v.w_traj, v.w_depth, v.w_align) == (0.5, 10.0, 5.0) and not v.use_sigma2 and not v.use_occlusion_mask


@pytest.mark.parametrize("cfg", [LossConfig.vanilla(), LossConfig.plus(), LossConfig.plus(mask_floor=0.0)])
def test_degenerate_inputs_stay_finite(occ_scene, cfg):
    scene = occ_scene
    def run(track, recon, labels, t=scene.t_world_cam, conf=3.0):
        track = track.clone().requires_grad_(True)
        recon = recon.clone().requires_grad_(True)
        out = compute_losses(_pred(scene, conf=conf, track=track, recon=recon), labels, scene.k, t, cfg)
        assert torch.isfinite(out.total), out.terms
        assert all(torch.isfinite(v) for v in out.terms.values())
        if out.total.requires_grad:
            out.total.backward()
        assert _grads_finite(track, recon)
        return out

    # every tracked point far behind the wall: all occluded
    out = run(scene.track_pts * 3.0, scene.recon_pts, _labels(scene))
    if cfg.use_occlusion_mask:
        assert not out.mask.any()
    # zero and negative depth in the reconstruction and the label, tracked points behind the camera
    bad_rec = scene.recon_pts.clone()
    bad_rec[:, :10, ..., 2] = 0.0
    bad_rec[:, 10:20] *= -1.0
    bad_trk = scene.track_pts.clone()
    bad_trk[:, :, :20, 2] = -1.0
    mono = scene.depth.clone()
    mono[:, :5] = 0.0
    mono[:, 5:9] = -2.0
    run(bad_trk, bad_rec, _labels(scene, depth=mono))
    run(scene.track_pts * 0.0, scene.recon_pts * 0.0, _labels(scene))
    # empty pseudo-labels: no tracks at all, depth labels all invalid
    empty = PseudoLabels(torch.zeros(0, 2), torch.zeros(4, 0, 2), torch.zeros(4, 0, dtype=torch.bool), mono * 0)
    out = run(scene.track_pts, scene.recon_pts, empty)
    assert out.total.item() == 0.0
    # a single frame
    one = PseudoLabels(scene.query_uv, scene.tracks_uv[:1], None, scene.depth[:1])
    track1, recon1 = scene.track_pts[:1].clone().requires_grad_(True), scene.recon_pts[:1].clone().requires_grad_(True)
    out = compute_losses(_pred(scene, track=track1, recon=recon1), one, scene.k, scene.t_world_cam[:1], cfg)
    out.total.backward()
    assert torch.isfinite(out.total) and _grads_finite(track1, recon1)
    # conf at the extremes (σ² clamps) and a failed frame
    run(scene.track_pts, scene.recon_pts, _labels(scene), conf=1.0 + 1e-7)
    run(scene.track_pts, scene.recon_pts, _labels(scene), conf=1e30)
