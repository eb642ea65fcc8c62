"""Pose from a reconstruction pointmap: exact on clean data, robust to outliers, differentiable, safe if degenerate."""

import torch

from st4rtrack_ros.geometry.intrinsics import intrinsics_from_focal
from st4rtrack_ros.geometry.pose import PoseConfig, estimate_poses, rotation_angle_deg, so3_exp
from st4rtrack_ros.geometry.projection import invert_pose, pose_from_rt, transform_points, unproject_depth

H, W = 96, 160


def _window(nfr: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = intrinsics_from_focal(torch.tensor(140.0), H, W)
    u = torch.linspace(0, 6, W)
    v = torch.linspace(0, 4, H)
    depth = 3.0 + 0.6 * torch.sin(u)[None, None] * torch.cos(v)[None, :, None] + torch.rand(nfr, 1, 1, generator=g)
    pts_cam = unproject_depth(depth, k)
    omega = 0.15 * torch.randn(nfr, 3, generator=g)
    t = 0.5 * torch.randn(nfr, 3, generator=g)
    t_world_cam = pose_from_rt(so3_exp(omega), t)
    return k, t_world_cam, transform_points(t_world_cam, pts_cam)


def _errors(est, truth):
    rot = rotation_angle_deg(est[:, :3, :3].double(), truth[:, :3, :3].double())
    trans = (est[:, :3, 3] - truth[:, :3, 3]).norm(dim=-1) / truth[:, :3, 3].norm(dim=-1)
    return rot, trans


def test_noise_free_gives_ground_truth():
    k, truth, pts = _window()
    conf = 1.0 + torch.rand(pts.shape[:3]) * 4
    est = estimate_poses(pts, conf, k, PoseConfig(max_points=1024))
    rot, trans = _errors(est.t_world_cam, truth)
    assert est.success.all()
    assert (rot < 0.01).all(), rot
    assert (trans < 1e-4).all(), trans
    assert (est.num_points <= 1024).all()


def test_outliers_and_noise():
    k, truth, pts = _window(seed=1)
    g = torch.Generator().manual_seed(3)
    noisy = pts + 0.005 * torch.randn(pts.shape, generator=g)
    bad = torch.rand(pts.shape[:3], generator=g) < 0.3
    noisy = torch.where(bad[..., None], noisy + torch.randn(pts.shape, generator=g), noisy)
    conf = torch.full(pts.shape[:3], 3.0)  # confidence does not know the outliers
    est = estimate_poses(noisy, conf, k)
    rot, trans = _errors(est.t_world_cam, truth)
    assert (rot < 1.0).all(), rot
    assert (trans < 0.02).all(), trans
    assert (est.num_inliers < 0.8 * est.num_points).all()  # the outliers were rejected


def test_gradient_reaches_pointmap_and_is_right():
    k, _, pts = _window(nfr=2, seed=2)
    pts = pts.clone().requires_grad_(True)
    est = estimate_poses(pts, None, k, PoseConfig(max_points=512, refine_iters=1))
    # shifting the whole scene by δx shifts every camera by δx: Σ_points ∂t_x/∂X_x = 1, ∂t_x/∂X_y sums to 0
    est.t_world_cam[:, 0, 3].sum().backward()
    g = pts.grad
    assert torch.isfinite(g).all()
    assert torch.allclose(g[..., 0].flatten(1).sum(1), torch.ones(2), atol=1e-3), g[..., 0].flatten(1).sum(1)
    assert torch.allclose(g[..., 1].flatten(1).sum(1), torch.zeros(2), atol=1e-3)


def test_degenerate_frames_fail_cleanly():
    k, truth, pts = _window(nfr=3)
    pts = pts.clone()
    pts[1] = float("nan")
    pts[2, ..., 2] = -1.0  # everything behind / on a plane behind the camera
    pts[2] = pts[2] * 0.0
    p = pts.clone().requires_grad_(True)
    est = estimate_poses(p, None, k)
    assert est.success.tolist() == [True, False, False]
    assert torch.allclose(est.t_world_cam[1:], torch.eye(4).expand(2, 4, 4))
    est.t_world_cam.sum().backward()
    assert torch.isfinite(p.grad).all()
    rot, _ = _errors(est.t_world_cam[:1], truth[:1])
    assert rot.item() < 0.01


def test_identity_for_anchor_frame_and_inverse():
    k, truth, pts = _window(nfr=1)
    pts_cam = transform_points(invert_pose(truth), pts)  # the anchor sees its own depth: pose = identity
    est = estimate_poses(pts_cam, None, k)
    assert torch.allclose(est.t_world_cam[0], torch.eye(4), atol=1e-4)
    assert torch.allclose(invert_pose(truth) @ truth, torch.eye(4).expand(1, 4, 4), atol=1e-5)
