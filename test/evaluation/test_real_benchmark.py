"""The real-data benchmark: its label-free measures on made-up geometry, and the whole evaluation on a 6-frame slice
of the real RGB-D bag with the default model (skipped when ../shared/data/real, or $ST4R_REAL_DATA, is absent)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from st4rtrack_ros.evaluation.label_free import reprojection_residual, static_background, static_jitter
from st4rtrack_ros.evaluation.real_benchmark import REAL_DATA_ENV, default_real_dir, evaluate_bag, find_bags
from st4rtrack_ros.evaluation.real_benchmark_report import table
from st4rtrack_ros.model.checkpoint import load_checkpoint
from st4rtrack_ros.settings import default_checkpoint
from st4rtrack_ros.tracking.tracker import TrackerConfig

RGBD_BAG = "7scenes_redkitchen_dev"


def test_real_dir_from_env_and_bag_discovery(tmp_path, monkeypatch):
    monkeypatch.setenv(REAL_DATA_ENV, str(tmp_path))
    assert default_real_dir() == tmp_path
    for name in ("b_bag", "a_bag", "not_a_bag"):
        (tmp_path / name).mkdir()
    for name in ("b_bag", "a_bag"):
        (tmp_path / name / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert [p.name for p in find_bags(tmp_path)] == ["a_bag", "b_bag"]
    assert find_bags(tmp_path / "missing") == []


def test_reprojection_residual_and_jitter_on_known_geometry():
    rng = np.random.default_rng(0)
    k = np.array([[200.0, 0, 128], [0, 200.0, 80], [0, 0, 1]])
    pts = np.c_[rng.uniform(-1, 1, (50, 2)), rng.uniform(2, 4, 50)]  # (M, 3) world = camera 0
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[1, 0, 3], poses[2, 2, 3] = 0.2, 0.5  # world ← camera: a step right, then forward
    positions = np.broadcast_to(pts, (3, 50, 3)).copy()
    cam = positions - poses[:, None, :3, 3]  # pure translations
    uv = (cam @ k.T)[..., :2] / cam[..., 2:]
    np.testing.assert_allclose(reprojection_residual(positions, poses, k, uv), 0, atol=1e-9)
    shifted = uv + np.array([3.0, 4.0])
    np.testing.assert_allclose(reprojection_residual(positions, poses, k, shifted), 5.0, atol=1e-9)
    positions[1, 7] = np.nan  # an ended track is not scored
    assert np.isnan(reprojection_residual(positions, poses, k, uv)[1, 7])
    # Static points that wobble by 1 % of the scene depth between frames: jitter 0.01.
    still = np.broadcast_to(pts, (6, 50, 3)).copy()
    still[1::2, :, 0] += 0.03
    vis = np.ones((6, 50), bool)
    assert static_jitter(still, vis, np.ones(50, bool), 3.0) == pytest.approx(0.01)
    assert math.isnan(static_jitter(still, vis, np.zeros(50, bool), 3.0))


def test_static_background_separates_movers_under_a_moving_camera():
    rng = np.random.default_rng(1)
    k = np.array([[200.0, 0, 128], [0, 200.0, 80], [0, 0, 1]])
    n_frames, m, movers = 12, 120, np.arange(100, 120)
    pts = np.c_[rng.uniform(-2, 2, (m, 2)), rng.uniform(3, 8, m)]
    uv = np.zeros((n_frames, m, 2))
    for t in range(n_frames):
        world = pts.copy()
        world[movers, 1] += 0.08 * t  # the movers fall (not along any epipolar line of a sideways camera)
        cam = world - np.array([0.05 * t, 0, 0])  # the camera slides right
        uv[t] = (cam @ k.T)[:, :2] / cam[:, 2:]
    static = static_background(uv, np.ones((n_frames, m), bool))
    assert static[:100].mean() > 0.95 and static[movers].mean() < 0.1


@pytest.fixture(scope="module")
def rgbd_bag():
    path = default_real_dir() / RGBD_BAG
    if not (path / "metadata.yaml").is_file():
        pytest.skip(f"real camera bags not found at {path} (set ${REAL_DATA_ENV} or lay shared/ beside the repo)")
    return path


@pytest.fixture
def one_thread():
    """One torch thread: on a busy shared 2-core machine two threads run several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_real_rgbd_slice_gives_every_row_with_finite_metrics(rgbd_bag, tmp_path, one_thread):
    device = torch.device("cpu")
    net = load_checkpoint(default_checkpoint(), device=device).eval()
    # A 3-frame window so that the 6-frame online run re-anchors and the scale drift has something to measure.
    entry = evaluate_bag(net, rgbd_bag, "real", 6, device, tmp_path,
                         tracker_cfg=dataclasses.replace(TrackerConfig(), window_size=3))
    assert entry["frames"] == 6 and entry["k_source"] == "camera_info"
    m = entry["protocol"]["metrics"]
    assert m["skipped"] == {}
    assert 0 < m["depth"]["abs_rel"] < 5 and m["camera"]["ate"] >= 0 and m["camera"]["rpe_rot"] >= 0
    assert 0 <= m["tracking"]["sim3"]["apd"] <= 100
    b = m["baselines"]
    for key, field in (("constant_depth", "abs_rel"), ("static_camera", "ate"), ("static_camera", "rpe_rot"),
                       ("static_points", "apd"), ("static_points_sim3", "apd")):
        assert b[key][field] is not None and math.isfinite(b[key][field]), key
    assert set(entry["protocol"]["targets"]) == {"depth_abs_rel_below_constant", "ate_25pct_below_static",
                                                 "apd_sim3_above_held_still", "rpe_rot_below_2x_static"}
    assert all(isinstance(t["met"], bool) for t in entry["protocol"]["targets"].values())
    for mode in ("protocol", "online"):
        lf = entry[mode]["label_free"]
        assert lf["klt_tracks"] > 100 and 0 <= lf["pose_success_rate"] <= 1
        rp = lf["reprojection_px"]
        assert rp["n"] > 100 and 0 <= rp["model_median"] < 1000 and rp["nothing_moves_median"] >= 0
        assert entry[mode]["metrics"]["runtime"]["n_frames"] == 6
    assert entry["protocol"]["label_free"]["reanchors"] == 0 and entry["online"]["label_free"]["reanchors"] >= 1
    for key in ("online_vs_protocol", "online_vs_truth", "protocol_vs_truth"):
        assert entry["scale_drift"][key]["last"] > 0 and entry["scale_drift"][key]["max_factor"] >= 1, key
    pic = tmp_path / entry["picture"]
    assert 10_000 < pic.stat().st_size < 300_000
    lines = table([entry])
    assert sum(line.startswith(f"| {RGBD_BAG} |") for line in lines) == 4  # GT, targets, protocol, online
    assert not any("nan" in line for line in lines)
