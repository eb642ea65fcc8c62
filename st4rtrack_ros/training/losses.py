"""Supervised St4RTrack pretraining loss (pointmap form), scale-relative and confidence-weighted.

Per pair, both ground-truth pointmaps are divided by s_gt = mean ‖X‖ over the valid pixels of the GT reconstruction
(head 2) and both predicted pointmaps by s_pred, the same mean over the same pixels of the *predicted*
reconstruction (not detached). Only the shape of the scene is supervised, never its absolute scale, which a
monocular pair cannot determine; the network may output any scale.

L = L_traj + λ_depth·L_depth + λ_align·L_align, with L_traj = C(head 1) + C(head 2) and, per head with valid
pixels V, error e = ‖X̂/s_pred − X/s_gt‖ and confidence c:
  C = mean_V [ c·e − α·log c ]                          on static pixels
      mean_V [ w·e + c·sg(e) − α·log c ]                on moving pixels, w = sg(k · max c over static valid pixels)
(sg = stop-gradient, k = 5, α = 0.2). On moving pixels the 3D error is pushed with a fixed, large weight, so the
network cannot trade their error for a lower confidence; the confidence itself still gets the usual calibrating
gradient (c·sg(e) − α log c, minimised at c = α/e).
L_depth = mean over head-2 valid pixels of |ẑ/s_pred − z/s_gt| (z of the reconstruction in the anchor camera).
L_align = mean over valid pixels of the self pairs (anchor, anchor) of ‖X̂₁/s_pred − X̂₂/s_pred‖: both heads then
describe the same surface point at the same time, so they must agree (0 when the batch has no self pair).

``shared_scale``: the pairs of one group (same scene, same anchor, ``group`` consecutive pairs of the batch) share
one s_gt and one s_pred (their means). Per-pair normalisation leaves each pair's output scale free, and the online
tracker puts every pair (anchor, j) of a window into one world: measured, head 1's scale then drifts with the gap
(docs/default_model.md). Sharing the scale makes a disagreement between a group's pairs an error. Validation
metrics stay per pair, comparable across runs.

Data parallel (``reduce``): the batch-level statistics — each mean's pixel count and the static-confidence maximum
of the moving-pixel weight — are taken over the *global* batch of all ranks (:class:`BatchReduce`), so each rank's
loss is its share of the global-batch loss, and DDP's gradient average equals the single-process gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from st4rtrack_ros.model.network import PairOutput


@dataclass(frozen=True)
class LossConfig:
    alpha: float = 0.2  # weight of −log c
    lambda_depth: float = 1.0
    lambda_align: float = 1.0
    dyn_factor: float = 5.0  # w = dyn_factor × max static confidence (detached)
    dynamic_reweight: bool = True
    shared_scale: bool = False  # one scale per group of pairs sharing an anchor (see the module docstring)


class BatchReduce:
    """Batch-level statistics of one process: the identity. ``training.distributed.RankReduce`` takes them over the
    ranks of a data-parallel job."""

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        """() pixels a mean covers on this rank → its divisor: max(count over all ranks, 1) / number of ranks, so
        that the ranks' losses average to the global-batch mean."""
        return count.clamp_min(1.0)

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """(K,) → the element-wise maximum over ranks."""
        return x


LOCAL = BatchReduce()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, reduce: BatchReduce = LOCAL) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / reduce.denominator(m.sum())


def pair_scale(pts: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B,) mean distance to the origin of the valid points of each pair (B, H, W, 3); ≥ 1e-8."""
    d = torch.linalg.vector_norm(pts, dim=-1)
    m = valid.to(d.dtype)
    return ((d * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)).clamp_min(1e-8)


def confidence_loss(err: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor, dynamic: torch.Tensor,
                    cfg: LossConfig, reduce: BatchReduce = LOCAL) -> torch.Tensor:
    """C of one head (see the module docstring); all inputs (B, H, W)."""
    static = valid & ~dynamic
    moving = valid & dynamic
    per_pixel = conf * err - cfg.alpha * torch.log(conf)
    if cfg.dynamic_reweight:  # written without host syncs (no .any() branches): conf > 1, so 0 is a safe filler
        zero = conf.new_zeros(())
        c = conf.detach()
        m_static, m_valid = reduce.max(torch.stack((torch.where(static, c, zero).amax(),
                                                    torch.where(valid, c, zero).amax()))).unbind(0)
        ref = torch.where(m_static > 0, m_static, m_valid)  # 0 = no static pixel in the (global) batch
        w = cfg.dyn_factor * ref
        dyn_pixel = w * err + conf * err.detach() - cfg.alpha * torch.log(conf)
        per_pixel = torch.where(moving, dyn_pixel, per_pixel)
    return _masked_mean(per_pixel, valid, reduce)


def group_mean(s: torch.Tensor, group: int) -> torch.Tensor:
    """(B,) per-pair scales → each replaced by the mean of its group of ``group`` consecutive pairs."""
    if group <= 1:
        return s
    if s.shape[0] % group:
        raise ValueError(f"batch of {s.shape[0]} pairs is not whole groups of {group}")
    return s.view(-1, group).mean(1).repeat_interleave(group)


def supervised_loss(out: PairOutput, batch: dict[str, torch.Tensor], cfg: LossConfig, with_conf: bool = True,
                    group: int = 1, reduce: BatchReduce = LOCAL) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its detached terms plus metrics; ``with_conf=False`` (validation) drops the confidence:
    C becomes the plain mean error over valid pixels. ``group``: pairs per anchor (used with ``shared_scale``).
    ``reduce``: how the loss's batch statistics span the ranks of a data-parallel step (the metrics stay local).

    Metrics: ``epe_track``/``epe_recon`` = mean ‖X̂·s_gt/s_pred − X‖ in metres (scale-aligned 3D end-point error
    per head), ``epe_track_dyn`` the same on moving anchor pixels.
    """
    tv, rv = batch["track_valid"], batch["recon_valid"]
    s_gt, s_pr = pair_scale(batch["recon_pts"], rv), pair_scale(out.recon_pts, rv)

    def errors(sg: torch.Tensor, sp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel 3D errors of both heads with the (B,) scales sg (ground truth) and sp (prediction)."""
        sg, sp = sg[:, None, None, None], sp[:, None, None, None]
        return (torch.linalg.vector_norm(out.track_pts / sp - batch["track_pts"] / sg, dim=-1),
                torch.linalg.vector_norm(out.recon_pts / sp - batch["recon_pts"] / sg, dim=-1))

    k = group if cfg.shared_scale else 1
    g_gt, g_pr = group_mean(s_gt, k), group_mean(s_pr, k)
    e1, e2 = errors(g_gt, g_pr)
    t_pr, r_pr = out.track_pts / g_pr[:, None, None, None], out.recon_pts / g_pr[:, None, None, None]
    r_gt = batch["recon_pts"] / g_gt[:, None, None, None]
    if with_conf:
        c1 = confidence_loss(e1, out.track_conf, tv, batch["track_dyn"], cfg, reduce)
        c2 = confidence_loss(e2, out.recon_conf, rv, batch["recon_dyn"], cfg, reduce)
    else:
        c1, c2 = _masked_mean(e1, tv, reduce), _masked_mean(e2, rv, reduce)
    l_depth = _masked_mean((r_pr[..., 2] - r_gt[..., 2]).abs(), rv, reduce)
    self_mask = batch["is_self"][:, None, None] & tv & rv
    l_align = _masked_mean(torch.linalg.vector_norm(t_pr - r_pr, dim=-1), self_mask, reduce)
    total = c1 + c2 + cfg.lambda_depth * l_depth + cfg.lambda_align * l_align
    if k > 1:  # metrics per pair, as without shared_scale
        e1, e2 = errors(s_gt, s_pr)
    s = s_gt[:, None, None]
    terms = {
        "loss": total, "track": c1, "recon": c2, "depth": l_depth, "align": l_align,
        "epe_track": _masked_mean(e1.detach() * s, tv), "epe_recon": _masked_mean(e2.detach() * s, rv),
        "epe_track_dyn": _masked_mean(e1.detach() * s, tv & batch["track_dyn"]),
    }
    return total, {k: v.detach() for k, v in terms.items()}
