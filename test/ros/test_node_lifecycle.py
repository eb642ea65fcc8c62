"""The node's lifecycle with the real (tiny) network, in-process: configure with a bad checkpoint fails cleanly and
leaves the node up; after fixing the parameter it configures; deactivate stops processing and keeps the world (and
its track ids); cleanup frees the model; structural parameters change only while unconfigured."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing")
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")

from rclpy.parameter import Parameter  # noqa: E402
from ros_test_helpers import shut_down_after, wait_until  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from st4rtrack_ros.data.sequence import make_sequence  # noqa: E402
from st4rtrack_ros.model.checkpoint import save_checkpoint  # noqa: E402
from st4rtrack_ros.model.config import preset  # noqa: E402
from st4rtrack_ros.model.network import St4RTrackNet  # noqa: E402
from st4rtrack_ros.ros.conversions import stamp_from_ns  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for  # noqa: E402
from st4rtrack_ros.ros.node import FAILURE, SUCCESS, TrackerNode  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> bool:
    return wait_until(cond, timeout)


@pytest.fixture()
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackerNode]:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(os.getpid() + 67))
    params = {"model.checkpoint": str(tmp_path / "missing.safetensors"), "model.device": "cpu",
              "tracking.num_queries": 32, "tracking.window_size": 50, "tracking.min_visible_fraction": 0.0,
              "ros.autostart": False}
    n = TrackerNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    with shut_down_after(n, ctx):
        yield n


def _images(n: int) -> list[Image]:
    out = []
    for f in make_sequence("easy", n, seed=3, width=128, height=96, n_tracks=8, n_object_tracks=2).frames():
        m = Image(height=96, width=128, encoding="rgb8", step=128 * 3, data=f.rgb.tobytes())
        m.header.stamp.sec, m.header.stamp.nanosec = stamp_from_ns(f.stamp_ns)
        out.append(m)
    return out


def _state(n: TrackerNode) -> str:
    return n._state_machine.current_state[1]


def test_bad_checkpoint_fails_configure_then_a_good_one_configures(node: TrackerNode, tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    assert _state(node) == "unconfigured" and node.tracker is None
    assert node.trigger_configure() == FAILURE
    assert _state(node) == "unconfigured" and node.tracker is None and node.outputs is None
    assert "configure failed" in capfd.readouterr().err
    import torch

    torch.manual_seed(0)
    good = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    assert node.set_parameters([Parameter("model.checkpoint", value=str(good))])[0].successful  # unconfigured: ok
    assert node.trigger_configure() == SUCCESS and _state(node) == "inactive" and node.tracker is not None
    refused = node.set_parameters([Parameter("model.checkpoint", value="/elsewhere.pth")])[0]
    assert not refused.successful and "structural" in refused.reason
    assert node.set_parameters([Parameter("ros.max_cloud_points", value=300)])[0].successful  # run-time one


def test_deactivate_keeps_the_world_and_track_ids_cleanup_frees_the_model(node: TrackerNode, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    good = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    node.set_parameters([Parameter("model.checkpoint", value=str(good))])
    assert node.bring_up() and _state(node) == "active"
    from rclpy.serialization import deserialize_message

    from st4rtrack_ros.msg import Track3DArray

    tracks: list[Any] = []
    real = node.outputs.tracks.publish
    # the node publishes Track3DArray as CDR bytes (cdr.track_array_cdr)
    node.outputs.tracks.publish = lambda m: (tracks.append(
        deserialize_message(m, Track3DArray) if isinstance(m, bytes) else m), real(m))
    images = _images(6)
    for i, m in enumerate(images[:3]):
        node.frame_pipeline.on_image(m)
        assert _wait(lambda i=i: node.counters.processed == i + 1)
    ids_before = {t.id for t in tracks[-1].tracks}
    assert node.trigger_deactivate() == SUCCESS and _state(node) == "inactive"
    assert node.frame_pipeline.subs == [] and node.frame_pipeline.worker is None
    node.frame_pipeline.on_image(images[3])  # nothing processes while inactive (a callback that was already queued)
    time.sleep(0.3)
    assert node.counters.processed == 3
    assert node.trigger_activate() == SUCCESS
    for m in images[4:]:
        node.frame_pipeline.on_image(m)
        assert _wait(lambda n=node.counters.processed: node.counters.processed == n + 1)
    ids_after = {t.id for t in tracks[-1].tracks}
    assert node.tracker.resets == 0 and ids_before and ids_before <= ids_after  # the same world, the same tracks
    assert node.trigger_deactivate() == SUCCESS and node.trigger_cleanup() == SUCCESS
    assert _state(node) == "unconfigured" and node.tracker is None and node.outputs is None
    assert node.set_parameters([Parameter("tracking.window_size", value=4)])[0].successful
    np.testing.assert_equal(node.get_parameter("tracking.window_size").value, 4)
