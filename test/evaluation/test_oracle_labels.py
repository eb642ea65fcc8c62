"""Oracle labels (the study's ``labels: oracle``): each snapshot is labelled by the bag's ground truth — the anchor's
visible ground-truth points, their true projections through the tracker's pixel mapping, the recorded visibility and
depth — and a study cell labelled so runs on a real (tiny) network, with labels that differ from KLT's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from st4rtrack_ros.data.bag_io import read_frames, write_sequence
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.oracle_labels import OracleLabels
from st4rtrack_ros.evaluation.study import StudyConfig, run_cell
from st4rtrack_ros.model.checkpoint import save_checkpoint
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import fit_depth, fit_image, plan_mapping, to_tensor
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
CAMERA_WH, MODEL_WH = (160, 96), (128, 80)  # a real crop: the labels must go through the pixel mapping


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    seq = make_sequence("occlusion", 8, 2000, width=CAMERA_WH[0], height=CAMERA_WH[1], n_tracks=96, n_object_tracks=32)
    bag = tmp_path_factory.mktemp("oracle") / "bag"
    write_sequence(seq, bag)
    return list(seq.frames()), bag


def _snapshot(frames, idx, mapping) -> WindowSnapshot:
    rgb = np.stack([fit_image(frames[i].rgb, mapping) for i in idx])
    return WindowSnapshot(images=torch.stack([to_tensor(r) for r in rgb]), rgb=rgb,
                          k=torch.as_tensor(mapping.intrinsics_to_model(frames[0].k), dtype=torch.float32),
                          stamps_ns=np.array([frames[i].stamp_ns for i in idx], dtype=np.int64))


def test_labels_are_the_projections_of_the_ground_truth(scene):
    frames, bag = scene
    mapping = plan_mapping(CAMERA_WH, MODEL_WH, "crop")
    idx = [0, 2, 5, 7]
    oracle = OracleLabels.from_bag(bag, "crop", max_queries=40)
    query, uv, vis, depth = oracle(_snapshot(frames, idx, mapping), [0, 1, 2, 3])
    n = len(query)
    assert n == 40 and uv.shape == (4, n, 2) and vis.shape == (4, n) and depth.shape == (4, *MODEL_WH[::-1])
    w, h = MODEL_WH
    assert ((query >= 0) & (query <= [w - 1, h - 1])).all() and np.array_equal(uv[0], query.astype(np.float32))
    assert vis[0].all() and 0 < vis[1:].sum() < vis[1:].size  # the occlusion preset hides some points

    # Independently, from the sequence itself: which ids the queries are, then their projections in every frame.
    a = frames[0]
    cam0 = (np.linalg.inv(a.pose) @ np.c_[a.track_xyz, np.ones(len(a.track_xyz))].T).T[:, :3]
    pix0 = mapping.camera_to_model((a.k @ cam0.T).T[:, :2] / cam0[:, 2:])
    seen = np.where(a.track_visible & (cam0[:, 2] > 0), 0.0, np.inf)  # queries are visible points of the anchor
    rows = [int(np.argmin(np.linalg.norm(pix0 - q, axis=1) + seen)) for q in query]
    assert np.allclose(pix0[rows], query, atol=1e-3) and a.track_visible[rows].all()
    for t, i in enumerate(idx):
        f = frames[i]
        cam = (np.linalg.inv(f.pose) @ np.c_[f.track_xyz[rows], np.ones(n)].T).T[:, :3]
        front = cam[:, 2] > 1e-6
        expect = mapping.camera_to_model((f.k @ cam.T).T[:, :2] / cam[:, 2:])
        assert np.allclose(uv[t][front], expect[front], atol=1e-2) and np.isnan(uv[t][~front]).all()
        assert not (vis[t] & ~f.track_visible[rows]).any()  # visible only where the ground truth says so
        assert (uv[t, vis[t]] >= 0).all() and (uv[t, vis[t]] <= [w - 1, h - 1]).all()  # visible = in the image
        assert np.array_equal(depth[t], fit_depth(f.depth, mapping))
        # the depth map agrees with the projected points where they are visible (the mapping is the same)
        px = np.round(uv[t, vis[t]]).astype(int)
        assert np.median(np.abs(depth[t][px[:, 1], px[:, 0]] / cam[vis[t], 2] - 1)) < 0.02


def test_oracle_needs_the_snapshot_stamps_of_its_own_bag(scene):
    frames, bag = scene
    mapping = plan_mapping(CAMERA_WH, MODEL_WH, "crop")
    oracle = OracleLabels(read_frames(bag), "crop")
    snap = _snapshot(frames, [0, 3, 6], mapping)
    snap.stamps_ns = snap.stamps_ns + 1
    with pytest.raises(ValueError, match="no ground truth for stamp"):
        oracle(snap, [0, 1, 2])
    snap.stamps_ns = None
    with pytest.raises(ValueError, match="no frame stamps"):
        oracle(snap, [0, 1, 2])


def _tiny_study(tmp_path: Path, **kw) -> StudyConfig:
    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    return StudyConfig(checkpoint=str(ckpt), frames=10, size=[128, 80],
                       variants={"no adaptation": None, "vanilla": {"use_occlusion_mask": False, "use_sigma2": False,
                                                                    "traj_pseudo_visibility": False}},
                       adaptation={"every_n_frames": 3, "window_frames": 4, "holdout_frames": 1, "steps": 2,
                                   "lr": 1e-4},
                       tracking={"min_visible_fraction": 0.0, "window_size": 100}, gate=False, **kw)


def test_a_study_cell_runs_on_oracle_labels_and_they_are_not_klts(tmp_path):
    bag = tmp_path / "bag"
    write_sequence(make_sequence("occlusion", 10, 2000, width=128, height=80), bag)
    oracle_cfg = _tiny_study(tmp_path, labels="oracle")
    spec = oracle_cfg.tracker_spec("vanilla", 0.3, bag)
    assert isinstance(spec.label_source, OracleLabels) and spec.label_transform is not None  # corruption after it
    assert oracle_cfg.tracker_spec("no adaptation", 0.3, bag).label_source is None  # nothing to label
    with pytest.raises(ValueError, match="needs the cell's bag"):
        oracle_cfg.tracker_spec("vanilla")
    oracle = run_cell(oracle_cfg, bag, 0.0, "vanilla")
    klt = run_cell(_tiny_study(tmp_path), bag, 0.0, "vanilla")
    assert oracle["labels"] == "oracle" and klt["labels"] == "klt"
    assert oracle["rounds"] == klt["rounds"] >= 2 and oracle["accepted"] == oracle["rounds"]
    assert all(math.isfinite(h["loss_before"]) and math.isfinite(h["loss_after"]) for h in oracle["history"])
    assert oracle["history"][0]["loss_before"] != klt["history"][0]["loss_before"]  # other labels, other loss
    assert oracle["epe"] is not None and oracle["epe"] > 0


def test_labels_switch_and_the_committed_oracle_config():
    with pytest.raises(ValueError, match="labels must be one of"):
        StudyConfig(labels="cotracker")
    assert StudyConfig().labels == "klt"
    cfg = StudyConfig.from_yaml(CONFIGS / "study_oracle.yaml")
    assert cfg.labels == "oracle" and not cfg.gate and cfg.corruption == [0.0, 0.3]
    # the design of the clean KLT ablation it is compared with, and its variants verbatim
    oracle = yaml.safe_load((CONFIGS / "study_oracle.yaml").read_text())
    klt = yaml.safe_load((CONFIGS / "study_ablation_nogate_fullsteps.yaml").read_text())
    for key in ("checkpoint", "depth_noise", "depth_holes", "frames", "size", "adaptation", "tracking", "device",
                "gate"):
        assert oracle[key] == klt[key], key
    assert set(oracle["presets"]) >= set(klt["presets"]) and set(oracle["seeds"]) <= set(klt["seeds"])
    assert all(oracle["variants"][v] == klt["variants"][v] for v in oracle["variants"])
    assert set(oracle["variants"]) == {"no adaptation", "vanilla", "+ mask + σ²"}
