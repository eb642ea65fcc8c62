"""The robustness study end to end at its smallest: every variant runs, results are saved and summarised."""

from __future__ import annotations

import json

import torch

from st4rtrack_ros.evaluation.study import DEFAULT_VARIANTS, StudyConfig, run_study
from st4rtrack_ros.model.checkpoint import save_checkpoint
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet


def test_small_study_runs_every_variant_and_resumes(tmp_path):
    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    cfg = StudyConfig(checkpoint=str(ckpt), presets=["occlusion"], corruption=[0.3], seeds=[2000], frames=8,
                      size=[128, 80], adaptation={"every_n_frames": 4, "window_frames": 4, "holdout_frames": 1,
                                                  "steps": 1},
                      tracking={"min_visible_fraction": 0.0, "window_size": 100})
    out = tmp_path / "study"
    results = run_study(cfg, out)
    assert [r["variant"] for r in results] == list(DEFAULT_VARIANTS)
    for r in results:
        assert r["epe"] is not None and r["epe"] > 0
        assert (r["rounds"] == 0) == (r["variant"] == "no adaptation")
        assert r["accepted"] + r["rolled_back"] == r["rounds"] == len(r["history"])
    summary = (out / "study.md").read_text()
    assert all(v in summary for v in DEFAULT_VARIANTS) and (out / "study.png").stat().st_size > 1000
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(DEFAULT_VARIANTS) and json.loads(lines[0])["preset"] == "occlusion"
    run_study(cfg, out)  # finished cells are not run again
    assert len((out / "results.jsonl").read_text().splitlines()) == len(DEFAULT_VARIANTS)


def test_real_bags_become_cells_scored_where_there_is_ground_truth(tmp_path):
    """``real_bags``: a real RGB-D bag is a row of the study (seed 0, first ``frames`` frames), scored with its
    ground truth; skipped where the real data is not laid out."""
    import pytest

    from st4rtrack_ros.evaluation.real_benchmark import REAL_DATA_ENV, default_real_dir

    bag = default_real_dir() / "7scenes_redkitchen_dev"
    if not (bag / "metadata.yaml").exists():
        pytest.skip(f"real RGB-D bag not found at {bag} (set ${REAL_DATA_ENV} or lay shared/ beside the repo)")
    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    cfg = StudyConfig(checkpoint=str(ckpt), presets=[], real_bags=["7scenes_redkitchen_dev"], corruption=[0.0],
                      frames=6, variants={"no adaptation": None, "vanilla": DEFAULT_VARIANTS["St4RTrack (vanilla)"]},
                      adaptation={"every_n_frames": 3, "window_frames": 4, "holdout_frames": 1, "steps": 1},
                      tracking={"min_visible_fraction": 0.0, "window_size": 100})
    assert cfg.sources == ["7scenes_redkitchen_dev"] and [c[4] for c in cfg.cells()] == [bag, bag]
    results = run_study(cfg, tmp_path / "out")
    assert [(r["preset"], r["seed"], r["variant"]) for r in results] == [
        ("7scenes_redkitchen_dev", 0, "no adaptation"), ("7scenes_redkitchen_dev", 0, "vanilla")]
    assert all(r["epe"] is not None and r["abs_rel"] is not None for r in results)  # its ground truth scores it
    assert results[1]["rounds"] >= 1
    assert "7scenes_redkitchen_dev" in (tmp_path / "out" / "study.md").read_text()
