"""The study's pseudo-label corruption: the share of tracks it replaces, the holes and noise it puts in depth, its
seeded stream, and that clean cells get no hook at all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from st4rtrack_ros.evaluation.label_corruption import LabelCorruption
from st4rtrack_ros.evaluation.study import StudyConfig


def _labels(f: int = 5, n: int = 200, hw: tuple[int, int] = (80, 128)):
    rng = np.random.default_rng(0)
    h, w = hw
    uv = np.repeat(rng.uniform((0, 0), (w - 1, h - 1), size=(1, n, 2)), f, axis=0).astype(np.float32)
    depth = rng.uniform(1.0, 5.0, size=(f, h, w)).astype(np.float32)
    return uv, depth, hw


def test_replaces_the_given_share_of_tracks_and_punches_holes_in_depth() -> None:
    uv, depth, hw = _labels()
    lc = LabelCorruption(tracks=0.3, depth_noise=0.1, depth_holes=0.2)
    out_uv, out_depth = lc(uv, depth, hw, torch.Generator().manual_seed(0))
    changed = (out_uv != uv).any(axis=(0, 2))
    assert changed.sum() == round(0.3 * uv.shape[1])  # 60 of 200 tracks, in every frame after the anchor
    assert np.array_equal(out_uv[0], uv[0]) and (out_uv[1:, changed] != uv[1:, changed]).all()
    assert (out_uv[..., 0] <= hw[1] - 1).all() and (out_uv[..., 1] <= hw[0] - 1).all()
    holes = out_depth == 0
    assert abs(holes.mean() - 0.2) < 0.01
    ratio = np.log(out_depth[~holes] / depth[~holes])
    assert abs(ratio.std() - 0.1) < 0.01 and abs(ratio.mean()) < 0.01
    assert not (depth == 0).any() and not np.shares_memory(out_uv, uv)  # the inputs are left as they were


def test_seeded_by_the_workers_generator_and_a_no_op_when_clean() -> None:
    uv, depth, hw = _labels()
    lc = LabelCorruption(tracks=0.5, depth_noise=0.2, depth_holes=0.1)
    a = lc(uv, depth, hw, torch.Generator().manual_seed(7))
    b = lc(uv, depth, hw, torch.Generator().manual_seed(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    clean = LabelCorruption()
    assert not clean.active and clean(uv, depth, hw, gen) == (uv, depth)
    assert torch.equal(gen.get_state(), state)  # nothing drawn: the worker's stream is the same as without a hook
    out_uv, out_depth = LabelCorruption(tracks=1.0)(uv, None, hw, gen)
    assert out_depth is None and (out_uv[1:] != uv[1:]).any(axis=-1).all()
    with pytest.raises(ValueError, match="label corruption"):
        LabelCorruption(tracks=1.5)


def test_the_study_hands_corruption_to_the_worker_only_for_corrupted_cells() -> None:
    cfg = StudyConfig(depth_noise=0.1, depth_holes=0.2)
    assert cfg.label_corruption(0.0) is None and cfg.tracker_spec("St4RTrack+ (both)", 0.0).label_transform is None
    spec = cfg.tracker_spec("St4RTrack+ (both)", 0.3)
    assert spec.label_transform == LabelCorruption(tracks=0.3, depth_noise=0.1, depth_holes=0.2)
    assert spec.adaptation.synchronous and not hasattr(spec.adaptation, "corrupt_tracks")
