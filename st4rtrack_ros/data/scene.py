"""Deterministic description of a synthetic dynamic scene: primitives, their motion and the robot camera path.

Everything here is analytic (oriented boxes, the room being a box seen from inside), so depth, tracks and
visibility can be computed exactly by :mod:`st4rtrack_ros.data.render` and :mod:`st4rtrack_ros.data.tracks`.

Conventions: the world frame is z-up (REP 103: x forward, y left, z up at the robot start); camera poses are
``world ← camera`` with OpenCV optical axes (x right, y down, z forward). Box poses are ``world ← box``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from st4rtrack_ros.data.presets import Preset, get_preset

#: Rotation base ← optical: optical x = -base y, optical y = -base z, optical z = base x.
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: Face order of a box: -x, +x, -y, +y, -z, +z (index = 2 * axis + positive side).
N_FACES = 6


@dataclass(frozen=True)
class Texture:
    """Procedural texture of one face, evaluated in face-local metric coordinates so it sticks to the surface."""

    family: str
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    scale: float  # metres per pattern period
    seed: int


@dataclass(frozen=True)
class Box:
    """An oriented box; ``interior`` boxes (the room) are seen from inside."""

    name: str
    half_extents: np.ndarray  # (3,) metres
    textures: tuple[Texture, ...]  # one per face, order of N_FACES
    dynamic: bool = False
    interior: bool = False


@dataclass
class Scene:
    """A full sequence: primitives with per-frame poses and the per-frame camera pose."""

    preset: Preset
    seed: int
    boxes: tuple[Box, ...]
    box_rot: np.ndarray  # (T, B, 3, 3) world ← box
    box_pos: np.ndarray  # (T, B, 3)
    cam_rot: np.ndarray  # (T, 3, 3) world ← camera (OpenCV optical axes)
    cam_pos: np.ndarray  # (T, 3)

    @property
    def n_frames(self) -> int:
        """Number of frames in the sequence."""
        return int(self.cam_pos.shape[0])

    @property
    def times(self) -> np.ndarray:
        """Frame times in seconds from the first frame."""
        return np.arange(self.n_frames) / self.preset.fps

    @property
    def dynamic_mask(self) -> np.ndarray:
        """(B,) bool: which primitives move."""
        return np.array([b.dynamic for b in self.boxes])

    def camera_pose(self, frame: int) -> np.ndarray:
        """4×4 pose world ← camera of one frame."""
        pose = np.eye(4)
        pose[:3, :3] = self.cam_rot[frame]
        pose[:3, 3] = self.cam_pos[frame]
        return pose

    def camera_poses(self) -> np.ndarray:
        """(T, 4, 4) poses world ← camera."""
        poses = np.tile(np.eye(4), (self.n_frames, 1, 1))
        poses[:, :3, :3] = self.cam_rot
        poses[:, :3, 3] = self.cam_pos
        return poses

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """Pinhole K for a size; square pixels, principal point at the image centre (pixel centres at integers)."""
        return intrinsics_from_fov(width, height, self.preset.hfov_deg)


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """K from the horizontal field of view, so every resolution sees the same scene."""
    f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _random_texture(rng: np.random.Generator, families: tuple[str, ...], scale: tuple[float, float]) -> Texture:
    """A texture with contrasting colours, so every surface has trackable detail."""
    base = rng.uniform(0.15, 0.85, 3)
    other = np.clip(1.0 - base + rng.normal(0, 0.15, 3), 0.05, 0.95)
    mix = rng.uniform(0.55, 0.95)
    color_b = (1 - mix) * base + mix * other
    return Texture(
        family=str(rng.choice(families)),
        color_a=(float(base[0]), float(base[1]), float(base[2])),
        color_b=(float(color_b[0]), float(color_b[1]), float(color_b[2])),
        scale=float(rng.uniform(*scale)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to (-π, π]."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _robot_path(preset: Preset, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unicycle path of a ground robot that wanders the room and steers away from the walls.

    Returns camera rotations (T, 3, 3) world ← optical and positions (T, 3).
    """
    lx, ly, _ = (s / 2 for s in preset.room_size)
    margin = min(2.0, 0.35 * min(lx, ly))
    fps, sub = preset.fps, 10
    dt = 1.0 / (fps * sub)
    freqs = rng.uniform(0.05, 0.25, 2)
    phases = rng.uniform(0, 2 * np.pi, 4)
    amps = preset.yaw_rate_amp * np.array([0.65, 0.45])
    x = -lx + margin + rng.uniform(0.0, 1.0)
    y = rng.uniform(-0.4, 0.4) * (ly - margin)
    yaw = rng.uniform(-0.4, 0.4)
    xs, ys, yaws = [], [], []
    max_rate = max(1.5 * preset.yaw_rate_amp, 0.6)
    for k in range(n_frames * sub):
        if k % sub == 0:
            xs.append(x)
            ys.append(y)
            yaws.append(yaw)
        t = k * dt
        v = preset.cam_speed * (1.0 + 0.15 * np.sin(2 * np.pi * 0.1 * t + phases[2]))
        rate = float(np.sum(amps * np.sin(2 * np.pi * freqs * t + phases[:2])))
        look = max(1.5, 2.5 * v)
        ax, ay = x + look * np.cos(yaw), y + look * np.sin(yaw)
        if abs(ax) > lx - margin or abs(ay) > ly - margin:
            rate += 2.0 * float(_wrap(np.arctan2(-y, -x) - yaw))
        rate = float(np.clip(rate, -max_rate, max_rate))
        yaw = float(_wrap(yaw + rate * dt))
        x = float(np.clip(x + v * np.cos(yaw) * dt, -lx + 0.5, lx - 0.5))
        y = float(np.clip(y + v * np.sin(yaw) * dt, -ly + 0.5, ly - 0.5))
    t = np.arange(n_frames) / fps
    bob_phase = rng.uniform(0, 2 * np.pi, 3)
    w = 2 * np.pi * preset.bob_freq
    z = preset.cam_height + preset.bob_amp * np.sin(w * t + bob_phase[0])
    pitch = np.deg2rad(preset.cam_pitch_deg) + np.deg2rad(0.6) * np.sin(w * t + bob_phase[1])
    roll = np.deg2rad(0.5) * np.sin(w * t + bob_phase[2])
    # Intrinsic z (yaw), y (pitch, positive looks down in a z-up frame), x (roll) of the robot base.
    r_base = Rotation.from_euler("ZYX", np.stack([np.asarray(yaws), pitch, roll], axis=1)).as_matrix()
    rot = r_base @ R_BASE_OPTICAL
    pos = np.stack([np.asarray(xs), np.asarray(ys), z], axis=1)
    return rot, pos


def _room(preset: Preset, rng: np.random.Generator) -> Box:
    """The room: floor, ceiling and four walls with their own textures."""
    lx, ly, lz = (s / 2 for s in preset.room_size)
    textures = tuple(_random_texture(rng, preset.textures, (0.4, 1.5)) for _ in range(N_FACES))
    return Box("room", np.array([lx, ly, lz]), textures, dynamic=False, interior=True)


def _path_clearance(centres_xy: np.ndarray, cam_xy: np.ndarray) -> np.ndarray:
    """Minimum xy distance of each centre to the camera path."""
    return np.min(np.linalg.norm(centres_xy[:, None, :] - cam_xy[None, :, :], axis=-1), axis=1)


def _static_boxes(
    preset: Preset, cam_pos: np.ndarray, rng: np.random.Generator
) -> tuple[list[Box], list[np.ndarray], list[np.ndarray]]:
    """Furniture-like boxes on the floor, kept clear of the robot path."""
    lx, ly, _ = (s / 2 for s in preset.room_size)
    boxes, rots, poss = [], [], []
    for attempt in range(preset.n_static_boxes * 40):
        if len(boxes) >= preset.n_static_boxes:
            break
        half = rng.uniform([0.2, 0.2, 0.15], [0.8, 0.8, 0.75])
        r_xy = float(np.hypot(half[0], half[1]))
        centre = np.array([rng.uniform(-lx + r_xy, lx - r_xy), rng.uniform(-ly + r_xy, ly - r_xy), half[2]])
        if _path_clearance(centre[None, :2], cam_pos[:, :2])[0] < r_xy + 0.6:
            continue
        yaw = rng.uniform(-np.pi, np.pi)
        textures = tuple(_random_texture(rng, preset.textures, (0.15, 0.6)) for _ in range(N_FACES))
        boxes.append(Box(f"static_{attempt}", half, textures))
        rots.append(Rotation.from_euler("z", yaw).as_matrix())
        poss.append(centre)
    return boxes, rots, poss


def _moving_object(
    preset: Preset, index: int, cam_rot: np.ndarray, cam_pos: np.ndarray, rng: np.random.Generator
) -> tuple[Box, np.ndarray, np.ndarray] | None:
    """A rigid box crossing the camera's view at a random time; None if no collision-free path was found."""
    n = cam_pos.shape[0]
    t = np.arange(n) / preset.fps
    lx, ly, lz = (s / 2 for s in preset.room_size)
    best: tuple[float, Box, np.ndarray, np.ndarray] | None = None
    for _ in range(60):
        half = rng.uniform(*preset.obj_size) * rng.uniform(0.6, 1.0, 3)
        radius = float(np.linalg.norm(half))
        # The first object crosses the view at the start, so frame 0 (the query frame) sees motion.
        lo, hi = (0, int(0.15 * n)) if index == 0 else (int(0.1 * n), int(0.9 * n))
        i_c = int(rng.integers(lo, max(hi, lo + 1)))
        forward = cam_rot[i_c][:, 2] * np.array([1.0, 1.0, 0.0])
        forward /= np.linalg.norm(forward) + 1e-12
        left = np.array([-forward[1], forward[0], 0.0])
        dist = rng.uniform(*preset.obj_distance)
        floating = rng.random() < 0.5
        z0 = rng.uniform(half.max() + 0.05, min(1.7, 2 * lz - half.max() - 0.05)) if floating else half[2]
        centre_c = cam_pos[i_c] + forward * dist + left * rng.uniform(-0.6, 0.6)
        centre_c[2] = z0
        heading = rng.uniform(-0.5, 0.5)
        side = 1.0 if rng.random() < 0.5 else -1.0
        direction = side * (np.cos(heading) * left + np.sin(heading) * forward)
        speed = rng.uniform(*preset.obj_speed)
        # Back-and-forth sweep through the crossing point (speed `speed` there, at most `amp` away), slightly
        # curved: bounded, so even fast objects stay in the room and keep crossing in front of things.
        amp = rng.uniform(1.2, 2.8)
        bend = rng.normal(0, 0.3)
        dt = t - t[i_c]
        phase = speed * dt / amp
        normal = np.array([-direction[1], direction[0], 0.0])
        pos = centre_c + np.outer(amp * np.sin(phase), direction) + np.outer(bend * (1 - np.cos(phase)), normal)
        if floating:
            pos[:, 2] += 0.1 * np.sin(2 * np.pi * 0.3 * dt + rng.uniform(0, 6.3))
            axis = rng.normal(size=3)
            rot0 = Rotation.random(random_state=int(rng.integers(0, 2**31 - 1)))
        else:
            axis = np.array([0.0, 0.0, 1.0])
            rot0 = Rotation.from_euler("z", rng.uniform(-np.pi, np.pi))
        axis /= np.linalg.norm(axis)
        spin = rng.uniform(*preset.obj_spin) * (1 if rng.random() < 0.5 else -1)
        rot = (rot0 * Rotation.from_rotvec(np.outer(spin * dt, axis))).as_matrix()
        clearance = float(np.min(np.linalg.norm(pos - cam_pos, axis=1))) - radius
        inside = np.all(np.abs(pos[:, 0]) < lx - radius) and np.all(np.abs(pos[:, 1]) < ly - radius)
        inside = inside and np.all(pos[:, 2] >= half[2] - 1e-9) and np.all(pos[:, 2] < 2 * lz - radius)
        textures = tuple(_random_texture(rng, preset.textures, (0.08, 0.35)) for _ in range(N_FACES))
        box = Box(f"object_{index}", half, textures, dynamic=True)
        if inside and clearance > 0.4:
            return box, rot, pos
        score = clearance if inside else clearance - 10.0
        if best is None or score > best[0]:
            best = (score, box, rot, pos)
    if best is not None and best[0] > 0.25:
        return best[1], best[2], best[3]
    return None


def make_scene(preset: Preset | str, n_frames: int, seed: int) -> Scene:
    """Build the scene of one (preset, seed) sequence; identical inputs give identical scenes."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5174]))
    cam_rot, cam_pos = _robot_path(preset, n_frames, rng)
    boxes: list[Box] = [_room(preset, rng)]
    rots: list[np.ndarray] = [np.broadcast_to(np.eye(3), (n_frames, 3, 3))]
    poss: list[np.ndarray] = [np.broadcast_to(np.array([0.0, 0.0, preset.room_size[2] / 2]), (n_frames, 3))]
    s_boxes, s_rots, s_poss = _static_boxes(preset, cam_pos, rng)
    for b, r, p in zip(s_boxes, s_rots, s_poss, strict=True):
        boxes.append(b)
        rots.append(np.broadcast_to(r, (n_frames, 3, 3)))
        poss.append(np.broadcast_to(p, (n_frames, 3)))
    for k in range(preset.n_objects):
        obj = _moving_object(preset, k, cam_rot, cam_pos, rng)
        if obj is not None:
            boxes.append(obj[0])
            rots.append(obj[1])
            poss.append(obj[2])
    return Scene(
        preset=preset,
        seed=seed,
        boxes=tuple(boxes),
        box_rot=np.ascontiguousarray(np.stack(rots, axis=1)),
        box_pos=np.ascontiguousarray(np.stack(poss, axis=1)),
        cam_rot=cam_rot,
        cam_pos=cam_pos,
    )
