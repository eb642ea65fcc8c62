"""Renderer and ground-truth checks: determinism, exact depth vs poses, and depth-test visibility."""

from __future__ import annotations

import numpy as np
import pytest

from st4rtrack_ros.data.nuisance import NuisanceModel, motion_blur
from st4rtrack_ros.data.presets import PRESETS, get_preset
from st4rtrack_ros.data.render import intersect, pixel_rays, render
from st4rtrack_ros.data.scene import make_scene
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.data.tracks import project

W, H = 64, 48


@pytest.fixture(scope="module")
def seq():
    """A short occlusion-heavy sequence with its renders."""
    s = make_sequence("occlusion", 12, seed=3, width=W, height=H, n_tracks=300, n_object_tracks=150)
    renders = [render(s.scene, i, W, H, s.k) for i in range(s.scene.n_frames)]
    return s, renders


def test_presets_and_determinism() -> None:
    """Same (preset, seed) → identical scene and pixels; another seed → a different scene."""
    assert {"easy", "occlusion", "fast", "shift"} <= set(PRESETS)
    a = [make_sequence("shift", 4, seed=7, width=W, height=H, n_tracks=20) for _ in range(2)]
    fa, fb = list(a[0].frames()), list(a[1].frames())
    for x, y in zip(fa, fb, strict=True):
        np.testing.assert_array_equal(x.rgb, y.rgb)
        np.testing.assert_array_equal(x.depth, y.depth)
    np.testing.assert_array_equal(a[0].tracks.positions, a[1].tracks.positions)
    other = make_scene("shift", 4, seed=8)
    assert not np.allclose(other.cam_pos, a[0].scene.cam_pos)
    with pytest.raises(ValueError):
        get_preset("nope")


def test_render_outputs_and_any_resolution() -> None:
    """Every pixel hits a surface (closed room); depth is independent of the resolution at the image centre."""
    scene = make_scene("easy", 3, seed=1)
    small = render(scene, 1, 33, 21)
    big = render(scene, 1, 99, 63)
    assert small.rgb.shape == (21, 33, 3) and small.rgb.dtype == np.float32
    assert np.all(small.depth > 0) and np.all(small.prim >= 0)
    assert 0.0 <= small.rgb.min() and small.rgb.max() <= 1.0
    # Same field of view: the centre pixel of both sizes looks along the optical axis.
    assert small.depth[10, 16] == pytest.approx(big.depth[31, 49], rel=1e-6)


def test_camera_moves_like_a_ground_robot() -> None:
    """Forward motion at about the preset speed, height near the preset height, optical z roughly horizontal."""
    p = get_preset("fast")
    scene = make_scene(p, 40, seed=2)
    step = np.linalg.norm(np.diff(scene.cam_pos[:, :2], axis=0), axis=1) * p.fps
    assert abs(np.median(step) - p.cam_speed) < 0.3 * p.cam_speed
    assert np.all(np.abs(scene.cam_pos[:, 2] - p.cam_height) < 3 * p.bob_amp + 1e-9)
    assert np.all(np.abs(scene.cam_rot[:, 2, 2]) < 0.3)  # optical axis stays near horizontal
    yaw = np.unwrap(np.arctan2(scene.cam_rot[:, 1, 2], scene.cam_rot[:, 0, 2]))
    assert np.ptp(yaw) > 0.2  # it turns


def test_depth_reprojects_between_frames() -> None:
    """Static pixels of frame i, lifted with GT depth and moved by the GT poses, land on frame j's depth."""
    s = make_sequence("easy", 12, seed=3, width=W, height=H, n_tracks=10, n_object_tracks=0)
    renders = {i: render(s.scene, i, W, H, s.k) for i in (0, 3, 5, 11)}
    for i, j in [(0, 5), (3, 11)]:
        ri, rj = renders[i], renders[j]
        v, u = np.nonzero(~ri.dynamic)
        z = ri.depth[v, u].astype(np.float64)
        pc = np.stack([u, v, np.ones_like(u)], axis=1) @ np.linalg.inv(s.k).T * z[:, None]
        pose_i = s.scene.camera_pose(i)
        pw = pc @ pose_i[:3, :3].T + pose_i[:3, 3]
        uv, zj = project(pw, s.scene.camera_pose(j), s.k)
        u0, v0 = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (zj > 0) & (u0 >= 0) & (v0 >= 0) & (u0 + 1 < W) & (v0 + 1 < H)
        u0, v0, uv, zj, src = u0[ok], v0[ok], uv[ok], zj[ok], (v[ok], u[ok])
        same = np.ones(u0.size, dtype=bool)
        for dv in (0, 1):
            for du in (0, 1):
                same &= rj.prim[v0 + dv, u0 + du] == ri.prim[src]
                same &= rj.face[v0 + dv, u0 + du] == ri.face[src]
        assert same.sum() > 100
        # On one planar face 1/z is affine in the pixel coordinates, so bilinear interpolation of 1/z is exact.
        inv = 1.0 / rj.depth.astype(np.float64)
        a, b = uv[same, 0] - u0[same], uv[same, 1] - v0[same]
        uu, vv = u0[same], v0[same]
        interp = (inv[vv, uu] * (1 - a) * (1 - b) + inv[vv, uu + 1] * a * (1 - b)
                  + inv[vv + 1, uu] * (1 - a) * b + inv[vv + 1, uu + 1] * a * b)
        rel = np.abs(interp * zj[same] - 1.0)
        assert np.median(rel) < 1e-5
        assert np.mean(rel < 1e-4) > 0.99


def test_track_visibility_is_a_true_depth_test(seq) -> None:
    """Invisible tracks are outside the image / behind the camera or occluded; visible ones are the surface."""
    s, renders = seq
    tr = s.tracks
    assert tr.visible[0, tr.first_frame].all()
    assert tr.dynamic.any() and (~tr.dynamic).any()
    occl_ok: list[np.ndarray] = []
    vis_ok: list[np.ndarray] = []
    for t in range(s.scene.n_frames):
        uv, z = project(tr.positions[t], s.scene.camera_pose(t), s.k)
        inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] < W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < H - 0.5)
        assert not np.any(tr.visible[t] & ~inside)
        occl = inside & ~tr.visible[t]
        vis = tr.visible[t]
        # Exact: a ray through an occluded point hits something clearly in front of it.
        idx = np.flatnonzero(occl)
        if idx.size:
            pc = (tr.positions[t, idx] - s.scene.cam_pos[t]) @ s.scene.cam_rot[t]
            hits = intersect(s.scene, t, s.scene.cam_pos[t], (pc / pc[:, 2:3]) @ s.scene.cam_rot[t].T)
            assert np.all(hits.t < z[idx] * (1 - 1e-7))
        # Against the rendered depth map at the nearest pixel (approximate near silhouettes).
        pu = np.clip(np.rint(uv[:, 0]), 0, W - 1).astype(int)
        pv = np.clip(np.rint(uv[:, 1]), 0, H - 1).astype(int)
        d_map = renders[t].depth[pv, pu]
        occl_ok.append(d_map[occl] < z[occl] - 1e-3)
        # A visible track: the nearest pixel shows its own primitive, or about its depth.
        same = (renders[t].prim[pv, pu] == tr.prim) | (np.abs(d_map - z) < 0.05 * z)
        vis_ok.append(same[vis])
    # Pooled over frames; misses are tracks within a pixel of a silhouette at this low resolution.
    occl_all, vis_all = np.concatenate(occl_ok), np.concatenate(vis_ok)
    assert occl_all.size > 50  # the occlusion preset really occludes tracked points
    assert occl_all.mean() > 0.85 and vis_all.mean() > 0.85


def test_first_frame_queries_project_to_pixel_centres(seq) -> None:
    """Query tracks sit exactly under an integer pixel of frame 0 at the rendered depth."""
    s, renders = seq
    tr = s.tracks
    uv, z = project(tr.positions[0, tr.first_frame], s.scene.camera_pose(0), s.k)
    np.testing.assert_allclose(uv, np.rint(uv), atol=1e-6)
    pu, pv = np.rint(uv).astype(int).T
    np.testing.assert_allclose(renders[0].depth[pv, pu], z, rtol=1e-5)


def test_pixel_rays_have_unit_z() -> None:
    """Ray parameter equals depth because rays have z = 1 in the camera."""
    k = np.array([[50.0, 0, 15.5], [0, 50.0, 9.5], [0, 0, 1]])
    rays = pixel_rays(k, 32, 20)
    np.testing.assert_allclose(rays[:, 2], 1.0)
    np.testing.assert_allclose(rays[0, :2], [-15.5 / 50, -9.5 / 50])


def test_nuisances_change_images_deterministically() -> None:
    """The shift preset's nuisances alter the clean render and are reproducible; blur keeps the mean."""
    p = get_preset("shift")
    scene = make_scene(p, 2, seed=4)
    clean = render(scene, 0, W, H).rgb
    outs = [NuisanceModel(p.nuisance, np.random.default_rng(0)).apply(clean, 0.0, (6.0, 1.0)) for _ in range(2)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].dtype == np.uint8
    assert np.abs(outs[0].astype(float) / 255 - clean).mean() > 0.01
    blurred = motion_blur(clean, (8.0, 0.0))
    assert abs(blurred.mean() - clean.mean()) < 0.01
    assert np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(clean, axis=1)).mean()
    easy = get_preset("easy")
    assert not NuisanceModel(easy.nuisance, np.random.default_rng(0)).enabled


def _occluded_fraction(preset: str, seed: int, n_frames: int = 24) -> float:
    """Share of (t, n) track projections inside the image that fail the depth test."""
    s = make_sequence(preset, n_frames, seed, 48, 32, n_tracks=150, n_object_tracks=0)
    inside_total, occluded = 0, 0
    for t in range(n_frames):
        uv, z = project(s.tracks.positions[t], s.scene.camera_pose(t), s.k)
        inside = (z > 0) & (uv[:, 0] >= -0.5) & (uv[:, 0] < 47.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < 31.5)
        inside_total += int(inside.sum())
        occluded += int((inside & ~s.tracks.visible[t]).sum())
    return occluded / max(inside_total, 1)


def test_presets_differ_as_named() -> None:
    """`occlusion` hides tracked points more often than `easy`; `fast` moves points faster across the image."""
    seeds = range(4)
    assert np.mean([_occluded_fraction("occlusion", s) for s in seeds]) > 1.5 * np.mean(
        [_occluded_fraction("easy", s) for s in seeds]
    )
    speed = {}
    for name in ("easy", "fast"):
        s = make_sequence(name, 10, 0, 48, 32, n_tracks=100, n_object_tracks=0)
        uv = np.stack([project(s.tracks.positions[t], s.scene.camera_pose(t), s.k)[0] for t in range(2)])
        speed[name] = np.nanmedian(np.linalg.norm(uv[1] - uv[0], axis=1))
    assert speed["fast"] > 2 * speed["easy"]
    # Every preset shows moving objects in the query frame, so the dynamic subset is never empty.
    for name in PRESETS:
        s = make_sequence(name, 16, 1, 48, 32, n_tracks=100, n_object_tracks=0)
        assert (s.tracks.dynamic & s.tracks.first_frame).sum() > 0, name
