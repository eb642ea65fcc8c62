"""Ground-truth 3D tracks: surface points attached to primitives, followed exactly through time.

Visibility is a depth test against the exact surface: a track is visible in frame t when it projects inside the
image, lies in front of the camera, and nothing is hit before it along the camera ray through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from st4rtrack_ros.data.render import T_MIN, intersect, pixel_rays
from st4rtrack_ros.data.scene import N_FACES, Scene


@dataclass
class GroundTruthTracks:
    """Tracks of one sequence; index n is the same physical point in every frame."""

    ids: np.ndarray  # (N,) uint32
    prim: np.ndarray  # (N,) int32, primitive carrying the point
    local: np.ndarray  # (N, 3) point in the primitive's frame
    positions: np.ndarray  # (T, N, 3) world positions, metres
    visible: np.ndarray  # (T, N) bool, depth-test visibility
    dynamic: np.ndarray  # (N,) bool, point lies on a moving object
    first_frame: np.ndarray  # (N,) bool, sampled from the first frame's pixels (query points)

    @property
    def n_tracks(self) -> int:
        """Number of tracks."""
        return int(self.ids.shape[0])


def project(points_world: np.ndarray, pose: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and camera depth z (N,) of world points for a pose world ← camera."""
    rot, trans = pose[:3, :3], pose[:3, 3]
    pc = (points_world - trans) @ rot
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (pc[:, :2] / z[:, None]) * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]])
    return uv, z


def track_positions(scene: Scene, prim: np.ndarray, local: np.ndarray) -> np.ndarray:
    """(T, N, 3) world positions of box-local points carried by their primitives."""
    rot = scene.box_rot[:, prim]  # (T, N, 3, 3)
    pos = scene.box_pos[:, prim]  # (T, N, 3)
    return np.einsum("tnij,nj->tni", rot, local) + pos


def track_visibility(
    scene: Scene, positions: np.ndarray, k: np.ndarray, width: int, height: int, rel_tol: float = 1e-6
) -> np.ndarray:
    """(T, N) depth-test visibility of world points in each frame."""
    n_frames, n = positions.shape[:2]
    visible = np.zeros((n_frames, n), dtype=bool)
    for t in range(n_frames):
        uv, z = project(positions[t], scene.camera_pose(t), k)
        inside = (z > T_MIN) & np.all(np.isfinite(uv), axis=1)
        inside &= (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            continue
        # Camera rays with unit z through the exact point: the hit parameter is the visible surface depth there.
        pc = (positions[t, idx] - scene.cam_pos[t]) @ scene.cam_rot[t]
        dirs = (pc / pc[:, 2:3]) @ scene.cam_rot[t].T
        hits = intersect(scene, t, scene.cam_pos[t], dirs)
        visible[t, idx] = hits.t >= z[idx] * (1.0 - rel_tol) - 1e-9
    return visible


def _sample_first_frame(
    scene: Scene, k: np.ndarray, width: int, height: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Surface points under random pixel centres of frame 0, half of them on moving objects when any are seen."""
    rays = pixel_rays(k, width, height)
    hits = intersect(scene, 0, scene.cam_pos[0], rays @ scene.cam_rot[0].T)
    valid = np.flatnonzero(hits.prim >= 0)
    dyn_pix = valid[scene.dynamic_mask[hits.prim[valid]]]
    n_dyn = min(n // 2, dyn_pix.size)
    chosen = rng.choice(dyn_pix, n_dyn, replace=False) if n_dyn else np.empty(0, int)
    rest = np.setdiff1d(valid, chosen)
    chosen = np.concatenate([chosen, rng.choice(rest, min(n - n_dyn, rest.size), replace=False)])
    return hits.prim[chosen], hits.local[chosen]


def _sample_on_objects(scene: Scene, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform points on the surfaces of the moving boxes (seen or not in frame 0)."""
    dyn = np.flatnonzero(scene.dynamic_mask)
    if dyn.size == 0 or n == 0:
        return np.empty(0, np.int32), np.empty((0, 3))
    half = np.stack([scene.boxes[b].half_extents for b in dyn])  # (D, 3)
    face_axis = np.arange(N_FACES) // 2
    # Face area: 4 × product of the two other half extents.
    areas = 4 * half[:, (face_axis + 1) % 3] * half[:, (face_axis + 2) % 3]  # (D, 6)
    probs = (areas / areas.sum()).ravel()
    pick = rng.choice(probs.size, n, p=probs)
    box_i, face = pick // N_FACES, pick % N_FACES
    h = half[box_i]
    local = rng.uniform(-1, 1, (n, 3)) * h
    axis = face // 2
    sign = np.where(face % 2 == 1, 1.0, -1.0)
    local[np.arange(n), axis] = sign * h[np.arange(n), axis]
    return dyn[box_i].astype(np.int32), local


def sample_tracks(
    scene: Scene,
    width: int,
    height: int,
    n_first: int = 1024,
    n_object: int = 256,
    seed: int | None = None,
    k: np.ndarray | None = None,
) -> GroundTruthTracks:
    """Sample tracks on frame 0 (query points, all visible in frame 0) and on the moving objects."""
    if k is None:
        k = scene.intrinsics(width, height)
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed if seed is None else seed, 0x7A0C]))
    p1, l1 = _sample_first_frame(scene, k, width, height, n_first, rng)
    p2, l2 = _sample_on_objects(scene, n_object, rng)
    prim = np.concatenate([p1, p2]).astype(np.int32)
    local = np.concatenate([l1, l2])
    positions = track_positions(scene, prim, local)
    visible = track_visibility(scene, positions, k, width, height)
    return GroundTruthTracks(
        ids=np.arange(prim.size, dtype=np.uint32),
        prim=prim,
        local=local,
        positions=positions,
        visible=visible,
        dynamic=scene.dynamic_mask[prim],
        first_frame=np.arange(prim.size) < p1.size,
    )
