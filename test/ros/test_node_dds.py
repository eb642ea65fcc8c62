"""The tracker node over real DDS: `st4rtrack-node` runs as a subprocess (``--ros-args --params-file
config/tracker.yaml -p ...``); this process replays a synthetic bag into it and checks every output.

Each module uses its own ROS_DOMAIN_ID and localhost-only discovery; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing (run scripts/setup_env.sh)"
)
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")

from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from st4rtrack_ros.cli.synth import main as synth_main  # noqa: E402
from st4rtrack_ros.data.messages import cloud_to_structured  # noqa: E402
from st4rtrack_ros.model.checkpoint import save_checkpoint  # noqa: E402
from st4rtrack_ros.model.config import preset  # noqa: E402
from st4rtrack_ros.model.network import St4RTrackNet  # noqa: E402
from st4rtrack_ros.ros.conversions import ns_from_stamp  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for  # noqa: E402
from st4rtrack_ros.ros.live_eval import NodeProcess, OutputRecorder, replay  # noqa: E402
from st4rtrack_ros.ros.markers import DELETEALL  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

WORLD = "st4r_world"
CAP = 500
START_TIMEOUT = 60.0
OUT_TIMEOUT = 40.0


@dataclass
class Live:
    node: NodeProcess
    rec: OutputRecorder
    sent: list[int]
    tmp: Path


def _checkpoint(tmp: Path) -> Path:
    import torch

    torch.manual_seed(0)
    return save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp / "tiny.safetensors")


def _start(tmp: Path, domain: int, bag: Path, extra: dict[str, Any]) -> Iterator[Live]:
    params = {"model.checkpoint": str(_checkpoint(tmp)), "model.device": "cpu", "ros.map_period_s": 0.0,
              "ros.max_cloud_points": CAP, "tracking.num_queries": 64, **extra}
    node = NodeProcess(params, domain_id=domain, log_dir=tmp / "node")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    mp.setenv("ROS_LOG_DIR", str(tmp / "ros_log_test"))
    rec = OutputRecorder(domain, name=f"node_test_{os.getpid()}")
    try:
        if not rec.wait_for(lambda: not node.alive() or "ready:" in node.log(), START_TIMEOUT) or not node.alive():
            pytest.fail(f"node did not start:\n{node.log()[-3000:]}")
        sink = replay(rec, bag, hz=3.0, wait_subscribers_s=20.0)
        status = rec.topic("status")
        rec.wait_for(lambda: rec.inbox.count(status) >= 3 and rec.inbox.count(rec.topic("track_markers")) >= 2,
                     OUT_TIMEOUT)
        yield Live(node, rec, list(sink.order), tmp)
    finally:
        rec.close()
        node.stop()
        mp.undo()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("node_dds")
    bag = tmp / "bag"
    assert synth_main([str(bag), "--frames", "8", "--size", "128x96", "--tracks", "64", "--object-tracks", "16",
                       "-q"]) == 0
    yield from _start(tmp, domain_id_for(), bag, {})


def _msgs(live: Live, out: str) -> list[Any]:
    return [m for _, m in live.rec.inbox.get(live.rec.topic(out))]


def _node_log(live: Live) -> str:
    return live.node.log()[-3000:]


def test_every_output_carries_input_stamps_and_world_frame(live: Live) -> None:
    sent = set(live.sent)
    for out in ("points", "map", "tracks", "track_markers", "camera_pose", "path", "status"):
        msgs = _msgs(live, out)
        assert msgs, f"nothing on {out}:\n{_node_log(live)}"
        for m in msgs:
            hdr = m.markers[0].header if out == "track_markers" else m.header
            assert ns_from_stamp(hdr.stamp) in sent, out
            assert hdr.frame_id == WORLD, out
    assert live.rec.inbox.count("/diagnostics") >= 1
    tracks = _msgs(live, "tracks")[-1]
    ids = [t.id for t in tracks.tracks]
    assert ids and len(set(ids)) == len(ids)
    assert all(np.isfinite([t.position.x, t.position.y, t.position.z]).all() for t in tracks.tracks)


def test_clouds_are_dense_capped_and_read_back_by_pointcloud2(live: Live) -> None:
    import pointcloud2

    for m in _msgs(live, "points"):
        assert m.is_dense and m.height == 1 and 0 < m.width <= CAP
        ours = cloud_to_structured(m)
        xyz = np.stack([ours["x"], ours["y"], ours["z"]], 1)
        assert np.isfinite(xyz).all()
        theirs = pointcloud2.read_points(m, field_names=["x", "y", "z", "rgb", "confidence"])
        for name in ("x", "y", "z", "confidence"):
            assert np.array_equal(np.asarray(theirs[name]), ours[name]), name
    for m in _msgs(live, "map"):
        assert m.is_dense and np.isfinite(cloud_to_structured(m)["x"]).all()


def test_marker_array_starts_with_deleteall_and_ids_are_unique(live: Live) -> None:
    for ma in _msgs(live, "track_markers"):
        assert ma.markers[0].action == DELETEALL
        keys = [(m.ns, m.id) for m in ma.markers[1:]]
        assert len(keys) == len(set(keys))
        assert any(m.ns == "heads" for m in ma.markers[1:])


def _set(live: Live, name: str, value: Any) -> Any:
    cli = live.rec.node.create_client(SetParameters, live.rec.topic("set_parameters"))
    assert cli.wait_for_service(timeout_sec=10.0)
    v = ParameterValue()
    if isinstance(value, bool):
        v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
    else:
        v.type, v.string_value = ParameterType.PARAMETER_STRING, value
    fut = cli.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)]))
    assert live.rec.wait_for(fut.done, 10.0), "set_parameters timed out"
    return fut.result().results[0]


def test_parameter_updates_are_validated(live: Live) -> None:
    bad = _set(live, "ros.max_cloud_points", 0)
    assert not bad.successful and "max_cloud_points" in bad.reason
    assert not _set(live, "ros.marker_color", "rainbow").successful
    assert _set(live, "ros.max_cloud_points", 300).successful
    assert _set(live, "ros.marker_color", "state").successful
    ro = _set(live, "tracking.window_size", 4)
    assert not ro.successful and "structural" in ro.reason and "unconfigured" in ro.reason


def test_adaptation_toggle_and_services(live: Live) -> None:
    assert _msgs(live, "status")[-1].adaptation_available
    assert _set(live, "adaptation.enabled", True).successful
    assert live.rec.wait_for(lambda: "adaptation enabled" in _node_log(live), 15.0)
    assert _set(live, "adaptation.enabled", False).successful
    assert not _set(live, "adaptation.params", "decoders+heads").successful  # structural: read-only

    def call(name: str) -> Trigger.Response:
        cli = live.rec.node.create_client(Trigger, live.rec.topic(name))
        assert cli.wait_for_service(timeout_sec=10.0)
        fut = cli.call_async(Trigger.Request())
        assert live.rec.wait_for(fut.done, 15.0)
        return fut.result()

    reverted = call("revert_adaptation")
    assert reverted.success and "base weights" in reverted.message
    saved = call("save_adaptation")  # no adaptation.save_path configured: a clear refusal
    assert not saved.success and "save_path" in saved.message


def test_reset_service_and_bad_input_keep_the_node_running(live: Live) -> None:
    cli = live.rec.node.create_client(Trigger, live.rec.topic("reset"))
    assert cli.wait_for_service(timeout_sec=10.0)
    fut = cli.call_async(Trigger.Request())
    assert live.rec.wait_for(fut.done, 15.0)
    assert fut.result().success and "reset" in fut.result().message

    pub = live.rec.publisher("/camera/image_raw", Image)
    t = int(time.time()) - 60  # after the bag's stamps, not in the future (far-future stamps are refused)

    def img(enc: str, data: bytes, sec: int) -> Image:
        m = Image()
        m.header.stamp.sec, m.header.frame_id = sec, "camera_optical_frame"
        m.height, m.width, m.encoding, m.step = 96, 128, enc, 128 * 3
        m.data = data
        return m

    pub.publish(img("rgb8", b"\x00" * 1000, t))  # truncated
    time.sleep(0.3)
    pub.publish(img("no_such_encoding", b"\x00" * (96 * 128 * 3), t + 1))
    time.sleep(0.3)
    good = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8).tobytes()
    status = live.rec.topic("status")

    def ok() -> bool:
        last = [m for _, m in live.rec.inbox.get(status)]
        return bool(last) and last[-1].header.stamp.sec == t + 2 and last[-1].frames_rejected >= 2

    end = time.monotonic() + 20.0
    while not ok() and time.monotonic() < end:  # best effort input: resend until the frame is processed
        pub.publish(img("rgb8", good, t + 2))
        live.rec.wait_for(ok, 1.0)
    assert ok(), _node_log(live)
    last = _msgs(live, "status")[-1]
    assert last.resets >= 1 and live.node.alive()
    assert "image rejected (truncated)" in live.node.log()
    assert "image rejected (unsupported_encoding)" in live.node.log()

    def diag() -> dict[str, str]:
        msgs = [m for _, m in live.rec.inbox.get("/diagnostics")]
        return {kv.key: kv.value for kv in msgs[-1].status[0].values} if msgs else {}

    keys = ("image.truncated", "image.unsupported_encoding")
    assert live.rec.wait_for(lambda: all(diag().get(k) == "1" for k in keys), 5.0), diag()


def test_compressed_only_bag_through_eval_live_start_node(tmp_path: Path) -> None:
    """`st4rtrack-eval --live BAG --start-node` on a bag with only compressed images starts the node on
    <image>/compressed itself (it timed out waiting for a subscriber before), and the frames come back."""
    from st4rtrack_ros.cli.eval import live_main
    from st4rtrack_ros.ros.live_eval import node_inputs_for_bag

    bag = tmp_path / "bag_jpeg"
    assert synth_main([str(bag), "--frames", "6", "--size", "128x96", "--transport", "jpeg", "--tracks", "32",
                       "--object-tracks", "8", "-q"]) == 0
    assert node_inputs_for_bag(bag) == {"ros.image_topic": "/camera/image_raw", "ros.compressed": True,
                                        "ros.camera_info_topic": "/camera/camera_info", "ros.depth_topic": ""}
    assert node_inputs_for_bag(bag, depth=True)["ros.depth_topic"] == "/gt/depth"
    out = tmp_path / "live"
    # --depth: the bag's depth images go out as an RGB-D camera's and the node takes its metric scale from them
    rc = live_main([str(bag), "--out", str(out), "--start-node", "--checkpoint", str(_checkpoint(tmp_path)),
                    "--device", "cpu", "--hz", "2", "--depth", "--domain-id", str(domain_id_for(os.getpid() + 37))])
    log = (out / "node" / "node.log").read_text()
    assert rc == 0 and "CompressedImage" in log, log[-3000:]
    metrics = json.loads((out / "live_metrics.json").read_text())
    assert metrics["frames_sent"] == 6 and metrics["frames_out"] >= 5, (metrics, log[-3000:])
    assert metrics["depth"] and metrics["node_status"]["metric_scale"], metrics
