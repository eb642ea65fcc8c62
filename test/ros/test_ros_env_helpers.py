"""The ROS 2 wheel environment: scripts/ros_env.sh and st4rtrack_ros.ros.env agree, rclpy starts with them, and the
set-up step left no build-host paths in the wheels' CMake files."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from st4rtrack_ros.ros.env import DOMAIN_MAX, DOMAIN_MIN, RMW, domain_id_for, ros_env

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None
needs_ros = pytest.mark.skipif(not HAVE_RCLPY, reason="rclpy not installed: run scripts/setup_env.sh (ROS 2 wheels)")
BASE = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LD_LIBRARY_PATH": "/opt/other/lib"}
KEYS = (
    "PATH",
    "VIRTUAL_ENV",
    "AMENT_PREFIX_PATH",
    "CMAKE_PREFIX_PATH",
    "LD_LIBRARY_PATH",
    "RMW_IMPLEMENTATION",
    "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
)


def _sourced_env(times: int = 1) -> dict[str, str]:
    """Environment after sourcing scripts/ros_env.sh ``times`` times in a clean bash."""
    src = "source scripts/ros_env.sh; " * times
    out = subprocess.run(
        ["bash", "-c", f"{src} env -0"],
        cwd=REPO,
        env={**BASE, "ST4R_VENV": str(VENV)},
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_shell_helper_and_python_helper_agree() -> None:
    shell = _sourced_env()
    py = ros_env(BASE, venv=VENV)
    assert {k: shell.get(k) for k in KEYS} == {k: py.get(k) for k in KEYS}
    assert py["AMENT_PREFIX_PATH"] == str(VENV) and py["RMW_IMPLEMENTATION"] == RMW
    ld = py["LD_LIBRARY_PATH"].split(":")
    assert ld[0] == str(VENV / "lib") and ld[-1] == "/opt/other/lib"


def test_shell_helper_is_idempotent() -> None:
    once, twice = _sourced_env(1), _sourced_env(2)
    assert {k: once.get(k) for k in KEYS} == {k: twice.get(k) for k in KEYS}
    assert ros_env(ros_env(BASE, venv=VENV), venv=VENV) == ros_env(BASE, venv=VENV)


def test_isolation_options() -> None:
    env = ros_env(BASE, domain_id=7, localhost_only=True, log_dir="/tmp/x")
    got = (env["ROS_DOMAIN_ID"], env["ROS_AUTOMATIC_DISCOVERY_RANGE"], env["ROS_LOG_DIR"])
    assert got == ("7", "LOCALHOST", "/tmp/x")
    assert "ROS_DOMAIN_ID" not in ros_env(BASE)
    with pytest.raises(ValueError):
        ros_env(BASE, domain_id=300)
    ids = {domain_id_for(s) for s in range(1000)}
    assert min(ids) == DOMAIN_MIN and max(ids) == DOMAIN_MAX
    assert DOMAIN_MIN <= domain_id_for() <= DOMAIN_MAX


@needs_ros
def test_rclpy_initialises_in_a_subprocess_with_the_helper_env(tmp_path: Path) -> None:
    code = (
        "import rclpy; rclpy.init(); n = rclpy.create_node('env_check'); "
        "print(rclpy.get_rmw_implementation_identifier(), n.get_name()); n.destroy_node(); rclpy.shutdown()"
    )
    env = ros_env(domain_id=domain_id_for(), localhost_only=True, log_dir=tmp_path)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [RMW, "env_check"]


@needs_ros
def test_wheel_cmake_files_carry_no_build_host_paths() -> None:
    share = VENV / "share"
    stale = [p for p in share.rglob("*.cmake") if "/opt/python/cp311-cp311" in p.read_text(errors="replace")]
    assert not stale, f"scripts/setup_env.sh did not rewrite {stale[:3]}"
    target = share / "std_msgs" / "cmake" / "export_std_msgs__rosidl_generator_pyExport.cmake"
    if target.exists():  # the file CMake rejected before the rewrite: its include dirs must now exist
        m = re.search(r'INTERFACE_INCLUDE_DIRECTORIES "([^"]*)"', target.read_text())
        assert m is not None
        for d in m.group(1).split(";"):
            assert Path(d).is_dir(), f"{target.name} names a missing include dir {d}"
