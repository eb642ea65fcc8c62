"""st4rtrack-eval end to end, a bag without ground truth, and the runner's plumbing checked with an oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from st4rtrack_ros.data.bag_io import BenchmarkBagWriter, read_frames, write_sequence
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.evaluation.cli import main as eval_main
from st4rtrack_ros.evaluation.report import compute_metrics
from st4rtrack_ros.evaluation.runner import RunConfig, run_frames
from st4rtrack_ros.geometry.projection import unproject_depth
from st4rtrack_ros.model.checkpoint import save_checkpoint
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import PairOutput, St4RTrackNet
from st4rtrack_ros.model.preprocess import plan_mapping


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "bag"
    write_sequence(make_sequence("easy", 6, seed=3, width=128, height=80, n_tracks=200, n_object_tracks=50), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_eval_cli_writes_complete_metrics_and_plots(bag, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert eval_main([str(bag), "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 6 and metrics["skipped"] == {}
    for alignment in ("median", "per_track", "sim3"):
        s = metrics["tracking"][alignment]
        assert 0 <= s["apd"] <= 100 and s["epe"] > 0 and s["n_points"] > 0
    assert metrics["depth"]["n_frames"] == 6 and metrics["depth"]["abs_rel"] >= 0
    assert metrics["camera"]["n_poses"] == 6 and metrics["camera"]["ate"] >= 0
    assert metrics["runtime"]["n_frames"] == 6 and metrics["runtime"]["p50_ms"] > 0
    for pic in ("trajectory.png", "errors_over_time.png", "reconstruction_tracks.png"):
        assert (out / pic).stat().st_size > 1000
        assert pic in (out / "report.md").read_text()


def test_bag_without_ground_truth_skips_those_metrics(tmp_path, checkpoint):
    path = tmp_path / "plain"
    rng = np.random.default_rng(0)
    k = np.array([[100.0, 0, 63.5], [0, 100.0, 39.5], [0, 0, 1]])
    with BenchmarkBagWriter(path, transport="jpeg") as w:
        for i in range(3):
            w.write_frame(1_000_000_000 + i * 100_000_000, rng.integers(0, 255, (80, 128, 3), np.uint8), k)
    out = tmp_path / "out"
    assert eval_main([str(path), "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["skipped"]) == {"camera", "tracking", "depth"}
    assert metrics["runtime"]["n_frames"] == 3
    assert "## Skipped" in (out / "report.md").read_text()


def test_missing_checkpoint_is_a_clear_error(bag, tmp_path, capsys):
    assert eval_main([str(bag), "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.pth")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


class _Oracle:
    """Stands in for the engine with ground-truth reconstruction pointmaps, to test the runner and metrics
    plumbing (query lookup, rebasing, pose from PnP, depth conversion) independently of any network."""

    def __init__(self, frames, width: int, height: int) -> None:
        self.frames, self.calls = frames, 0
        self.device = torch.device("cpu")
        self.net = type("N", (), {"config": preset("tiny_128").with_image_size(width, height)})()
        self.t_c0_w = np.linalg.inv(frames[0].gt_pose)

    def set_anchor(self, x: torch.Tensor) -> None:
        pass

    def step(self, x: torch.Tensor) -> PairOutput:
        f = self.frames[self.calls]
        self.calls += 1
        mapping = plan_mapping((f.width, f.height), self.net.config.img_size, "crop")
        k = torch.as_tensor(mapping.intrinsics_to_model(f.k))
        cam = unproject_depth(torch.as_tensor(f.gt_depth, dtype=torch.float64)[None], k)[0]
        t = torch.as_tensor(self.t_c0_w @ f.gt_pose)
        world = cam @ t[:3, :3].T + t[:3, 3]
        conf = torch.where(torch.as_tensor(f.gt_depth) > 0, 10.0, 1.0)[None].float()
        pts = world[None].float()
        return PairOutput(pts, conf, pts, conf)


def test_runner_with_ground_truth_pointmaps_scores_perfectly(bag):
    frames = list(read_frames(bag))
    oracle = _Oracle(frames, frames[0].width, frames[0].height)
    run = run_frames(frames, oracle, RunConfig(progress_every=0))  # type: ignore[arg-type]
    metrics = compute_metrics(run)
    assert metrics["pose_success_rate"] == 1.0
    assert metrics["camera"]["ate"] < 1e-3 and metrics["camera"]["rpe_rot"] < 0.05
    assert metrics["depth"]["abs_rel"] < 1e-3 and metrics["depth"]["delta_1_25"] > 99.9
