"""This repository as a ROS user builds it: cloned into a colcon workspace's src/, `colcon build`, then used from the
install space. colcon comes from PyPI and ROS 2 from the venv's wheels (scripts/setup_env.sh, steps 'ros' and
'colcon'), so this runs without a ROS install. One module-scoped build (about 30 s) serves every check."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from st4rtrack_ros.ros.env import ros_env

REPO = Path(__file__).resolve().parents[2]
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"

if shutil.which("colcon", path=str(Path(sys.prefix) / "bin")) is None:
    pytest.skip("colcon is not installed in this venv (scripts/setup_env.sh step 'colcon')", allow_module_level=True)


def _repo_files() -> list[str]:
    """What a clone holds: tracked files plus new ones git does not ignore (never .venv, out/, generated code)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         check=True, capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def _in_workspace(ws: Path, cmd: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "st4rtrack_ros"
    for rel in _repo_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    env = ros_env(log_dir=ws / "ros_log")
    env.pop("PYTHONPATH", None)
    build = _in_workspace(ws, "colcon build --event-handlers console_direct- --cmake-args -DBUILD_TESTING=OFF",
                          env, timeout=600)
    assert build.returncode == 0, f"colcon build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return ws, env


def test_colcon_finds_the_package_with_its_messages(workspace: tuple[Path, dict[str, str]]) -> None:
    """colcon (like rosdep and catkin_pkg) stops at the first package.xml: the root package must hold the messages."""
    ws, env = workspace
    listed = _in_workspace(ws, "colcon list", env, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [line.split("\t") for line in listed.stdout.splitlines()] == \
        [["st4rtrack_ros", "src/st4rtrack_ros", "(ros.ament_cmake)"]], listed.stdout


def test_install_space_layout(workspace: tuple[Path, dict[str, str]]) -> None:
    ws, _ = workspace
    inst = ws / "install" / "st4rtrack_ros"
    share, index = inst / "share" / "st4rtrack_ros", inst / "share" / "ament_index" / "resource_index"
    for rel in ("launch/tracker.launch.py", "config/tracker.yaml", "rviz/tracker.rviz", "package.xml",
                "msg/Track3D.msg", "msg/Track3DArray.msg", "msg/TrackerStatus.msg"):
        assert (share / rel).is_file(), f"missing share/st4rtrack_ros/{rel}"
    assert (index / "packages" / "st4rtrack_ros").is_file(), "no ament index entry"
    interfaces = (index / "rosidl_interfaces" / "st4rtrack_ros").read_text()
    assert "msg/Track3DArray.msg" in interfaces and "msg/TrackerStatus.msg" in interfaces
    # one executable per command module (cli/real_bench.py → st4rtrack-real-bench), as setup.py's console scripts
    commands = sorted(p.stem for p in (REPO / "st4rtrack_ros" / "cli").glob("*.py") if not p.stem.startswith("_"))
    assert {"node", "play", "eval", "synth"} <= set(commands)
    for exe in (f"st4rtrack-{c.replace('_', '-')}" for c in commands):
        path = inst / "lib" / "st4rtrack_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"lib/st4rtrack_ros/{exe} is not an executable"
    assert "from st4rtrack_ros.cli.node import main" in (inst / "lib" / "st4rtrack_ros" / "st4rtrack-node").read_text()
    pkg = inst / "lib" / PY / "site-packages" / "st4rtrack_ros"
    assert (pkg / "weights" / "default.safetensors").is_file(), "the embedded default model was not installed"
    assert "rosidl" not in (pkg / "__init__.py").read_text(), "rosidl's empty __init__.py replaced the package's"


def test_installed_package_and_messages_import_from_the_install(workspace: tuple[Path, dict[str, str]]) -> None:
    """After `source install/setup.bash`, Python takes st4rtrack_ros (node and messages) from the install space."""
    ws, env = workspace
    probe = ("import st4rtrack_ros, st4rtrack_ros.ros.node, st4rtrack_ros.ros.publishing as n; "
             "from st4rtrack_ros.msg import Track3DArray, "
             "TrackerStatus; print(st4rtrack_ros.__file__); print(Track3DArray.__module__); "
             "print(n.Track3DArray is Track3DArray)")
    res = _in_workspace(ws, f"source install/setup.bash && python -c '{probe}'", env, timeout=120)
    assert res.returncode == 0, res.stderr
    file, module, same = res.stdout.split()
    assert file.startswith(str(ws / "install")), f"st4rtrack_ros came from {file}, not the install space"
    assert module == "st4rtrack_ros.msg._track3_d_array" and same == "True"


def test_installed_node_starts_and_reports_a_bad_checkpoint(workspace: tuple[Path, dict[str, str]]) -> None:
    """`ros2 run st4rtrack_ros st4rtrack-node` (the file it runs) starts from the install; a bad checkpoint fails the
    lifecycle configure with a clear reason, the node stays up, and SIGINT stops it with rc 0."""
    ws, env = workspace
    exe = ws / "install" / "st4rtrack_ros" / "lib" / "st4rtrack_ros" / "st4rtrack-node"
    log = ws / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "-c", f"source install/setup.bash && exec {exe} --ros-args "
                                 "-p model.checkpoint:=/nonexistent.pth"], cwd=ws, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 120
            while proc.poll() is None and "not active" not in log.read_text() and time.monotonic() < end:
                time.sleep(0.2)
            assert proc.poll() is None, log.read_text()
        finally:
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(30)
    text = log.read_text()
    assert "configure failed: checkpoint not found: /nonexistent.pth" in text and "Traceback" not in text, text
    assert rc == 0, text
