"""A robot with an aligned depth topic adapts with the RGB-D recipe by default — the measured configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from st4rtrack_ros.adaptation.config import RGBD_RECIPE, AdaptationConfig
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.ros.params import defaults
from st4rtrack_ros.settings import load_section

MEASURED = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "adapt_rgbd.yaml"


def test_the_recipe_is_the_measured_configuration() -> None:
    measured = load_section(MEASURED, "adaptation")
    assert {k: v for k, v in measured.items() if k != "enabled"} == RGBD_RECIPE


def test_with_depth_input_applies_the_recipe_and_keeps_the_rest() -> None:
    cfg = AdaptationConfig(enabled=True, seed=7, loss={"use_sigma2": False, "w_traj": 2.0})
    rgbd = cfg.with_depth_input()
    assert (rgbd.params, rgbd.steps, rgbd.every_n_frames, rgbd.lr) == ("track_head", 10, 8, 1e-4)
    assert rgbd.enabled and rgbd.seed == 7
    loss = rgbd.loss_config()
    assert loss.depth_on_track_anchor and loss.w_traj == 0.0 and loss.w_align == 0.0 and not loss.use_sigma2
    off = AdaptationConfig(rgbd_recipe=False)
    assert off.with_depth_input() is off


@pytest.mark.parametrize(("depth_topic", "recipe", "expect"), [
    ("/camera/aligned_depth_to_color/image_raw", True, "track_head"),
    ("/camera/aligned_depth_to_color/image_raw", False, "heads"),
    ("", True, "heads"),
])
def test_the_node_parameters_choose_it(depth_topic: str, recipe: bool, expect: str) -> None:
    torch.manual_seed(0)
    flat = {**defaults(), "model.device": "cpu", "ros.depth_topic": depth_topic, "adaptation.rgbd_recipe": recipe}
    tracker = build_tracker(TrackerSpec.from_params(flat), net=St4RTrackNet(preset("tiny_128")))
    assert tracker.adaptation is not None
    assert tracker.adaptation.config.params == expect
    assert tracker.adaptation.loss_cfg.depth_on_track_anchor == (expect == "track_head")
    # /diagnostics shows the worker's own description of what it learns from
    assert ("head 1's anchor" in tracker.adaptation.status()["pseudo_labels"]) == (expect == "track_head")
