"""Build script for st4rtrack_ros: an ament_python package on a ROS 2 install, a plain pip package elsewhere."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "st4rtrack_ros"

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
        "console_scripts": [
            "st4rtrack-synth = st4rtrack_ros.data.synth_cli:main",
            "st4rtrack-play = st4rtrack_ros.ros.play:main",
            "st4rtrack-eval = st4rtrack_ros.cli:eval_main",
            "st4rtrack-adapt = st4rtrack_ros.adaptation.domain_cli:main",
            "st4rtrack-study = st4rtrack_ros.evaluation.study:main",
            "st4rtrack-train = st4rtrack_ros.training.cli:main",
            "st4rtrack-node = st4rtrack_ros.ros.node:main",
            "st4rtrack-real-bench = st4rtrack_ros.evaluation.real_benchmark:main",
        ],
    },
)
