"""The online tracker's machinery — poses, window chaining, track ids, visibility — checked with exact pointmaps.

The oracle engine (evaluation/oracle.py) answers with the true St4RTrack targets, so any error here is the
tracker's own.
"""

from __future__ import annotations

import numpy as np
import pytest

from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.oracle import OracleEngine
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput


@pytest.fixture(scope="module")
def run():
    seq = make_sequence("easy", 30, seed=2, width=128, height=80, n_tracks=64, n_object_tracks=16)
    frames = list(seq.frames())
    tracker = OnlineTracker(OracleEngine(seq, [f.rgb for f in frames]),  # type: ignore[arg-type]
                            TrackerConfig(window_size=8, num_queries=96, map_every=3, map_voxel=0.05))
    results = [tracker.step(FrameInput(f.stamp_ns, f.rgb, f.k, f.depth)) for f in frames]
    return seq, frames, tracker, results


def _pose_errors(frames, results):
    inv0 = np.linalg.inv(frames[0].pose)
    gt = np.stack([inv0 @ f.pose for f in frames])
    pred = np.stack([r.pose_world_cam for r in results])
    trans = np.linalg.norm(gt[:, :3, 3] - pred[:, :3, 3], axis=1)
    rel = np.einsum("nji,njk->nik", gt[:, :3, :3], pred[:, :3, :3])
    rot = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return trans, rot


def test_world_is_metric_and_poses_are_exact_across_reanchoring(run):
    _, frames, _, results = run
    assert all(r.metric_scale for r in results)  # the depth image fixed the scale on the first frame
    reanchors = [r.frame_index for r in results if r.reanchored]
    assert reanchors[:4] == [0, 7, 14, 21]  # windows of 8 frames, each sharing its first frame with the last
    trans, rot = _pose_errors(frames, results)
    assert trans.max() < 2e-3, trans  # metres, over 30 frames and 3 chained windows
    assert rot.max() < 0.05, rot  # degrees
    # no jump at a re-anchor frame: the error there is no larger than its neighbours'
    for i in reanchors[1:]:
        assert trans[i] <= trans[i - 1] + 1e-3


def test_track_ids_persist_and_positions_follow_the_scene(run):
    _, _, _, results = run
    before, after = results[6].tracks, results[7].tracks
    continued = np.isin(after.ids, before.ids)
    assert continued.mean() > 0.3  # many new queries continue living tracks across the re-anchor
    assert len(np.unique(after.ids)) == len(after.ids)
    # a continued track keeps its age and its position does not jump at the re-anchor
    _common, ia, ib = np.intersect1d(before.ids, after.ids, return_indices=True)
    assert (after.age[ib] >= before.age[ia]).all()
    jump = np.linalg.norm(after.positions[ib] - before.positions[ia], axis=1)
    assert np.median(jump) < 0.05


def test_visibility_and_outputs_are_sane(run):
    _, _, tracker, results = run
    for r in results:
        assert r.points.shape[1] == 3 and np.isfinite(r.points).all() and len(r.points) == len(r.colors)
        assert r.tracks.history.shape[1:] == (tracker.config.history_len, 3)
        assert r.tracks.visible.mean() > 0.3
    maps = [r for r in results if r.map_points is not None]
    assert len(maps) == 10 and 0 < len(maps[-1].map_points) <= tracker.config.map_max_points


def test_time_jump_and_size_change_reset(run):
    _seq, frames, tracker, _ = run
    resets = tracker.resets
    tracker.step(FrameInput(frames[0].stamp_ns, frames[0].rgb, frames[0].k, frames[0].depth))  # back in time
    assert tracker.resets == resets + 1 and tracker.window is not None and tracker.window.index == 0
    with pytest.raises(ValueError, match="uint8"):
        tracker.step(FrameInput(frames[1].stamp_ns, frames[1].rgb.astype(np.float32)))
    with pytest.raises(ValueError, match="aligned"):
        tracker.step(FrameInput(frames[1].stamp_ns, frames[1].rgb, None, np.zeros((3, 3), np.float32)))
    assert tracker.resets == resets + 1  # bad input leaves the state alone
