"""Exact, vectorised ray casting of the analytic scene (oriented boxes via the slab test).

Rays are built with unit z in the camera frame (d = K⁻¹ [u, v, 1]), so the ray parameter at a hit *is* the
depth z; there is no discretisation error in depth, and visibility tests can reuse the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from st4rtrack_ros.data.scene import N_FACES, Scene
from st4rtrack_ros.data.textures import evaluate_texture

#: Hits closer than this along a ray are ignored (the camera never sits on a surface).
T_MIN = 1e-6
#: Key light and fill light directions (world, z-up), normalised below.
_LIGHTS = np.array([[0.3, 0.5, 1.0], [-0.7, -0.2, 0.3]])
_LIGHTS = _LIGHTS / np.linalg.norm(_LIGHTS, axis=1, keepdims=True)


@dataclass
class Hits:
    """Per-ray first hit: depth (inf if none), primitive index (-1), face index and box-local hit point."""

    t: np.ndarray  # (N,)
    prim: np.ndarray  # (N,) int32
    face: np.ndarray  # (N,) int8
    local: np.ndarray  # (N, 3) hit point in the box frame


@dataclass
class RenderOutput:
    """One rendered frame: clean linear RGB in [0, 1], exact z-depth (0 = no surface) and ids per pixel."""

    rgb: np.ndarray  # (H, W, 3) float32
    depth: np.ndarray  # (H, W) float32, metres along the optical axis
    prim: np.ndarray  # (H, W) int32, index into Scene.boxes, -1 for none
    face: np.ndarray  # (H, W) int8, face of the primitive, -1 for none
    dynamic: np.ndarray  # (H, W) bool, pixel shows a moving object


def pixel_rays(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """Camera-frame ray directions with z = 1 through every pixel centre, row-major, shape (H*W, 3)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    return pix @ np.linalg.inv(k).T


def intersect(scene: Scene, frame: int, origin: np.ndarray, dirs: np.ndarray) -> Hits:
    """First hit of rays ``origin + t·dirs`` (world frame) against every primitive at a frame."""
    n = dirs.shape[0]
    best_t = np.full(n, np.inf)
    best_prim = np.full(n, -1, dtype=np.int32)
    best_face = np.full(n, -1, dtype=np.int8)
    best_local = np.zeros((n, 3))
    for b, box in enumerate(scene.boxes):
        rot = scene.box_rot[frame, b]
        o_l = rot.T @ (origin - scene.box_pos[frame, b])
        d_l = dirs @ rot  # == (rot.T @ dirs.T).T
        d_safe = np.where(np.abs(d_l) < 1e-15, 1e-15, d_l)
        inv = 1.0 / d_safe
        t1 = (-box.half_extents - o_l) * inv
        t2 = (box.half_extents - o_l) * inv
        tmin = np.minimum(t1, t2)
        tmax = np.maximum(t1, t2)
        if box.interior:
            axis = np.argmin(tmax, axis=1)
            t = np.take_along_axis(tmax, axis[:, None], axis=1)[:, 0]
            positive = np.take_along_axis(d_l, axis[:, None], axis=1)[:, 0] > 0
            ok = t > T_MIN
        else:
            axis = np.argmax(tmin, axis=1)
            t = np.take_along_axis(tmin, axis[:, None], axis=1)[:, 0]
            t_exit = np.min(tmax, axis=1)
            positive = np.take_along_axis(d_l, axis[:, None], axis=1)[:, 0] < 0
            ok = (t <= t_exit) & (t > T_MIN)
        closer = ok & (t < best_t)
        if not np.any(closer):
            continue
        best_t[closer] = t[closer]
        best_prim[closer] = b
        best_face[closer] = (2 * axis[closer] + positive[closer]).astype(np.int8)
        best_local[closer] = o_l + t[closer, None] * d_l[closer]
    return Hits(best_t, best_prim, best_face, best_local)


def face_uv(local: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face-local texture coordinates (metres): the two box coordinates orthogonal to the face normal."""
    axis = face.astype(np.int64) // 2
    u = np.take_along_axis(local, ((axis + 1) % 3)[:, None], axis=1)[:, 0]
    v = np.take_along_axis(local, ((axis + 2) % 3)[:, None], axis=1)[:, 0]
    return u, v


def shade_hits(scene: Scene, frame: int, hits: Hits, dirs: np.ndarray) -> np.ndarray:
    """Albedo from the face textures times simple two-light Lambert shading; (N, 3) in [0, 1]."""
    n = hits.t.shape[0]
    rgb = np.zeros((n, 3))
    normals = np.zeros((n, 3))
    for b, box in enumerate(scene.boxes):
        sel_b = np.flatnonzero(hits.prim == b)
        if sel_b.size == 0:
            continue
        rot = scene.box_rot[frame, b]
        for f in range(N_FACES):
            sel = sel_b[hits.face[sel_b] == f]
            if sel.size == 0:
                continue
            u, v = face_uv(hits.local[sel], hits.face[sel])
            rgb[sel] = evaluate_texture(box.textures[f], u, v)
            n_local = np.zeros(3)
            n_local[f // 2] = 1.0 if f % 2 else -1.0
            if box.interior:
                n_local = -n_local
            normals[sel] = rot @ n_local
    lambert = np.clip(normals @ _LIGHTS.T, 0.0, None)
    light = 0.5 + 0.45 * lambert[:, 0] + 0.18 * lambert[:, 1]
    # Gentle falloff with distance so far walls read darker, as under indoor lights.
    fall = 1.0 / (1.0 + 0.02 * np.where(np.isfinite(hits.t), hits.t, 0.0) ** 2)
    out = rgb * (light * (0.75 + 0.25 * fall))[:, None]
    out[hits.prim < 0] = 0.0
    return np.clip(out, 0.0, 1.0)


def render(scene: Scene, frame: int, width: int, height: int, k: np.ndarray | None = None) -> RenderOutput:
    """Render one frame of the scene at any resolution (K defaults to the preset's field of view)."""
    if k is None:
        k = scene.intrinsics(width, height)
    rays_cam = pixel_rays(k, width, height)
    rot = scene.cam_rot[frame]
    dirs = rays_cam @ rot.T
    hits = intersect(scene, frame, scene.cam_pos[frame], dirs)
    rgb = shade_hits(scene, frame, hits, dirs)
    depth = np.where(np.isfinite(hits.t), hits.t, 0.0)
    dyn = scene.dynamic_mask
    dynamic = np.where(hits.prim >= 0, dyn[np.maximum(hits.prim, 0)], False)
    return RenderOutput(
        rgb=rgb.reshape(height, width, 3).astype(np.float32),
        depth=depth.reshape(height, width).astype(np.float32),
        prim=hits.prim.reshape(height, width),
        face=hits.face.reshape(height, width),
        dynamic=dynamic.reshape(height, width),
    )
