"""The ROS 2 environment of the pip-wheel install, as a dict for subprocesses (no rclpy import here).

Mirrors scripts/ros_env.sh: tests and tools start nodes as subprocesses and need the same variables a sourced
shell would have (prefix paths, library path, rmw), plus per-run isolation (domain id, localhost-only discovery)
so parallel test runs on one machine never see each other's topics.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: Set by :class:`~st4rtrack_ros.ros.live_eval.NodeProcess`: the pid of the process that started the node, which
#: stops when that process dies (``node._stop_with_parent``).
PARENT_PID_ENV = "ST4R_PARENT_PID"
#: The only rmw implementation the wheels (requirements/ros.txt) install.
RMW = "rmw_fastrtps_cpp"
#: Domain ids this module hands out: 1..101 keeps Fast DDS ports below the Linux ephemeral range for any id.
DOMAIN_MIN, DOMAIN_MAX = 1, 101


def venv_root() -> Path:
    """The venv (= ROS install prefix) of the running interpreter."""
    return Path(sys.prefix)


def _prepend(current: str | None, *dirs: str) -> str:
    """Put ``dirs`` first in a colon list, each once, keeping the rest in order (like the shell helper)."""
    parts = [p for p in (current or "").split(os.pathsep) if p]
    for d in reversed(dirs):
        if d not in parts:
            parts.insert(0, d)
    return os.pathsep.join(parts)


def domain_id_for(seed: int | None = None) -> int:
    """A ROS_DOMAIN_ID in 1..101 derived from ``seed`` (default: this process id), different for parallel runs."""
    seed = os.getpid() if seed is None else seed
    return DOMAIN_MIN + seed % (DOMAIN_MAX - DOMAIN_MIN + 1)


def ros_env(
    base: Mapping[str, str] | None = None,
    *,
    venv: str | Path | None = None,
    domain_id: int | None = None,
    localhost_only: bool = False,
    log_dir: str | Path | None = None,
) -> dict[str, str]:
    """Return ``base`` (default os.environ) plus the variables scripts/ros_env.sh sets, for ``subprocess`` calls.

    ``domain_id`` sets ROS_DOMAIN_ID; ``localhost_only`` limits discovery to this machine
    (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST); ``log_dir`` sets ROS_LOG_DIR so test runs do not write to ~/.ros.
    """
    env = dict(os.environ if base is None else base)
    root = Path(venv) if venv is not None else venv_root()
    root_s = str(root)
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    libs = sorted(str(p) for p in site.glob("ros_*.libs") if p.is_dir()) if site.is_dir() else []
    env["VIRTUAL_ENV"] = root_s
    env["PATH"] = _prepend(env.get("PATH"), str(root / "bin"))
    env["AMENT_PREFIX_PATH"] = _prepend(env.get("AMENT_PREFIX_PATH"), root_s)
    env["CMAKE_PREFIX_PATH"] = _prepend(env.get("CMAKE_PREFIX_PATH"), root_s)
    env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), str(root / "lib"), *libs)
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"  # library path is set: skip the wheels' re-exec at start-up
    env["RMW_IMPLEMENTATION"] = RMW
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {domain_id}")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    if localhost_only:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env.pop("ROS_STATIC_PEERS", None)
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(log_dir)
    return env
