"""The node under device faults, in this process (no DDS traffic needed): an out-of-memory frame is dropped and
counted (``frames_oom_dropped`` in /diagnostics), the next frame is published, and adaptation that switched itself
off for lack of memory says why in /diagnostics. The real tiny network; the OOM is injected on the CPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing (run scripts/setup_env.sh)"
)
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")

from builtin_interfaces.msg import Time  # noqa: E402
from ros_test_helpers import shut_down_after  # noqa: E402

from st4rtrack_ros.adaptation.config import AdaptationConfig  # noqa: E402
from st4rtrack_ros.adaptation.worker import AdaptationWorker  # noqa: E402
from st4rtrack_ros.data.sequence import make_sequence  # noqa: E402
from st4rtrack_ros.model.config import preset  # noqa: E402
from st4rtrack_ros.model.network import St4RTrackNet  # noqa: E402
from st4rtrack_ros.model.preprocess import to_tensor  # noqa: E402
from st4rtrack_ros.model.streaming import StreamingEngine  # noqa: E402
from st4rtrack_ros.ros.conversions import stamp_from_ns  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for  # noqa: E402
from st4rtrack_ros.ros.frame_pipeline import Frame as _Frame  # noqa: E402
from st4rtrack_ros.ros.node import TrackerNode  # noqa: E402
from st4rtrack_ros.tracking.adaptation_port import WindowSnapshot  # noqa: E402
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")


@pytest.fixture()
def node(monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackerNode]:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id_for(os.getpid() + 53))
    torch.manual_seed(0)
    net = St4RTrackNet(preset("tiny_128")).eval()
    worker = AdaptationWorker(net, AdaptationConfig(enabled=False))
    tracker = OnlineTracker(StreamingEngine(net), TrackerConfig(window_size=50, min_visible_fraction=0.0,
                                                                num_queries=32, map_every=0), worker)
    n = TrackerNode(tracker=tracker, context=ctx)
    assert n.bring_up()
    with shut_down_after(n, ctx):
        yield n


def _frames(n: int) -> list[_Frame]:
    seq = make_sequence("easy", n, seed=2, width=128, height=96, n_tracks=8, n_object_tracks=2)
    out = []
    for f in seq.frames():
        sec, nsec = stamp_from_ns(f.stamp_ns)
        out.append(_Frame(Time(sec=sec, nanosec=nsec), f.stamp_ns, f.rgb, time.monotonic()))
    return out


def _diagnostics(node: TrackerNode, monkeypatch: pytest.MonkeyPatch, task: str = "tracker") -> dict[str, str]:
    sent: list[Any] = []
    monkeypatch.setattr(node.pub_diag, "publish", sent.append)
    node._publish_diagnostics()
    status = {st.name: st for st in sent[-1].status}[f"st4rtrack: {task}"]
    return {"message": status.message, **{kv.key: kv.value for kv in status.values}}


def test_an_oom_frame_is_dropped_counted_and_the_next_one_published(node: TrackerNode,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    engine = node.tracker.engine
    real, calls = engine.step, [0]

    def step(x: torch.Tensor, recon: bool = True) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (injected)")
        return real(x, recon=recon)

    monkeypatch.setattr(engine, "step", step)
    published: list[Any] = []
    monkeypatch.setattr(node.pub_status, "publish", published.append)
    for f in _frames(5):
        node.frame_pipeline.process(f)
    c = node.counters
    assert c.oom_dropped == 1 and c.processed == 4 and c.rejected == 0
    assert len(published) == 4 and published[-1].resets == 0  # same world before and after the dropped frame
    values = _diagnostics(node, monkeypatch)
    assert values["frames_oom_dropped"] == "1" and values["frames_processed"] == "4"


def test_adaptation_switched_off_by_oom_is_reported_in_diagnostics(node: TrackerNode,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ad = node.tracker.adaptation
    ad.set_enabled(True)

    def oom(*_a: Any) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(ad, "_loss", oom)
    frames = _frames(7)
    rgb = np.stack([f.rgb for f in frames[:6]])
    snap = WindowSnapshot(images=torch.stack([to_tensor(r) for r in rgb]), rgb=rgb, k=torch.eye(3))
    ad.run_round(snap)
    ad.run_round(snap)
    monkeypatch.setattr(node.pub_status, "publish", lambda _m: None)
    node.frame_pipeline.process(frames[6])  # inference goes on; the status it publishes carries the worker's state
    values = _diagnostics(node, monkeypatch, "adaptation")
    assert values["enabled"] == "False" and values["oom"] == "2"
    assert "out of memory" in values["disabled_reason"] and "out of memory" in values["message"]
    assert node.counters.processed == 1


def test_diagnostics_report_where_a_frame_s_time_goes(node: TrackerNode, monkeypatch: pytest.MonkeyPatch) -> None:
    """/diagnostics carries per-stage p50 / p95 (ms) of the frame path: the tracker's own stages and each output."""
    assert _diagnostics(node, monkeypatch, "timing")["message"] == "no frames yet"
    monkeypatch.setattr(node.pub_status, "publish", lambda _m: None)
    for f in _frames(3):
        node.frame_pipeline.process(f)
    values = _diagnostics(node, monkeypatch, "timing")
    for stage in ("step", "step.network", "sync", "anchor", "publish.pose", "publish.tracks", "publish.status",
                  "latency"):
        p50, p95 = (float(v) for v in values[f"{stage}_ms"].split(" / "))
        assert 0.0 <= p50 <= p95, stage
    assert float(values["step_ms"].split(" / ")[0]) >= float(values["step.network_ms"].split(" / ")[0])
