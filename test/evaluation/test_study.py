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
