"""Shutdown: `st4rtrack-node` (a subprocess, background adaptation on and a round in flight) stops on SIGTERM and on
SIGINT within 2 s with rc 0, the adaptation worker stopped cleanly and no non-daemon thread left; a second start
(resuming the adapted weights the first one saved) works, and the first left no Fast DDS shared memory or partial
files behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip(
    "rclpy", reason="rclpy cannot be imported: the ROS 2 wheels are missing (run scripts/setup_env.sh)"
)
pytest.importorskip("st4rtrack_ros.msg", reason="the messages are not built (scripts/setup_env.sh step 'messages')")

from ros_test_helpers import rgb8_image  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from st4rtrack_ros.data.sequence import make_sequence  # noqa: E402
from st4rtrack_ros.model.checkpoint import save_checkpoint  # noqa: E402
from st4rtrack_ros.model.config import preset  # noqa: E402
from st4rtrack_ros.model.network import St4RTrackNet  # noqa: E402
from st4rtrack_ros.ros.conversions import ns_from_stamp  # noqa: E402
from st4rtrack_ros.ros.env import domain_id_for  # noqa: E402
from st4rtrack_ros.ros.live_eval import NodeProcess, OutputRecorder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

STOP_S = 2.0


def _feed(rec: OutputRecorder, frames: list[Any], t0_ns: int, timeout: float = 20.0) -> Any:
    """Publish frames one by one (resending a lost one) until each has its ~/status; returns the last status."""
    pub = rec.publisher("/camera/image_raw", Image)
    status = rec.topic("status")
    last = None
    for i, f in enumerate(frames):
        stamp = t0_ns + i * 100_000_000
        end = time.monotonic() + timeout

        def seen(s: int = stamp) -> bool:
            return any(ns_from_stamp(m.header.stamp) == s for _, m in rec.inbox.get(status)[-5:])

        while not seen() and time.monotonic() < end:
            pub.publish(rgb8_image(f.rgb, stamp))
            rec.wait_for(seen, 1.0)
        assert seen(), f"no status for frame {i}"
        last = rec.inbox.get(status)[-1][1]
    return last


def _owned_shm(pid: int) -> set[str]:
    """The Fast DDS shared-memory segment the process owns (and its ``_el`` lock file, which it holds open). Port
    segments (``fastdds_port*``) are shared by every participant that uses the port; the last one removes them."""
    fd_dir = Path(f"/proc/{pid}/fd")
    out = set()
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("/dev/shm/fastdds_") and target.endswith("_el") and "fastdds_port" not in target:
            out |= {target, target[: -len("_el")]}
    return out


def _stop(node: NodeProcess, sig: int) -> tuple[int, float]:
    t = time.monotonic()
    node.proc.send_signal(sig)
    try:
        rc = node.proc.wait(10.0)
    finally:
        node.stop()
    return rc, time.monotonic() - t


def _start(tmp: Path, name: str, domain: int, params: dict[str, Any]) -> NodeProcess:
    node = NodeProcess(params, domain_id=domain, log_dir=tmp / name)
    end = time.monotonic() + 60.0
    while node.alive() and "ready:" not in node.log() and time.monotonic() < end:
        time.sleep(0.05)
    assert node.alive() and "ready:" in node.log(), node.log()[-3000:]
    return node


def test_sigterm_and_sigint_stop_within_2_s_and_a_restart_has_no_leftovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    save = tmp_path / "adapted" / "weights.safetensors"
    params = {"model.checkpoint": str(ckpt), "model.device": "cpu", "tracking.num_queries": 32,
              "tracking.window_size": 50, "tracking.min_visible_fraction": 0.0, "adaptation.enabled": True,
              "adaptation.every_n_frames": 4, "adaptation.window_frames": 4, "adaptation.holdout_frames": 1,
              "adaptation.steps": 500, "adaptation.duty_cycle": 0.5, "adaptation.save_path": str(save)}
    frames = list(make_sequence("easy", 10, seed=1, width=128, height=96, n_tracks=8, n_object_tracks=2).frames())
    domain = domain_id_for(os.getpid() + 71)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rec = OutputRecorder(domain, name=f"shutdown_test_{os.getpid()}", outputs=("status",), diagnostics=False)
    try:
        first = _start(tmp_path, "first", domain, params)
        shm = _owned_shm(first.proc.pid)
        assert shm, "the node maps no Fast DDS shared memory (transport changed?)"
        busy, t0_ns = False, 1_700_000_000 * 10**9
        for _ in range(4):  # until a status says a round is running (the first is offered at frame 4)
            busy = _feed(rec, frames, t0_ns).adaptation_busy
            if busy:
                break
            t0_ns += 10**10
        assert busy, "no adaptation round in flight to interrupt"
        cli = rec.node.create_client(Trigger, rec.topic("save_adaptation"))
        assert cli.wait_for_service(timeout_sec=10.0)
        fut = cli.call_async(Trigger.Request())
        assert rec.wait_for(fut.done, 10.0) and fut.result().success, fut.result()

        rc, took = _stop(first, signal.SIGTERM)
        log = first.log_path.read_text()
        with capsys.disabled():
            print(f"\n[shutdown] SIGTERM with a round in flight: rc {rc} after {took:.2f} s")
        assert rc == 0 and took < STOP_S, f"rc {rc} after {took:.2f} s\n{log[-3000:]}"
        assert "adaptation worker stopped cleanly" in log and "non-daemon threads left: none" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert not [p for p in shm if Path(p).exists()], "Fast DDS shared memory left behind"
        assert sorted(p.name for p in save.parent.iterdir()) == [save.name]  # no partial (temporary) files

        second = _start(tmp_path, "second", domain, {**params, "adaptation.resume": True})
        assert "adaptation: resumed weights version" in second.log()
        _feed(rec, frames[:2], 1_700_001_000 * 10**9)  # a fresh stamp range: the restarted node tracks
        rc, took = _stop(second, signal.SIGINT)
        log = second.log_path.read_text()
        with capsys.disabled():
            print(f"[shutdown] restart resumed the saved weights; SIGINT: rc {rc} after {took:.2f} s")
        assert rc == 0 and took < STOP_S, f"rc {rc} after {took:.2f} s\n{log[-3000:]}"
        assert "adaptation worker stopped cleanly" in log and "non-daemon threads left: none" in log, log[-3000:]
    finally:
        rec.close()


_PARENT = """
import sys
import time
from pathlib import Path

from st4rtrack_ros.ros.live_eval import NodeProcess

node = NodeProcess({"model.checkpoint": sys.argv[1], "model.device": "cpu"}, domain_id=int(sys.argv[2]),
                   log_dir=Path(sys.argv[3]))
print(node.proc.pid, flush=True)
time.sleep(600)
"""


def test_a_node_whose_starter_is_killed_stops_cleanly(tmp_path: Path) -> None:
    """SIGKILL to the process that started the node (no stop() runs): the node gets SIGTERM from the kernel and
    stops the clean way, instead of staying on its DDS domain for the next run."""
    import torch

    torch.manual_seed(0)
    ckpt = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "tiny.safetensors")
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(ckpt), str(domain_id_for(os.getpid() + 73)),
                               str(tmp_path / "node")], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    log = tmp_path / "node" / "node.log"
    end = time.monotonic() + 60.0
    while "ready:" not in log.read_text() and time.monotonic() < end:
        time.sleep(0.05)
    assert "ready:" in log.read_text(), log.read_text()[-3000:]
    parent.kill()
    parent.wait(5.0)
    end = time.monotonic() + 10.0
    while Path(f"/proc/{pid}").exists() and time.monotonic() < end:
        time.sleep(0.05)
    gone = not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    if not gone:
        os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert gone, f"the node outlived its starter by 10 s\n{text[-3000:]}"
    assert "non-daemon threads left: none" in text, text[-3000:]
