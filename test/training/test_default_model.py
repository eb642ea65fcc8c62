"""The shipped default model loads and reproduces the validation metric recorded when it was trained."""

from __future__ import annotations

import json

import pytest

from st4rtrack_ros.settings import PACKAGE_ROOT, default_checkpoint
from st4rtrack_ros.training.config import TrainConfig
from st4rtrack_ros.training.loop import validate_checkpoint

RECORDED = {"epe_track": 1.449, "epe_recon": 1.558}  # st4rtrack_ros/weights/README.md (the fp16 file as shipped)


def test_default_model_reproduces_its_validation_metric():
    assert default_checkpoint().is_file(), "the embedded default model is missing"
    cfg = TrainConfig.from_dict(json.loads((PACKAGE_ROOT / "weights" / "default_train_config.json").read_text()))
    metrics = validate_checkpoint(cfg, default_checkpoint())
    for key, value in RECORDED.items():
        assert metrics[key] == pytest.approx(value, rel=0.02), (key, metrics[key])
