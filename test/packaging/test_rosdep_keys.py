"""Every dependency key in package.xml resolves the way `rosdep install --from-paths src --ignore-src` resolves it:
a ROS package released in the distribution, or a top-level key of rosdep's base.yaml / python.yaml. Checked against
the rosdistro snapshot in ../shared/vendor/rosdistro (data only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
DISTROS = ("jazzy", "kilted")  # tested; humble is handled by API fallbacks but not claimed (docs/ros-setup.md)


@pytest.fixture(scope="module")
def rosdistro() -> Path:
    d = Path(os.environ.get("ST4R_ROSDISTRO_DIR", REPO.parent / "shared" / "vendor" / "rosdistro"))
    if not (d / "python.yaml").is_file():
        pytest.fail(f"rosdistro snapshot not found at {d} (set ST4R_ROSDISTRO_DIR)")
    return d


def _released(path: Path) -> set[str]:
    """Package names a distribution file releases (a repository without a package list releases its own name)."""
    repos = yaml.safe_load(path.read_text())["repositories"]
    names: set[str] = set()
    for repo, entry in repos.items():
        release = (entry or {}).get("release")
        if release is not None:
            names.update(release.get("packages") or [repo])
    return names


def _keys(package_xml: Path) -> set[str]:
    pkg = parse_package(str(package_xml))
    pkg.evaluate_conditions(os.environ)
    deps = (pkg.buildtool_depends + pkg.build_depends + pkg.build_export_depends + pkg.buildtool_export_depends
            + pkg.exec_depends + pkg.test_depends + pkg.doc_depends)
    return {d.name for d in deps if d.evaluated_condition is not False}


def test_package_xml_is_valid_format_3() -> None:
    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()
    assert pkg.package_format == 3 and pkg.name == "st4rtrack_ros"
    assert pkg.get_build_type() == "ament_cmake"


@pytest.mark.parametrize("distro", DISTROS)
def test_every_key_resolves(rosdistro: Path, distro: str) -> None:
    rules: set[str] = set()
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((rosdistro / name).read_text()))
    released = _released(rosdistro / f"{distro}-distribution.yaml")
    keys = _keys(REPO / "package.xml")
    assert {"rclpy", "rosidl_default_generators", "python3-pytorch-pip"} <= keys  # the parse found the file's keys
    unresolved = sorted(k for k in keys if k not in released and k not in rules)
    assert not unresolved, f"keys rosdep cannot resolve on {distro}: {unresolved}"


def test_the_check_rejects_an_unknown_key(rosdistro: Path, tmp_path: Path) -> None:
    """The checker itself: a key that is neither released nor a rosdep rule is reported (the old safetensors one)."""
    bad = (REPO / "package.xml").read_text().replace(
        "<exec_depend>rclpy</exec_depend>", "<exec_depend>rclpy</exec_depend>\n  "
        "<exec_depend>python3-safetensors-pip</exec_depend>")
    (tmp_path / "package.xml").write_text(bad)
    rules = set(yaml.safe_load((rosdistro / "python.yaml").read_text()))
    released = _released(rosdistro / "kilted-distribution.yaml")
    assert [k for k in _keys(tmp_path / "package.xml") if k not in released and k not in rules] == \
        ["python3-safetensors-pip"]
