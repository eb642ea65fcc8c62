"""The node's parameter schema: names and defaults come from config/tracker.yaml, descriptions/ranges from here.

Kept ROS-free (plain dicts and tuples) so the schema is unit-tested without rclpy; node_params.py turns a
:class:`ParamSpec` into an rclpy ``ParameterDescriptor``. Every key in the parameters file is declared; a key this
table does not know (a section added later) is declared read-only with a pointer to the file, so a new config key
never crashes the node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from st4rtrack_ros.model.network import PARAM_SETS
from st4rtrack_ros.model.streaming import CPU_MODES
from st4rtrack_ros.settings import DEFAULT_CONFIG, load_params

PACKAGE = "st4rtrack_ros"


@dataclass(frozen=True)
class ParamSpec:
    """Description, range and mutability of one parameter."""

    description: str
    read_only: bool = True  # structural: changeable only while the node is unconfigured (effective at configure)
    min: float | None = None  # inclusive
    max: float | None = None
    choices: tuple[str, ...] | None = None


_F = 1e9  # "no upper bound" for ranges

SPECS: dict[str, ParamSpec] = {
    "model.checkpoint": ParamSpec("model weights (.safetensors / official .pth / HF folder); empty = embedded default"),
    "model.device": ParamSpec("torch device: cpu, cuda, cuda:N; empty = cuda when available"),
    "model.fit": ParamSpec("camera image → model size", choices=("crop", "pad")),
    "model.cpu_mode": ParamSpec("CPU precision/layout mode of the engine ('' = fp32; ignored on CUDA)",
                                choices=("", *CPU_MODES)),
    "model.cpu_threads": ParamSpec("torch intra-op threads on a CPU (process-wide); 0 = torch's default, one per core",
                                   min=0, max=1024),
    "evaluation.max_frames": ParamSpec("frames st4rtrack-eval scores (unused by the node)", min=0, max=_F),
    "tracking.window_size": ParamSpec("frames per anchor before re-anchoring", min=2, max=100000),
    "tracking.min_visible_fraction": ParamSpec("re-anchor when fewer tracks are visible", min=0.0, max=1.0),
    "tracking.num_queries": ParamSpec("tracked points per window", min=1, max=100000),
    "tracking.query_mode": ParamSpec("how new query pixels are chosen", choices=("grid", "corners")),
    "tracking.max_unseen": ParamSpec("a track invisible this many frames in a row ends", min=1, max=_F),
    "tracking.history_len": ParamSpec("positions kept per track", min=1, max=10000),
    "tracking.match_rel_dist": ParamSpec("track hand-over distance across anchors (× median depth)", min=0.0, max=10.0),
    "tracking.dynamic_rel": ParamSpec("motion that makes a track dynamic (× median depth)", min=0.0, max=10.0),
    "tracking.occlusion_tau": ParamSpec("relative depth tolerance of the visibility test", min=0.0, max=10.0),
    "tracking.cloud_quantile": ParamSpec("confidence quantile a reconstruction pixel must exceed", min=0.0, max=1.0),
    "tracking.cloud_max_points": ParamSpec("points per frame cloud kept by the tracker", min=1, max=10_000_000),
    "tracking.map_every": ParamSpec("frames between map updates (0 = no map)", min=0, max=100000),
    "tracking.map_voxel": ParamSpec("map voxel size (world units)", min=1e-6, max=100.0),
    "tracking.map_max_points": ParamSpec("map point budget", min=1, max=100_000_000),
    "tracking.map_radius": ParamSpec("map kept within this radius of the camera (world units)", min=0.0, max=_F),
    "tracking.use_depth_scale": ParamSpec("metric world from the first aligned depth image"),
    "tracking.metric_scale": ParamSpec("> 0: world units per model unit", min=0.0, max=_F),
    "tracking.chain_points": ParamSpec("pixels of the Sim(3) between windows", min=3, max=10_000_000),
    "adaptation.enabled": ParamSpec("background test-time adaptation on/off", read_only=False),
    "adaptation.every_n_frames": ParamSpec("frames between adaptation snapshots", min=1, max=_F),
    "adaptation.window_frames": ParamSpec("frames per adaptation snapshot (anchor first)", min=3, max=256),
    "adaptation.holdout_frames": ParamSpec("snapshot frames held out to validate a round", min=1, max=254),
    "adaptation.steps": ParamSpec("optimiser steps per round", min=1, max=100000),
    "adaptation.lr": ParamSpec("adaptation learning rate", min=1e-12, max=1.0),
    "adaptation.params": ParamSpec("trainable subset", choices=PARAM_SETS),
    "adaptation.min_improvement": ParamSpec("held-out loss drop needed to accept a round", min=0.0, max=1.0),
    "adaptation.max_round_s": ParamSpec("wall-time budget per round (s)", min=0.1, max=_F),
    "adaptation.duty_cycle": ParamSpec("fraction of wall time a round computes", min=0.01, max=1.0),
    "adaptation.max_consecutive_failures": ParamSpec("failed rounds before the initial weights return", min=1,
                                                     max=_F),
    "adaptation.grad_clip": ParamSpec("gradient norm clip", min=0.0, max=_F),
    "adaptation.max_drift": ParamSpec("trust region around the base weights (× each tensor's norm); 0 = none",
                                      min=0.0, max=_F),
    "adaptation.seed": ParamSpec("seed of the hold-out split", min=0, max=2**31 - 1),
    "adaptation.synchronous": ParamSpec("rounds inside tracker.step (offline evaluation only)"),
    "adaptation.save_path": ParamSpec("file for adapted weights (atomic writes); empty = not kept"),
    "adaptation.save_every_accepted": ParamSpec("save after this many accepted rounds", min=1, max=_F),
    "adaptation.resume": ParamSpec("load save_path at start (refused if made for another base model)"),
    "adaptation.track_model": ParamSpec("local TorchScript point tracker for pseudo-labels; empty = KLT"),
    "adaptation.depth_model": ParamSpec("local TorchScript depth model for pseudo-labels; empty = none"),
    "adaptation.rgbd_recipe": ParamSpec("with ros.depth_topic, rounds run the RGB-D recipe (depth supervises head "
                                        "1's anchor pointmap, head 1 trains, no 2D-track terms)"),
    "adaptation.loss.use_occlusion_mask": ParamSpec("St4RTrack+ occlusion mask in the adaptation loss"),
    "adaptation.loss.use_sigma2": ParamSpec("St4RTrack+ σ² weighting in the adaptation loss"),
    "adaptation.loss.sigma2_detach": ParamSpec("σ² as fixed per-point weights (no gradient to the confidences)"),
    "adaptation.loss.w_traj": ParamSpec("weight of the 2D reprojection term", min=0.0, max=1e3),
    "adaptation.loss.w_depth": ParamSpec("weight of the depth-consistency term (needs depth_topic)", min=0.0, max=1e3),
    "adaptation.loss.w_align": ParamSpec("weight of the 3D track/reconstruction consistency term", min=0.0, max=1e3),
    "adaptation.loss.depth_on_track_anchor": ParamSpec("the depth label also supervises head 1's anchor pointmap"),
    "adaptation.loss.depth_on_track_pairs": ParamSpec("the anchor's depth label also supervises head 1's z of every "
                                                      "pair (static-world prior)"),
    "adaptation.loss.w_motion": ParamSpec("weight of the term keeping head 1's motion between pairs as the base "
                                          "weights predict it (0 = off)", min=0.0, max=1e3),
    "ros.image_topic": ParamSpec("input camera topic (sensor_msgs/Image)"),
    "ros.compressed": ParamSpec("subscribe sensor_msgs/CompressedImage on <image_topic>/compressed instead"),
    "ros.camera_info_topic": ParamSpec("sensor_msgs/CameraInfo topic; empty = none (K estimated)"),
    "ros.depth_topic": ParamSpec("aligned depth image topic (32FC1 m / 16UC1 mm); empty = none"),
    "ros.input_reliability": ParamSpec("input QoS reliability", choices=("best_effort", "reliable")),
    "ros.input_depth": ParamSpec("input QoS queue depth", min=1, max=1000),
    "ros.max_image_pixels": ParamSpec("images (and depth) with more pixels are refused and counted; 0 = no limit",
                                      read_only=False, min=0, max=_F),
    "ros.max_future_stamp_s": ParamSpec("images stamped this far ahead of the node clock are refused (s); 0 = off",
                                        read_only=False, min=0.0, max=_F),
    "ros.world_frame": ParamSpec("world frame id (REP 103 axes: x forward, y left, z up at the first camera)"),
    "ros.camera_frame": ParamSpec("the node's own camera optical frame id (child of world_frame in /tf)"),
    "ros.frame_prefix": ParamSpec("prepended to world_frame and camera_frame (e.g. 'robot1/')"),
    "ros.publish_tf": ParamSpec("publish world → camera_frame on /tf (where tf2_msgs is installed)"),
    "ros.max_cloud_points": ParamSpec("cap of ~/points", read_only=False, min=1, max=10_000_000),
    "ros.max_map_points": ParamSpec("cap of ~/map", read_only=False, min=1, max=100_000_000),
    "ros.map_period_s": ParamSpec("~/map at most this often (s)", read_only=False, min=0.0, max=3600.0),
    "ros.max_marker_tracks": ParamSpec("tracks drawn in ~/track_markers", read_only=False, min=0, max=100000),
    "ros.marker_history": ParamSpec("trail length per track marker", read_only=False, min=1, max=10000),
    "ros.marker_color": ParamSpec("track marker colours", read_only=False, choices=("id", "state")),
    "ros.max_path_length": ParamSpec("poses kept in ~/path", read_only=False, min=1, max=1_000_000),
    "ros.diagnostics_period_s": ParamSpec("/diagnostics period (s)", min=0.05, max=3600.0),
    "ros.autostart": ParamSpec("configure and activate at start (false: wait for lifecycle transitions)"),
    "ros.fixed_frame": ParamSpec("the robot's fixed frame (e.g. odom): publish it → world_frame on /tf_static at "
                                 "each world's first frame; empty = detached world"),
    "ros.robot_camera_frame": ParamSpec("the robot's camera frame looked up in /tf (optical axes); empty = the "
                                        "image's header.frame_id"),
    "ros.tf_timeout_s": ParamSpec("how long after a world's first frame its camera pose is looked for (s)",
                                  min=0.0, max=3600.0),
    "ros.sync_slop_s": ParamSpec("depth / CameraInfo match an image whose stamp is this close (s)", min=0.0,
                                 max=10.0),
    "ros.sync_max_wait_s": ParamSpec("how long the tracker waits for a late depth image (s)", min=0.0, max=10.0),
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections → dotted names, as ROS parameters files map them."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = v
    return out


def defaults_file() -> Path:
    """config/tracker.yaml: the source checkout's, else the installed share/st4rtrack_ros/config/ one."""
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        p = Path(prefix) / "share" / PACKAGE / "config" / "tracker.yaml"
        if prefix and p.is_file():
            return p
    raise FileNotFoundError(f"config/tracker.yaml not found (looked at {DEFAULT_CONFIG} and AMENT_PREFIX_PATH)")


def defaults() -> dict[str, Any]:
    """Every parameter (dotted name) with its default from the parameters file."""
    return flatten(load_params(defaults_file()))


def spec_for(name: str) -> ParamSpec:
    """The spec of ``name``; unknown names are read-only with a pointer to the file."""
    return SPECS.get(name, ParamSpec("see config/tracker.yaml"))


def validate(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` is not acceptable for ``name`` (None: fine). Type must match the default's; ranges/choices."""
    spec = spec_for(name)
    if isinstance(default, bool) != isinstance(value, bool):
        return f"{name} must be a bool"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name} must be a number"
        if isinstance(default, int) and not isinstance(value, int):
            return f"{name} must be an integer"
        if spec.min is not None and value < spec.min:
            return f"{name} must be >= {spec.min:g}, got {value}"
        if spec.max is not None and value > spec.max:
            return f"{name} must be <= {spec.max:g}, got {value}"
    if isinstance(default, str):
        if not isinstance(value, str):
            return f"{name} must be a string"
        if spec.choices is not None and value not in spec.choices:
            return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    return None


def parse_input_qos(reliability: str, depth: int) -> tuple[str, int]:
    """Validated (reliability, depth) for the input subscriptions."""
    if reliability not in ("best_effort", "reliable"):
        raise ValueError(f"ros.input_reliability must be best_effort or reliable, got {reliability!r}")
    if int(depth) < 1:
        raise ValueError(f"ros.input_depth must be >= 1, got {depth}")
    return reliability, int(depth)


def compressed_topic(image_topic: str) -> str:
    """image_transport's naming: <image>/compressed (unchanged when it already ends so)."""
    t = image_topic.rstrip("/")
    return t if t.endswith("/compressed") else f"{t}/compressed"
