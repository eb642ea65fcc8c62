"""Training pairs rendered on the fly from the synthetic generator, with exact St4RTrack labels.

A *group* is one freshly generated sequence (preset, seed) from which a few (anchor, frame j) pairs are drawn: the
anchor and the frames are rendered once and shared by the group's pairs, because rendering dominates the cost.
Everything about group ``g`` (preset, scene seed, anchor, gaps, nuisance noise) is a pure function of
(data seed, split, g), so a loader can be restarted at any step without saving data-pipeline state, and any number
of worker processes yields the same batches.

Labels are computed from the same ray casts that render the images (the anchor's hit points are carried by their
primitives to time j; frame j's depth is lifted to 3D), which gives exactly ``data.targets.pair_targets`` without
casting every ray a second time (a test checks the equality).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from st4rtrack_ros.data.nuisance import NuisanceModel, radial_distortion_maps
from st4rtrack_ros.data.presets import PRESETS
from st4rtrack_ros.data.render import pixel_rays, render
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.preprocess import to_tensor

#: Scene seeds of training groups start here; validation uses seeds 0 .. n_val-1, so the two never meet.
TRAIN_SEED_BASE = 10_000
_SPLIT_TAG = {"train": 0x7EA1, "val": 0x0A11}


@dataclass(frozen=True)
class DataConfig:
    """How pairs are drawn. ``width``/``height`` are the model resolution (labels are rendered at it)."""

    width: int = 256
    height: int = 160
    presets: tuple[str, ...] = ("easy", "occlusion", "fast", "shift")
    seq_len: int = 24  # frames in each generated scene
    max_gap: int = 12  # j - anchor ≤ max_gap
    pairs_per_seq: int = 2  # pairs drawn from each group (all share the anchor)
    p_self: float = 0.25  # probability that a pair is (anchor, anchor): trains head 1 as depth, feeds L_align
    seed: int = 0  # data seed (mixes into every group's draw)
    cache_dir: str | None = None  # optional on-disk cache of rendered groups (npz)
    # Lens distortion: each group's images and labels are warped with one radial coefficient drawn uniformly from
    # [-lens_k1, lens_k1] (``data.nuisance.radial_distortion_maps``); 0 = pinhole images, as rendered.
    lens_k1: float = 0.0

    def __post_init__(self) -> None:
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            raise ValueError(f"unknown data presets {unknown}; known: {sorted(PRESETS)}")
        if self.seq_len < 2 or not 1 <= self.max_gap < self.seq_len:
            raise ValueError(f"need seq_len ≥ 2 and 1 ≤ max_gap < seq_len, got {self.seq_len}, {self.max_gap}")
        if self.pairs_per_seq < 1:
            raise ValueError("pairs_per_seq must be ≥ 1")
        if not 0.0 <= self.lens_k1 < 0.3:
            raise ValueError(f"lens_k1 must be in [0, 0.3), got {self.lens_k1}")


def group_plan(cfg: DataConfig, split: str, g: int) -> tuple[str, int, int, list[int]]:
    """(preset, scene seed, anchor, frames j) of group ``g``: a pure function of (cfg.seed, split, g)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_TAG[split], g]))
    if split == "train":
        preset, seed = cfg.presets[int(rng.integers(len(cfg.presets)))], TRAIN_SEED_BASE + g
    else:  # validation: every preset equally often (a repeat only oversamples training), seeds below TRAIN_SEED_BASE
        unique = tuple(dict.fromkeys(cfg.presets))
        preset, seed = unique[g % len(unique)], g
    if seed >= TRAIN_SEED_BASE and split == "val":
        raise ValueError(f"validation group {g} would use a training seed")
    anchor = int(rng.integers(0, cfg.seq_len - cfg.max_gap))
    frames = [anchor if rng.random() < cfg.p_self else anchor + int(rng.integers(1, cfg.max_gap + 1))
              for _ in range(cfg.pairs_per_seq)]
    return preset, seed, anchor, frames


def _to_anchor(points_world: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return ((points_world - pose[:3, 3]) @ pose[:3, :3]).astype(np.float32)


def render_group(cfg: DataConfig, split: str, g: int) -> dict[str, np.ndarray]:
    """Render group ``g``: images after the preset's nuisances and exact labels in the anchor camera frame.

    Returns per pair (P = pairs_per_seq): ``rgb1``/``rgb2`` (P, H, W, 3) uint8, ``track_pts``/``recon_pts``
    (P, H, W, 3) float32, ``track_valid``/``recon_valid``/``track_dyn``/``recon_dyn`` (P, H, W) bool (``*_dyn``:
    the pixel shows a moving object in the anchor / in frame j), ``is_self`` (P,) bool.
    """
    preset, seed, anchor, frames = group_plan(cfg, split, g)
    w, h = cfg.width, cfg.height
    seq = make_sequence(preset, cfg.seq_len, seed, w, h, n_tracks=0, n_object_tracks=0)
    scene = seq.scene
    # The nuisances as SynthSequence.frames() applies them (same generator family), but only on the frames we use.
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0B5E]))
    nuisance = NuisanceModel(scene.preset.nuisance, rng)
    rays = pixel_rays(seq.k, w, h)
    rendered = {}
    for f in sorted({anchor, *frames}):
        out = render(scene, f, w, h, seq.k)
        blur = seq._blur_vector(f, out.depth) if scene.preset.nuisance.motion_blur_px > 0 else (0.0, 0.0)
        rendered[f] = (nuisance.apply(out.rgb, float(scene.times[f]), blur), out)

    a_pose = scene.camera_pose(anchor)
    rgb_a, out_a = rendered[anchor]
    a_valid = out_a.prim.ravel() >= 0
    prim = np.maximum(out_a.prim.ravel(), 0)
    x_world = (rays * out_a.depth.ravel()[:, None].astype(np.float64)) @ a_pose[:3, :3].T + a_pose[:3, 3]
    # Box-local coordinates of each anchor hit, then carried by its box to time j.
    local = np.einsum("nji,nj->ni", scene.box_rot[anchor, prim], x_world - scene.box_pos[anchor, prim])
    track, recon, recon_valid, recon_dyn, rgb2 = [], [], [], [], []
    for j in frames:
        moved = np.einsum("nij,nj->ni", scene.box_rot[j, prim], local) + scene.box_pos[j, prim]
        t = _to_anchor(moved, a_pose)
        t[~a_valid] = 0.0
        track.append(t.reshape(h, w, 3))
        rgb_j, out_j = rendered[j]
        pose = scene.camera_pose(j)
        pj = (rays * out_j.depth.ravel()[:, None].astype(np.float64)) @ pose[:3, :3].T + pose[:3, 3]
        recon.append(_to_anchor(pj, pose=a_pose).reshape(h, w, 3))
        recon_valid.append(out_j.prim >= 0)
        recon_dyn.append(out_j.dynamic)
        rgb2.append(rgb_j)
    n = len(frames)
    group = {
        "rgb1": np.repeat(rgb_a[None], n, axis=0), "rgb2": np.stack(rgb2),
        "track_pts": np.stack(track), "recon_pts": np.stack(recon),
        "track_valid": np.repeat(a_valid.reshape(1, h, w), n, axis=0), "recon_valid": np.stack(recon_valid),
        "track_dyn": np.repeat(out_a.dynamic[None], n, axis=0), "recon_dyn": np.stack(recon_dyn),
        "is_self": np.array([j == anchor for j in frames]),
    }
    if cfg.lens_k1 > 0:
        # its own generator, so turning distortion on leaves every other draw of the group unchanged
        k1 = float(np.random.default_rng(np.random.SeedSequence([cfg.seed, _SPLIT_TAG[split], g, 0x1E45]))
                   .uniform(-cfg.lens_k1, cfg.lens_k1))
        group = distort_group(group, radial_distortion_maps(seq.k, w, h, k1))
    return group


def distort_group(group: dict[str, np.ndarray], maps: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Warp every per-pixel array of a group (P, H, W[, C]) through ``cv2.remap`` maps: images bilinear, labels and
    masks nearest (a label stays the exact 3D point of the pixel it came from)."""
    out = dict(group)
    for key, value in group.items():
        if value.ndim < 3:
            continue
        interp = cv2.INTER_LINEAR if key.startswith("rgb") else cv2.INTER_NEAREST
        src = value.view(np.uint8) if value.dtype == bool else value
        warped = np.stack([cv2.remap(x, *maps, interp, borderMode=cv2.BORDER_REPLICATE) for x in src])
        out[key] = warped.view(bool) if value.dtype == bool else warped
    return out


class PairGroups(Dataset):
    """Map-style dataset over group indices (the sampler chooses which), optionally cached on disk / in memory.

    ``memory_cache`` keeps up to that many rendered groups in this process (useful for fixed-batch overfitting and
    for the validation set); the disk cache (``cfg.cache_dir``) is shared by workers and runs.
    """

    def __init__(self, cfg: DataConfig, split: str = "train", memory_cache: int = 0) -> None:
        if split not in _SPLIT_TAG:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.cfg, self.split, self.memory_cache = cfg, split, memory_cache
        self._mem: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:  # an effectively endless stream; the sampler bounds it
        return 2**31 - 1

    def _cache_path(self, g: int) -> Path | None:
        c = self.cfg
        if c.cache_dir is None:
            return None
        key = f"{self.split}_{g}_s{c.seed}_{c.width}x{c.height}_L{c.seq_len}_G{c.max_gap}_P{c.pairs_per_seq}" \
              f"_ps{c.p_self:g}_{'-'.join(c.presets)}{f'_k{c.lens_k1:g}' if c.lens_k1 else ''}.npz"
        return Path(c.cache_dir) / key

    def __getitem__(self, g: int) -> dict[str, np.ndarray]:
        g = int(g)
        if g in self._mem:
            return self._mem[g]
        path = self._cache_path(g)
        item = None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    item = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile):  # a half-written file from a killed run: redo it
                item = None
        if item is None:
            item = render_group(self.cfg, self.split, g)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                # atomic publish: write, then rename; the pid keeps workers and torchrun ranks off each other's file
                tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
                np.savez(tmp, **item)
                tmp.replace(path)
        if len(self._mem) < self.memory_cache:
            self._mem[g] = item
        return item


def collate_groups(groups: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Groups → one batch of pairs: images normalised as the network expects (``to_tensor``), labels as tensors."""
    cat = {k: np.concatenate([gr[k] for gr in groups]) for k in groups[0]}
    out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cat.items() if not k.startswith("rgb")}
    for k in ("rgb1", "rgb2"):
        out["img" + k[-1]] = torch.stack([to_tensor(im) for im in cat[k]])
    return out


def worker_init(_: int) -> None:
    """One thread per data worker: the workers are the parallelism; nested OpenCV/torch pools only oversubscribe."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
