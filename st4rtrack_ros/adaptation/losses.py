"""Self-supervised test-time losses of St4RTrack (vanilla) and St4RTrack+ (occlusion-masked, σ²-weighted).

One function, :func:`compute_losses`, computes every term batched over the F frames of a window; every St4RTrack+
ingredient is a :class:`LossConfig` switch, so an ablation is a configuration, not code. :func:`window_losses` adds
the camera (K from head 1 of (I₁, I₁), poses by PnP on head 2) in front of it. See docs/losses.md.

Terms (frame j, track n; X_{j,n} = head 1 of pair j read at query pixel q_n, x̂ its projection into camera j):

- ``traj``: 2D reprojection x̂ vs the pseudo track y_{j,n}, after a per-frame least-squares scale of x̂ about the
  principal point (absorbs a focal mismatch); RMSE in pixels. Vanilla: no visibility mask.
- ``depth``: per-frame scale-invariant log-depth MSE between head 2's depth in camera j and a mono depth label.
- ``align``: ‖X_{j,n} − head 2 of pair j read at y_{j,n}‖ (3D, pointmap units), masked by the tracker's visibility.
- ``motion`` (off by default): head 1's 3D motion field, pair j minus the anchor pair, against the same field of the
  base (un-adapted) weights, each in units of its anchor pair's scale. Adaptation may then reshape the anchor's
  geometry (the depth label fixes it), and every pair follows it, but the motion the base predicted is kept.

St4RTrack+: ``traj`` and ``align`` are masked by the depth-test mask m (``geometry.occlusion``) and each point's
residual ρ enters in heteroscedastic form ρ/σ² + d·log(σ²/σ²_min), σ² from the confidences via
``model.uncertainty.sigma2_from_conf`` (so σ² ≤ σ²_max < ∞: the weight 1/σ² never drops below 1/σ²_max and no
point's loss can be switched off; the log term makes raising σ² cost something; see docs/losses.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from st4rtrack_ros.geometry.intrinsics import intrinsics_from_pointmap
from st4rtrack_ros.geometry.occlusion import TauMode, occlusion_mask, recon_depth, reproject_tracks
from st4rtrack_ros.geometry.pose import PoseConfig, PoseEstimate, estimate_poses
from st4rtrack_ros.geometry.projection import Z_MIN
from st4rtrack_ros.geometry.sampling import SampleMode, in_image, sample_map
from st4rtrack_ros.model.uncertainty import SIGMA2_MAX, SIGMA2_MIN, sigma2_from_conf
from st4rtrack_ros.settings import check_keys

TERMS = ("traj", "depth", "align", "motion")


@dataclass
class LossConfig:
    """All switches of the adaptation loss. Defaults = St4RTrack+; :meth:`vanilla` = the official test-time loss."""

    w_traj: float = 0.5
    w_depth: float = 10.0
    w_align: float = 5.0
    use_occlusion_mask: bool = True  # m = depth test, applied to traj and align
    mask_floor: float = 0.1  # weight kept by points failing the depth test (> 0: hiding a point never frees it)
    use_sigma2: bool = True  # heteroscedastic σ² weighting of traj and align
    tau: float = 0.05  # depth-test slack
    tau_mode: TauMode = "relative"  # "relative": τ = tau·z_rec(x̂); "absolute": τ = tau (pointmap units)
    occlusion_sample: SampleMode = "nearest"  # how z_rec is read at x̂
    traj_pseudo_visibility: bool = True  # AND the tracker's visibility into the traj mask (vanilla: False)
    align_pseudo_visibility: bool = True  # AND the tracker's visibility into the align mask (vanilla: True)
    traj_scale_fit: bool = True  # per-frame 2D scale of x̂ about the principal point before the residual
    scale_fit_bounds: tuple[float, float] = (0.5, 2.0)
    sigma2_min: float = SIGMA2_MIN  # passed to sigma2_from_conf
    sigma2_max: float = SIGMA2_MAX  # passed to sigma2_from_conf; the bound that keeps every loss switched on
    sigma2_prior: float = 1.0  # multiplier of the likelihood's d·log(σ²/σ²_min) term
    # σ² as a fixed per-point weight (no gradient to the confidences, no prior term). Online adaptation sets it
    # (config/tracker.yaml): trained at test time, σ² drifted to its ceiling instead of the geometry moving.
    sigma2_detach: bool = False
    sigma2_normalize: bool = True  # divide by the detached mean precision: term scale ≈ the vanilla term's
    traj_sigma_px: float = 8.0  # pixel scale s of the traj residual: ρ = ‖r‖²/s²
    align_sigma_rel: float = 0.05  # scale of the align residual, × the mean distance of head-2 points to the origin
    # The depth label of the anchor also supervises head 1 of (I₁, I₁): the tracks start from that pointmap (it is
    # the world frame's own camera, so no pose is involved), and its depth error is most of the tracking error.
    depth_on_track_anchor: bool = False
    # ... and head 1's z of every pair (I₁, I_j), with one scale shared by all pairs: a static-world prior. Head 1 of
    # pair j is where the anchor's pixels are at time j, in the anchor's camera; a static point keeps the anchor's
    # depth, a point moving sideways nearly so. Why: with the anchor pair alone, adaptation changed that pair's scale
    # and the other pairs did not follow (docs/domain_adaptation.md). Biased for points moving in depth.
    depth_on_track_pairs: bool = False
    # Weight of the ``motion`` term (needs PseudoLabels.base_track_pts, which the worker fills from its initial
    # weights). Why: the depth label reaches head 1 only on the anchor pair, and a domain checkpoint then fixed that
    # pair while the other pairs drifted (docs/domain_adaptation.md). This term moves every pair with the anchor's
    # correction and keeps the base's motion between them: geometry adapts, motion is remembered.
    w_motion: float = 0.0

    def __post_init__(self) -> None:
        """Reject settings that would let σ² switch a loss off or make a term meaningless."""
        if self.tau_mode not in ("relative", "absolute"):
            raise ValueError(f"tau_mode must be 'relative' or 'absolute', got {self.tau_mode!r}")
        if not 0.0 < self.sigma2_min <= self.sigma2_max < float("inf"):
            raise ValueError("need 0 < sigma2_min ≤ sigma2_max < inf: an unbounded σ² could switch a loss off")
        if self.use_sigma2 and not self.sigma2_detach and self.sigma2_prior <= 0.0:
            raise ValueError("a trainable σ² needs sigma2_prior > 0, else raising σ² is free (set sigma2_detach)")
        if not 0.0 <= self.mask_floor <= 1.0:
            raise ValueError("mask_floor must lie in [0, 1]")
        if min(self.w_traj, self.w_depth, self.w_align, self.w_motion) < 0:
            raise ValueError("loss weights must be ≥ 0")
        self.scale_fit_bounds = tuple(self.scale_fit_bounds)  # type: ignore[assignment]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LossConfig:
        """Build from a (YAML) mapping; unknown keys are an error so a typo cannot silently change an ablation."""
        d = dict(d or {})
        check_keys(cls, d, "LossConfig keys", KeyError)
        return cls(**d)

    @classmethod
    def vanilla(cls, **overrides: Any) -> LossConfig:
        """The official St4RTrack test-time loss: no depth-test mask, no σ², align masked by tracker visibility."""
        base = dict(
            use_occlusion_mask=False, use_sigma2=False, traj_pseudo_visibility=False, align_pseudo_visibility=True
        )
        return cls(**{**base, **overrides})

    @classmethod
    def plus(cls, **overrides: Any) -> LossConfig:
        """St4RTrack+ (the defaults)."""
        return cls(**overrides)


@dataclass
class WindowPrediction:
    """Network outputs for the F pairs (I₁, I_j) of a window; pointmaps (F, H, W, 3) in world, conf (F, H, W)."""

    track_pts: torch.Tensor
    recon_pts: torch.Tensor
    track_conf: torch.Tensor | None = None
    recon_conf: torch.Tensor | None = None


@dataclass
class PseudoLabels:
    """Pseudo-labels; any may be None (its terms are dropped). Pixels are model pixels (u, v)."""

    query_uv: torch.Tensor | None = None  # (N, 2) query pixels in the anchor frame
    tracks_uv: torch.Tensor | None = None  # (F, N, 2) pseudo 2D tracks
    track_vis: torch.Tensor | None = None  # (F, N) bool pseudo visibility (None: all visible)
    mono_depth: torch.Tensor | None = None  # (F, H, W) monocular depth (≤ 0 / non-finite = no label)
    base_track_pts: torch.Tensor | None = None  # (F, H, W, 3) head 1 of the base weights on the same pairs


@dataclass
class LossOutput:
    """``total`` = Σ weight·term over present terms; ``terms`` unweighted (0 when absent); diagnostics in ``stats``."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    present: dict[str, bool]
    mask: torch.Tensor | None = None  # (F, N) depth-test visibility (None when not computed)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars (no host sync until read)
    k: torch.Tensor | None = None
    poses: PoseEstimate | None = None


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x, exactly 0 with a zero (not NaN) gradient at x = 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖ over the last axis: exactly 0 with a zero (not NaN) gradient at x = 0."""
    return _safe_sqrt(x.pow(2).sum(-1))


def _robust_mean(
    rho: torch.Tensor, w: torch.Tensor, sigma2: torch.Tensor | None, dim: int, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted mean (mask weights ``w`` ≥ 0) of ρ, or of the heteroscedastic ρ/σ² + d·log(σ²/σ²_min).

    With ``sigma2_normalize`` the result is divided by the detached mean precision of the kept points: a global,
    gradient-free rescale that keeps the term's magnitude (and so the 0.5/10/5 balance) near the vanilla one while
    leaving each point's optimal σ² (= ρ/d) unchanged.
    """
    m = w.to(rho.dtype)
    n = m.sum().clamp_min(1e-6)
    rho = torch.where(w > 0, rho, torch.zeros_like(rho))
    if sigma2 is None:
        return (m * rho).sum() / n, {}
    s2 = sigma2.detach() if cfg.sigma2_detach else sigma2
    per = rho / s2
    if not cfg.sigma2_detach:
        per = per + cfg.sigma2_prior * dim * torch.log(s2 / cfg.sigma2_min)
    val = (m * per).sum() / n
    prec = torch.where(m.sum() > 0, (m / s2.detach()).sum() / n, torch.ones_like(n))
    if cfg.sigma2_normalize:
        val = val / prec
    return val, {"sigma2_mean": ((m * s2.detach()).sum() / n).detach(), "mean_precision": prec.detach()}


def _frac(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Fraction of True in ``num`` among True in ``den`` (0 when ``den`` is empty), without a host sync."""
    return (num.sum() / den.sum().clamp_min(1)).float()


def _scale_fit(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Per-frame s minimising Σ w‖s·a − b‖² (a, b (F, N, 2) centred pixels), clamped; 1 where undetermined."""
    num = (w * (a * b).sum(-1)).sum(1)
    den = (w * (a * a).sum(-1)).sum(1)
    ok = den > 1e-9
    s = num / torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, s.clamp(*bounds), torch.ones_like(s))


def _check_shapes(pred: WindowPrediction, labels: PseudoLabels) -> None:
    nfr = pred.recon_pts.shape[0]
    if pred.track_pts.shape != pred.recon_pts.shape:
        raise ValueError(f"track_pts {tuple(pred.track_pts.shape)} != recon_pts {tuple(pred.recon_pts.shape)}")
    if labels.tracks_uv is not None and labels.tracks_uv.shape[0] != nfr:
        raise ValueError(f"tracks_uv has {labels.tracks_uv.shape[0]} frames, prediction {nfr}")
    if labels.tracks_uv is not None and labels.query_uv is not None and (
        labels.tracks_uv.shape[1] != labels.query_uv.shape[0]
    ):
        raise ValueError("tracks_uv (F, N, 2) and query_uv (N, 2) disagree on N")
    if labels.mono_depth is not None and labels.mono_depth.shape[0] != nfr:
        raise ValueError("mono_depth must have one map per frame")
    if labels.base_track_pts is not None and labels.base_track_pts.shape != pred.track_pts.shape:
        raise ValueError(f"base_track_pts {tuple(labels.base_track_pts.shape)} != track_pts "
                         f"{tuple(pred.track_pts.shape)}")


def _fit_label(mono: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Depth labels (F, h, w) at the pointmaps' size (nearest: no depth mixed across edges or holes)."""
    return mono if tuple(mono.shape[-2:]) == tuple(hw) else F.interpolate(mono[:, None], size=hw, mode="nearest")[:, 0]


def _depth_frames(z_pred: torch.Tensor, mono: torch.Tensor, frame_ok: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame scale-invariant log-depth MSE (variance of log z_pred − log z_label): (F,) values, (F,) usable,
    fraction of valid pixels. Labels must be at the pointmaps' size (:func:`_fit_label`)."""
    valid = (z_pred > Z_MIN) & (mono > 0) & torch.isfinite(z_pred) & torch.isfinite(mono) & frame_ok[:, None, None]
    zp = torch.where(valid, z_pred, torch.ones_like(z_pred))
    zl = torch.where(valid, mono, torch.ones_like(mono))
    d = torch.where(valid, zp.log() - zl.log(), torch.zeros_like(zp))
    n = valid.flatten(1).sum(1).to(d.dtype)
    nn_ = n.clamp_min(1.0)
    mean = d.flatten(1).sum(1) / nn_
    dev = torch.where(valid, d - mean[:, None, None], torch.zeros_like(d))  # two-pass: no E[d²] − E[d]² cancellation
    var = dev.pow(2).flatten(1).sum(1) / nn_
    return var, n >= 2, valid.float().mean().detach()


def _motion_term(track: torch.Tensor, base: torch.Tensor, frame_ok: torch.Tensor) -> torch.Tensor:
    """Mean ‖(X̂_j − X̂_1)/ŝ − (B_j − B_1)/s_B‖ over pairs j ≥ 2 and pixels finite in both (track, base (F, H, W, 3),
    pair 1 = the anchor pair; ŝ, s_B = mean ‖X_1‖ of each): 0 for any common rescale, and for any displacement
    shared by all pairs."""
    finite = torch.isfinite(track).all(-1) & torch.isfinite(base).all(-1)
    anchor = finite[0]
    ok = finite[1:] & anchor & frame_ok[1:, None, None]

    def field(x: torch.Tensor) -> torch.Tensor:
        x = torch.where(finite[..., None], x, torch.zeros_like(x))
        scale = (_safe_norm(x[0]) * anchor).sum() / anchor.sum().clamp_min(1)
        return (x[1:] - x[:1]) / scale.clamp_min(1e-8)

    diff = torch.where(ok[..., None], field(track) - field(base.detach()), torch.zeros_like(track[1:]))
    return _safe_norm(diff).sum() / ok.sum().clamp_min(1)


def compute_losses(
    pred: WindowPrediction,
    labels: PseudoLabels,
    k: torch.Tensor,
    t_world_cam: torch.Tensor,
    cfg: LossConfig | None = None,
    frame_valid: torch.Tensor | None = None,
) -> LossOutput:
    """All test-time loss terms for one window, batched over its F frames.

    ``k`` (3, 3) the window's K (model pixels); ``t_world_cam`` (F, 4, 4) camera-to-world poses (differentiable,
    e.g. from :func:`geometry.pose.estimate_poses`); ``frame_valid`` (F,) bool drops frames (e.g. failed PnP).
    Terms with weight 0 or without their pseudo-labels are not computed (value 0, ``present`` False).
    """
    cfg = cfg or LossConfig()
    _check_shapes(pred, labels)
    nfr, height, width, _ = pred.recon_pts.shape
    dev, dt = pred.recon_pts.device, pred.recon_pts.dtype
    fv = torch.ones(nfr, dtype=torch.bool, device=dev) if frame_valid is None else frame_valid.to(dev).bool()
    zero = torch.zeros((), device=dev, dtype=dt)
    terms = {t: zero for t in TERMS}
    present = dict.fromkeys(TERMS, False)
    stats: dict[str, torch.Tensor] = {}
    mask_out: torch.Tensor | None = None

    need_tracks = labels.tracks_uv is not None and labels.query_uv is not None
    need_depth = labels.mono_depth is not None and cfg.w_depth > 0
    need_zrec = need_depth or (need_tracks and cfg.use_occlusion_mask)
    z_rec = recon_depth(pred.recon_pts, t_world_cam) if need_zrec else None

    if need_depth:
        mono = _fit_label(labels.mono_depth.to(dev, dt), (height, width))
        var, use, stats["depth_valid_frac"] = _depth_frames(z_rec, mono, fv)
        n_trk = nfr if cfg.depth_on_track_pairs else int(cfg.depth_on_track_anchor)
        if n_trk:  # one more "frame": head 1's z of the first n_trk pairs, one scale for all, vs the anchor's label
            z1 = pred.track_pts[:n_trk, ..., 2].reshape(1, n_trk * height, width)
            m1 = mono[:1].expand(n_trk, -1, -1).reshape(1, n_trk * height, width)
            v1, u1, _ = _depth_frames(z1, m1, torch.ones(1, dtype=torch.bool, device=dev))
            var, use = torch.cat([var, v1]), torch.cat([use, u1])
        terms["depth"] = (var * use).sum() / use.sum().clamp_min(1)
        present["depth"] = True

    if need_tracks and (cfg.w_traj > 0 or cfg.w_align > 0):
        tracks = labels.tracks_uv.to(dev, dt)
        n = tracks.shape[1]
        q = labels.query_uv.to(dev, dt)[None].expand(nfr, n, 2)
        vis = torch.ones(nfr, n, dtype=torch.bool, device=dev) if labels.track_vis is None else labels.track_vis.bool()
        track_world = sample_map(pred.track_pts, q)  # (F, N, 3) head 1 at the query pixels
        rep = reproject_tracks(track_world, t_world_cam, k)
        lab_ok = torch.isfinite(tracks).all(-1) & fv[:, None]
        geo_ok = lab_ok & (rep.z > Z_MIN) & torch.isfinite(track_world).all(-1)
        occ = torch.ones_like(geo_ok)
        occ_w = torch.ones(geo_ok.shape, dtype=dt, device=dev)
        if cfg.use_occlusion_mask:
            occ = occlusion_mask(rep.z, rep.uv, z_rec, cfg.tau, cfg.tau_mode, cfg.occlusion_sample)
            occ_w = torch.where(occ, occ_w, torch.full_like(occ_w, cfg.mask_floor))
            mask_out = occ
            stats["visible_frac"] = _frac(occ & fv[:, None], fv[:, None].expand_as(occ))
        use_s2 = cfg.use_sigma2 and pred.track_conf is not None
        s2_trk = (
            sigma2_from_conf(sample_map(pred.track_conf, q), cfg.sigma2_min, cfg.sigma2_max) if use_s2 else None
        )

        if cfg.w_traj > 0:
            keep = geo_ok & vis if cfg.traj_pseudo_visibility else geo_ok
            w = keep * occ_w
            c = k[:2, 2].to(dt)
            a = torch.where(keep[..., None], rep.uv - c, torch.zeros_like(rep.uv))
            b = torch.where(keep[..., None], tracks - c, torch.zeros_like(tracks))
            if cfg.traj_scale_fit:
                wfit = w / (s2_trk.detach() if s2_trk is not None else 1.0)
                s = _scale_fit(a, b, wfit, cfg.scale_fit_bounds)
                stats["traj_scale_mean"] = s.detach().mean()
                a = a * s[:, None, None]
            rho = (a - b).pow(2).sum(-1) / cfg.traj_sigma_px**2
            msq, st = _robust_mean(rho, w, s2_trk, 2, cfg)
            terms["traj"] = cfg.traj_sigma_px * _safe_sqrt(msq)
            present["traj"] = True
            stats["traj_kept_frac"] = _frac(keep & occ, torch.ones_like(keep))
            stats.update({f"traj_{key}": v for key, v in st.items()})

        if cfg.w_align > 0:
            keep = lab_ok & in_image(tracks, height, width) & torch.isfinite(track_world).all(-1)
            if cfg.align_pseudo_visibility:
                keep = keep & vis
            w = keep * occ_w
            rec_at = sample_map(pred.recon_pts, tracks)  # head 2 at the tracked pixel
            dist = _safe_norm(track_world - rec_at)
            s2 = None
            if use_s2:
                s2_rec = (
                    sigma2_from_conf(sample_map(pred.recon_conf, tracks), cfg.sigma2_min, cfg.sigma2_max)
                    if pred.recon_conf is not None
                    else s2_trk
                )
                s2 = 0.5 * (s2_trk + s2_rec)
            with torch.no_grad():  # scene scale from a 4×-strided grid: a unit for σ², need not be exact
                sub = pred.recon_pts[:, ::4, ::4].detach()
                rad = sub.pow(2).sum(-1).sqrt()
                fin = torch.isfinite(rad)
                rad = torch.where(fin, rad, torch.zeros_like(rad))
                scale = (rad.sum() / fin.sum().clamp_min(1)).clamp_min(1e-6) * cfg.align_sigma_rel
            mean, st = _robust_mean(dist / scale, w, s2, 3, cfg)
            terms["align"] = scale * mean
            present["align"] = True
            stats["align_kept_frac"] = _frac(keep & occ, torch.ones_like(keep))
            stats.update({f"align_{key}": v for key, v in st.items()})

    if cfg.w_motion > 0 and labels.base_track_pts is not None and nfr > 1:
        terms["motion"] = _motion_term(pred.track_pts, labels.base_track_pts.to(dev, dt), fv)
        present["motion"] = True

    weights = {"traj": cfg.w_traj, "depth": cfg.w_depth, "align": cfg.w_align, "motion": cfg.w_motion}
    total = zero
    for t in TERMS:
        if present[t]:
            total = total + weights[t] * terms[t]
    return LossOutput(total=total, terms=terms, present=present, mask=mask_out, stats=stats)


def window_losses(
    pred: WindowPrediction,
    labels: PseudoLabels,
    cfg: LossConfig | None = None,
    k: torch.Tensor | None = None,
    pose_cfg: PoseConfig | None = None,
    frame_valid: torch.Tensor | None = None,
) -> LossOutput:
    """Camera + losses for a window whose frame 0 is the pair (I₁, I₁).

    K: given (e.g. from CameraInfo) or the Weiszfeld focal of head 1 of frame 0. Poses: PnP-RANSAC + differentiable
    Gauss–Newton on head 2; frames whose PnP fails are dropped from every term.
    """
    if k is None:
        k = intrinsics_from_pointmap(pred.track_pts[0])
    k = k.to(pred.recon_pts.device, pred.recon_pts.dtype)
    est = estimate_poses(pred.recon_pts, pred.recon_conf, k, pose_cfg)
    fv = est.success if frame_valid is None else est.success & frame_valid.to(est.success.device).bool()
    out = compute_losses(pred, labels, k, est.t_world_cam, cfg, frame_valid=fv)
    out.k = k
    out.poses = est
    out.stats["pose_success_frac"] = est.success.float().mean()
    return out
