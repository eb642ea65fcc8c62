"""A complete synthetic benchmark sequence: scene + renders + nuisances + ground truth, frame by frame.

Frames are produced lazily so long or large sequences can be streamed straight into a bag.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from st4rtrack_ros.data.nuisance import NuisanceModel
from st4rtrack_ros.data.presets import Preset, get_preset
from st4rtrack_ros.data.render import render
from st4rtrack_ros.data.scene import Scene, make_scene
from st4rtrack_ros.data.tracks import GroundTruthTracks, project, sample_tracks

#: Default first stamp (2023-11-14T22:13:20Z) so stamps look like wall-clock time in standard tools.
DEFAULT_START_NS = 1_700_000_000 * 10**9


@dataclass
class SynthFrame:
    """One frame with everything the bag stores."""

    index: int
    stamp_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8, after nuisances
    depth: np.ndarray  # (H, W) float32 metres, 0 = no surface
    pose: np.ndarray  # (4, 4) world ← camera (optical)
    k: np.ndarray  # (3, 3)
    track_ids: np.ndarray  # (N,) uint32
    track_xyz: np.ndarray  # (N, 3) world positions at this frame
    track_visible: np.ndarray  # (N,) bool
    track_dynamic: np.ndarray  # (N,) bool


@dataclass
class SynthSequence:
    """A generated sequence; iterate :meth:`frames` to render."""

    scene: Scene
    width: int
    height: int
    k: np.ndarray
    tracks: GroundTruthTracks
    start_ns: int = DEFAULT_START_NS

    def stamp_ns(self, index: int) -> int:
        """Stamp of a frame: a fixed start plus the frame time at the preset's rate."""
        return self.start_ns + round(index * 1e9 / self.scene.preset.fps)

    def _blur_vector(self, index: int, depth: np.ndarray) -> tuple[float, float]:
        """Median image motion (px) of the static scene over one frame interval, to orient the motion blur."""
        n = self.scene.n_frames
        if n < 2:
            return (0.0, 0.0)
        other = index + 1 if index + 1 < n else index - 1
        step = max(1, min(self.width, self.height) // 16)
        v, u = np.mgrid[0 : self.height : step, 0 : self.width : step]
        z = depth[v, u].astype(np.float64)
        ok = z > 0
        pix = np.stack([u[ok], v[ok], np.ones(ok.sum())], axis=1) * z[ok, None]
        pc = pix @ np.linalg.inv(self.k).T
        pose = self.scene.camera_pose(index)
        pw = pc @ pose[:3, :3].T + pose[:3, 3]
        uv, zz = project(pw, self.scene.camera_pose(other), self.k)
        good = zz > 0
        if not np.any(good):
            return (0.0, 0.0)
        flow = uv[good] - np.stack([u[ok], v[ok]], axis=1)[good]
        sign = 1.0 if other > index else -1.0
        med = np.median(flow, axis=0) * sign
        return (float(med[0]), float(med[1]))

    def frames(self) -> Iterator[SynthFrame]:
        """Render frames in order, applying the preset's nuisances."""
        rng = np.random.default_rng(np.random.SeedSequence([self.scene.seed, 0x0B5E]))
        nuisance = NuisanceModel(self.scene.preset.nuisance, rng)
        for i in range(self.scene.n_frames):
            out = render(self.scene, i, self.width, self.height, self.k)
            blur = self._blur_vector(i, out.depth) if self.scene.preset.nuisance.motion_blur_px > 0 else (0.0, 0.0)
            rgb = nuisance.apply(out.rgb, float(self.scene.times[i]), blur)
            yield SynthFrame(
                index=i,
                stamp_ns=self.stamp_ns(i),
                rgb=rgb,
                depth=out.depth,
                pose=self.scene.camera_pose(i),
                k=self.k,
                track_ids=self.tracks.ids,
                track_xyz=self.tracks.positions[i],
                track_visible=self.tracks.visible[i],
                track_dynamic=self.tracks.dynamic,
            )


def make_sequence(
    preset: Preset | str,
    n_frames: int,
    seed: int,
    width: int = 256,
    height: int = 160,
    n_tracks: int = 1024,
    n_object_tracks: int = 256,
    start_ns: int = DEFAULT_START_NS,
) -> SynthSequence:
    """Build scene, intrinsics and ground-truth tracks for one (preset, seed) sequence at a resolution."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    scene = make_scene(preset, n_frames, seed)
    k = scene.intrinsics(width, height)
    tracks = sample_tracks(scene, width, height, n_first=n_tracks, n_object=n_object_tracks, k=k)
    return SynthSequence(scene=scene, width=width, height=height, k=k, tracks=tracks, start_ns=start_ns)
