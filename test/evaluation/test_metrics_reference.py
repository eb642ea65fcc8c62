"""Metric checks against independent references: evo for ATE/RPE, known Sim(3) for Umeyama, hand cases."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
from evo.core import geometry as evo_geometry
from evo.core import metrics as evo_metrics
from evo.core.trajectory import PoseTrajectory3D
from scipy.spatial.transform import Rotation

from st4rtrack_ros.evaluation.alignment import (
    Sim3,
    median_scale,
    per_track_median_scale,
    rebase_to_first_camera,
    umeyama,
)
from st4rtrack_ros.evaluation.metrics import (
    apd_epe,
    as_dict,
    ate,
    depth_frame_scores,
    dynamic_tracks,
    evaluate_depth,
    evaluate_poses,
    evaluate_tracks,
    latency_summary,
)


def _trajectory(n: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth, turning trajectory of (n, 4, 4) poses."""
    t = np.linspace(0, 4, n)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, 3] = np.stack([np.cos(t) * 3, np.sin(1.3 * t) * 2, 0.2 * t], axis=1) + rng.normal(0, 0.01, (n, 3))
    poses[:, :3, :3] = Rotation.from_euler("zyx", np.stack([t, 0.2 * np.sin(t), 0.1 * t], axis=1)).as_matrix()
    return poses


def _random_sim3(rng: np.random.Generator) -> Sim3:
    return Sim3(float(rng.uniform(0.3, 3.0)), Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix(),
                rng.normal(0, 2, 3))


def _noisy(poses: np.ndarray, rng: np.random.Generator, sigma_t: float, sigma_r: float) -> np.ndarray:
    out = poses.copy()
    out[:, :3, 3] += rng.normal(0, sigma_t, (len(poses), 3))
    out[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, sigma_r, (len(poses), 3))).as_matrix() @ out[:, :3, :3]
    return out


def _evo(poses: np.ndarray) -> PoseTrajectory3D:
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=np.arange(len(poses), dtype=float))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("delta,all_pairs", [(1, False), (3, True), (3, False)])
def test_ate_rpe_equal_evo(seed: int, delta: int, all_pairs: bool) -> None:
    """ATE (Sim(3)-aligned RMSE) and RPE translation/rotation equal evo's on the same trajectories."""
    rng = np.random.default_rng(seed)
    gt = _trajectory(40, rng)
    pred = _random_sim3(rng).apply_poses(_noisy(gt, rng, 0.05, 0.02))
    ours = evaluate_poses(pred, gt, alignment="sim3", delta=delta, all_pairs=all_pairs)

    ref, est = _evo(gt), _evo(pred)
    est.align(ref, correct_scale=True)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    assert ours.ate == pytest.approx(ape.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-9)
    assert ate(pred, gt) == pytest.approx(ours.ate, rel=1e-12)
    for relation, rmse, mean in [
        (evo_metrics.PoseRelation.translation_part, ours.rpe_trans, ours.rpe_trans_mean),
        (evo_metrics.PoseRelation.rotation_angle_deg, ours.rpe_rot, ours.rpe_rot_mean),
    ]:
        rpe = evo_metrics.RPE(relation, delta=delta, delta_unit=evo_metrics.Unit.frames, all_pairs=all_pairs)
        rpe.process_data((ref, est))
        assert rmse == pytest.approx(rpe.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-7)
        assert mean == pytest.approx(rpe.get_statistic(evo_metrics.StatisticsType.mean), rel=1e-7)


def test_se3_alignment_equals_evo() -> None:
    """Without scale correction too."""
    rng = np.random.default_rng(5)
    gt = _trajectory(30, rng)
    s = _random_sim3(rng)
    pred = Sim3(1.0, s.rotation, s.translation).apply_poses(_noisy(gt, rng, 0.05, 0.01))
    ref, est = _evo(gt), _evo(pred)
    est.align(ref, correct_scale=False)
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    assert ate(pred, gt, alignment="se3") == pytest.approx(ape.get_statistic(evo_metrics.StatisticsType.rmse), rel=1e-9)


def test_umeyama_recovers_known_sim3_and_matches_evo() -> None:
    """Exact recovery from noiseless points; same answer as evo's implementation on noisy ones."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        src = rng.normal(0, 2, (50, 3))
        true = _random_sim3(rng)
        est = umeyama(src, true.apply(src))
        assert est.scale == pytest.approx(true.scale, rel=1e-10)
        np.testing.assert_allclose(est.rotation, true.rotation, atol=1e-10)
        np.testing.assert_allclose(est.translation, true.translation, atol=1e-9)
        dst = true.apply(src) + rng.normal(0, 0.1, src.shape)
        r_e, t_e, c_e = evo_geometry.umeyama_alignment(src.T, dst.T, True)
        ours = umeyama(src, dst)
        np.testing.assert_allclose(ours.rotation, r_e, atol=1e-10)
        np.testing.assert_allclose(ours.translation, t_e, atol=1e-10)
        assert ours.scale == pytest.approx(c_e, rel=1e-10)
    # A reflection in the data must still give a proper rotation.
    src = rng.normal(size=(20, 3))
    est = umeyama(src, src * np.array([1, 1, -1]))
    assert np.linalg.det(est.rotation) == pytest.approx(1.0)


def test_apd_epe_hand_cases() -> None:
    """Errors 0.05, 0.2, 0.4, 0.8, 2.0 m → fractions per threshold by hand."""
    gt = np.zeros((5, 3))
    pred = np.zeros((5, 3))
    pred[:, 0] = [0.05, 0.2, 0.4, 0.8, 2.0]
    apd, epe = apd_epe(pred, gt)
    # ≤0.1: 1/5, ≤0.3: 2/5, ≤0.5: 3/5, ≤1.0: 4/5 → mean 0.5
    assert apd == pytest.approx(50.0)
    assert epe == pytest.approx(np.mean([0.05, 0.2, 0.4, 0.8, 2.0]))
    apd_v, epe_v = apd_epe(pred, gt, valid=np.array([1, 1, 0, 0, 0], bool))
    assert apd_v == pytest.approx(100 * np.mean([0.5, 1, 1, 1]))
    assert epe_v == pytest.approx(0.125)
    assert np.isnan(apd_epe(pred, gt, valid=np.zeros(5, bool))[0])


def test_track_evaluation_alignments_and_dynamic_subset() -> None:
    """Perfect predictions → APD 100 / EPE 0 under every alignment; scaled predictions are undone by the
    scale alignments; Sim(3)-transformed ones by Umeyama; the dynamic subset is the moving tracks."""
    rng = np.random.default_rng(0)
    t_n, n = 10, 30
    gt = np.repeat(rng.normal(0, 3, (1, n, 3)), t_n, axis=0)
    gt[:, :10] += np.linspace(0, 1, t_n)[:, None, None] * np.array([0.5, 0, 0])  # 10 moving tracks
    gt[:, 10] += np.linspace(0, 0.005, t_n)[:, None]  # moves 0.0087 m in total: static by the 0.01 m rule
    dyn = dynamic_tracks(gt)
    assert dyn[:10].all() and not dyn[10:].any()
    for name, s in evaluate_tracks(gt.copy(), gt).items():
        assert (s.apd, s.epe, s.apd_dynamic, s.epe_dynamic) == (pytest.approx(100.0), pytest.approx(0.0),
                                                                  pytest.approx(100.0), pytest.approx(0.0)), name
        assert s.n_points == t_n * n and s.n_points_dynamic == t_n * 10
    res = evaluate_tracks(gt * 0.37, gt, alignments=("none", "median", "per_track"))
    assert res["none"].apd < 60
    assert res["median"].epe == pytest.approx(0.0, abs=1e-9)
    assert res["per_track"].epe == pytest.approx(0.0, abs=1e-9)
    sim = _random_sim3(rng)
    res = evaluate_tracks(sim.apply(gt), gt, alignments=("sim3", "median"))
    assert res["sim3"].epe == pytest.approx(0.0, abs=1e-8) and res["sim3"].apd == pytest.approx(100.0)
    assert res["median"].epe > 0.1
    # per-track scales: each track scaled differently is undone only by the per-track alignment
    scales = rng.uniform(0.5, 2, n)
    res = evaluate_tracks(gt / scales[None, :, None], gt, alignments=("median", "per_track"))
    assert res["per_track"].epe == pytest.approx(0.0, abs=1e-9) and res["median"].epe > 0.1
    np.testing.assert_allclose(per_track_median_scale(gt / scales[None, :, None], gt), scales)
    assert median_scale(2 * gt, gt) == pytest.approx(0.5)
    assert "sim3" in as_dict(evaluate_tracks(gt, gt))


def test_depth_hand_cases() -> None:
    """AbsRel/δ after per-frame median scaling, invalid pixels ignored."""
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = 3 * gt
    assert depth_frame_scores(pred, gt) == (pytest.approx(0.0), pytest.approx(1.0))
    # pred = [1, 2, 8] on valid gt [1, 2, 4]: median ratio 2/2 = 1 → rel errs 0, 0, 1 → AbsRel 1/3; δ: 2/3
    pred2 = np.array([[1.0, 2.0], [8.0, 5.0]])
    abs_rel, delta = depth_frame_scores(pred2, gt)
    assert abs_rel == pytest.approx(1 / 3) and delta == pytest.approx(2 / 3)
    # a zero / non-finite prediction is ignored too
    pred3 = np.array([[np.nan, 4.0], [8.0, 1.0]])
    assert depth_frame_scores(pred3, gt) == (pytest.approx(0.0), pytest.approx(1.0))
    scores = evaluate_depth([pred, pred2], [gt, gt])
    assert scores.abs_rel == pytest.approx(1 / 6) and scores.delta_1_25 == pytest.approx(100 * 5 / 6)
    assert scores.n_frames == 2


def test_perfect_poses_and_latency() -> None:
    """Perfect trajectories score zero; latency percentiles by hand."""
    gt = _trajectory(12, np.random.default_rng(1))
    s = evaluate_poses(gt, gt)
    assert s.ate == pytest.approx(0, abs=1e-9) and s.rpe_trans == pytest.approx(0, abs=1e-9)
    assert s.rpe_rot == pytest.approx(0, abs=1e-5) and s.scale == pytest.approx(1.0)
    lat = latency_summary(np.arange(1, 101) / 1000.0)
    assert lat.p50_ms == pytest.approx(50.5) and lat.p95_ms == pytest.approx(95.05)
    assert lat.fps == pytest.approx(1 / 0.0505) and lat.n_frames == 100
    assert latency_summary([0.1, 0.1], wall_time_s=0.5).fps == pytest.approx(4.0)


def test_rebase_to_first_camera() -> None:
    """Frame-0 camera becomes the identity; points follow the same change of frame."""
    gt = _trajectory(5, np.random.default_rng(2))
    pts = np.random.default_rng(3).normal(size=(4, 7, 3))
    poses0, pts0 = rebase_to_first_camera(gt, pts)
    np.testing.assert_allclose(poses0[0], np.eye(4), atol=1e-12)
    back = pts0 @ gt[0, :3, :3].T + gt[0, :3, 3]
    np.testing.assert_allclose(back, pts, atol=1e-12)
    np.testing.assert_allclose(gt[0] @ poses0[3], gt[3], atol=1e-12)
