"""The front door: parameters → a ready OnlineTracker (checkpoint, device, fit, engine options, adaptation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from st4rtrack_ros.model.checkpoint import save_checkpoint
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.ros.params import defaults


def test_from_the_node_parameters_with_a_checkpoint_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    flat = {**defaults(), "model.checkpoint": str(ckpt), "model.device": "cpu", "model.fit": "pad",
            "model.cpu_mode": "fp32+nhwc", "model.cpu_threads": 1, "tracking.window_size": 7, "adaptation.steps": 3}
    threads = torch.get_num_threads()
    try:
        tracker = build_tracker(TrackerSpec.from_params(flat))
        assert torch.get_num_threads() == 1  # model.cpu_threads applied on a CPU (process-wide)
    finally:
        torch.set_num_threads(threads)
    assert TrackerSpec.from_params(defaults()).cpu_threads == 0  # default: torch's own choice, left alone
    assert tracker.config.window_size == 7 and tracker.config.fit == "pad"
    assert tracker.engine.options.channels_last_heads and tracker.engine.options.precision == "fp32"
    assert tracker.adaptation is not None and tracker.adaptation.config.steps == 3
    assert tracker.engine.net.config.img_size == preset("tiny_128").img_size


def test_defaults_and_errors() -> None:
    spec = TrackerSpec(device="cpu")
    assert spec.resolved_checkpoint().name == "default.safetensors"  # the embedded default
    tracker = build_tracker(spec, net=St4RTrackNet(preset("tiny_128")))
    assert tracker.adaptation is None and tracker.engine.options.precision == "fp32"
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: /nowhere\.pth"):
        TrackerSpec(checkpoint="/nowhere.pth").resolved_checkpoint()
    with pytest.raises(ValueError, match="unknown CPU mode"):
        build_tracker(TrackerSpec(device="cpu", cpu_mode="fp8"), net=St4RTrackNet(preset("tiny_128")))


def test_variants_go_through_the_front_door() -> None:
    """Explicit engine options, a shared network and worker, a tracker subclass (or a partial of one)."""
    import functools

    from st4rtrack_ros.adaptation.config import AdaptationConfig
    from st4rtrack_ros.model.streaming import EngineOptions
    from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig

    class Marked(OnlineTracker):
        def __init__(self, engine, config=None, adaptation=None, *, mark: str = "") -> None:
            super().__init__(engine, config, adaptation)
            self.mark = mark

    net = St4RTrackNet(preset("tiny_128"))
    options = EngineOptions(channels_last_heads=True)
    spec = TrackerSpec(device="cpu", fit="pad", tracking=TrackerConfig(window_size=5), engine=options,
                       adaptation=AdaptationConfig(enabled=True, synchronous=True, steps=2))
    first = build_tracker(spec, net=net)
    assert first.engine.options is options and first.config.fit == "pad" and first.config.window_size == 5
    second = build_tracker(spec, net=net, adapter=first.adaptation, tracker_cls=functools.partial(Marked, mark="x"))
    assert isinstance(second, Marked) and second.mark == "x"
    assert second.adaptation is first.adaptation and second.engine.net is first.engine.net is net
    assert second.inference_lock is first.adaptation.lock
