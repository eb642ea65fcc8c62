"""Projection, sampling and the depth-test occlusion mask on scenes whose answer is known by hand."""

import torch

from st4rtrack_ros.geometry.intrinsics import intrinsics_from_focal
from st4rtrack_ros.geometry.occlusion import occlusion_mask, recon_depth, reproject_tracks
from st4rtrack_ros.geometry.projection import pose_from_rt, project, transform_points, unproject_depth, world_to_camera
from st4rtrack_ros.geometry.sampling import in_image, sample_map

H, W = 40, 60
K = intrinsics_from_focal(torch.tensor(50.0), H, W)


def _wall(depth: float = 4.0, nfr: int = 1):
    """Reconstruction of a fronto-parallel wall at ``depth``, camera at the origin (world = camera)."""
    pts = unproject_depth(torch.full((nfr, H, W), depth), K)
    return pts, torch.eye(4).expand(nfr, 4, 4).clone()


def test_project_unproject_roundtrip_and_world_to_camera():
    depth = 1.0 + torch.rand(2, H, W)
    pts = unproject_depth(depth, K)
    uv, z = project(pts, K)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    assert torch.allclose(uv[0, ..., 0], u, atol=1e-4) and torch.allclose(uv[1, ..., 1], v, atol=1e-4)
    assert torch.allclose(z, depth)
    t = pose_from_rt(torch.eye(3).expand(2, 3, 3), torch.tensor([[1.0, 0, 0], [0, 0, 2.0]]))
    assert torch.allclose(world_to_camera(transform_points(t, pts), t), pts, atol=1e-5)


def test_point_behind_wall_is_masked_visible_one_is_not():
    recon, pose = _wall(4.0)
    track = torch.tensor([[[0.1, 0.1, 6.0], [0.1, 0.1, 3.0], [0.1, 0.1, 4.1]]])  # behind, in front, on the wall
    rep = reproject_tracks(track, pose, K)
    m = occlusion_mask(rep.z, rep.uv, recon_depth(recon, pose), tau=0.05, tau_mode="relative")
    assert m.tolist() == [[False, True, True]]
    m = occlusion_mask(rep.z, rep.uv, recon_depth(recon, pose), tau=0.05, tau_mode="absolute")
    assert m.tolist() == [[False, True, False]]  # 4.1 > 4 + 0.05


def test_point_leaving_image_or_behind_camera_is_masked():
    recon, pose = _wall(4.0)
    track = torch.tensor([[[3.0, 0.0, 3.0], [0.0, -2.5, 3.0], [0.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    rep = reproject_tracks(track, pose, K)
    m = occlusion_mask(rep.z, rep.uv, recon_depth(recon, pose))
    assert m.tolist() == [[False, False, False, False, True]]


def test_moving_camera_and_pseudo_visibility():
    # camera 1 moves 1 m to the right; an occluder at z = 2 covers x ∈ [0.5, 1.5] in world
    recon, _ = _wall(5.0, nfr=2)
    occ = (recon[1, ..., 0] > -0.5 * 2.0 / 5.0 * 5.0) & (recon[1, ..., 0] < 0.5)  # camera-1 pixels looking at it
    recon[1][occ] = recon[1][occ] * (2.0 / 5.0)
    pose = torch.eye(4).expand(2, 4, 4).clone()
    pose[1, 0, 3] = 1.0
    recon[1] = recon[1] + torch.tensor([1.0, 0.0, 0.0])
    track = torch.tensor([[1.0, 0.0, 5.0], [-1.5, 0.0, 5.0]]).expand(2, 2, 3)  # a wall point behind it, one clear
    rep = reproject_tracks(track, pose, K)
    zr = recon_depth(recon, pose)
    m = occlusion_mask(rep.z, rep.uv, zr)
    assert m.tolist() == [[True, True], [False, True]]
    vis = torch.tensor([[True, False], [True, True]])
    assert occlusion_mask(rep.z, rep.uv, zr, pseudo_visibility=vis).tolist() == [[True, False], [False, True]]


def test_sampling_modes_and_bounds():
    maps = torch.arange(H * W, dtype=torch.float32).reshape(1, H, W)
    uv = torch.tensor([[[2.0, 3.0], [2.5, 3.0], [2.6, 3.4], [float("nan"), 1.0]]])
    bil = sample_map(maps, uv)
    near = sample_map(maps, uv, mode="nearest")
    assert bil[0, :2].tolist() == [3 * W + 2, 3 * W + 2.5]
    assert near[0, 2].item() == 3 * W + 3
    assert torch.isfinite(bil).all()
    assert in_image(uv, H, W).tolist() == [[True, True, True, False]]
    assert in_image(torch.tensor([[-0.6, 0.0], [W - 0.5, 0.0], [W - 0.51, H - 0.51]]), H, W).tolist() == [
        False, False, True,
    ]
