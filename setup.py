"""Build script for st4rtrack_ros: an ament_python package on a ROS 2 install, a plain pip package elsewhere."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "st4rtrack_ros"


def console_scripts() -> list[str]:
    """One command per module of st4rtrack_ros/cli/: cli/real_bench.py is ``st4rtrack-real-bench``, its ``main``
    (CMakeLists.txt makes the same list for ros2 run)."""
    cli = Path(__file__).resolve().parent / PACKAGE / "cli"
    return [f"st4rtrack-{p.stem.replace('_', '-')} = {PACKAGE}.cli.{p.stem}:main"
            for p in sorted(cli.glob("*.py")) if not p.stem.startswith("_")]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.md", "weights/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        # ros2 run/launch find executables in lib/<package>/ (console scripts land in bin/).
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="st4rtrack_ros maintainers",
    maintainer_email="maintainers@st4rtrack-ros.org",
    description="Online 4D perception (St4RTrack+) from one RGB camera for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": console_scripts(),
    },
)
