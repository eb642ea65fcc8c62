#!/usr/bin/env python3
"""Where a checkpoint's depth error in camera j comes from: the pose, the cross pair, or single-view depth.

The metric's depth of frame j is head 2 of the pair (anchor, j), a pointmap in the anchor's camera, brought into
camera j by the PnP pose (`geometry.occlusion.recon_depth`, as the tracker does). Per sampled frame this prints the
AbsRel (per-frame median scaling, as the metric) of:
- ``pnp``: that depth, the metric's own (frame 0: identity pose, as the tracker);
- ``gt_rot``: the same pointmap with the true rotation in place of PnP's (what a perfect rotation would give);
- ``self``: head 2 of the pair (j, j), frame j's single-view depth in its own camera (no pose, no cross pair);
- ``constant``: a constant depth map (the depth target's baseline);
and PnP's rotation error in degrees. ``pnp`` ≫ ``self`` means the cross pair (a long gap, little overlap) is what
fails, not the network's depth as such; ``self`` near ``constant`` means single-view depth itself is weak.

Intrinsics and PnP (for real cameras, whose CameraInfo need not match the focal the network's pointmaps imply):
- ``pnp_est_k`` / ``rot_err_est_k_deg``: the same with PnP run with the anchor's own focal (Weiszfeld on head 1 of
  (anchor, anchor), what the tracker uses without CameraInfo) instead of CameraInfo's;
- ``true_rot_deg``: the true rotation since the anchor (a static camera's rotation error);
- ``focal_self_px``: the Weiszfeld focal of head 1 of (j, j), against ``camera_focal_px`` (CameraInfo, model pixels)
  stored per bag with ``anchor_focal_px``.

  .venv/bin/python experiments/depth_error_sources.py st4rtrack_ros/weights/default.safetensors \
      ../shared/data/real/7scenes_redkitchen_dev --json results/real_benchmark/real_depth_error_sources.json

  .venv/bin/python experiments/depth_error_sources.py st4rtrack_ros/weights/default.safetensors \
      out/eval_default/bags/fast_1000_64_256x160 out/eval_default/bags/occlusion_1000_64_256x160 --json out/d.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from st4rtrack_ros.data.bag_io import read_frames
from st4rtrack_ros.evaluation.metrics import depth_frame_scores
from st4rtrack_ros.geometry.intrinsics import intrinsics_from_pointmap
from st4rtrack_ros.geometry.occlusion import recon_depth
from st4rtrack_ros.geometry.pose import estimate_poses, rotation_angle_deg
from st4rtrack_ros.model.checkpoint import load_checkpoint
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import fit_depth, fit_image, plan_mapping, to_tensor

KEYS = ("pnp", "gt_rot", "self", "constant", "rot_err_deg", "pnp_est_k", "rot_err_est_k_deg", "true_rot_deg",
        "focal_self_px")


@torch.no_grad()
def sources(net: St4RTrackNet, bag: Path, frames: int, every: int) -> dict[str, Any]:
    """Per sampled frame of one bag: the AbsRels, rotation errors and focal (keys: KEYS, plus 'frame'), and the
    bag's ``camera_focal_px`` / ``anchor_focal_px``. Needs CameraInfo, ground-truth depth and poses."""
    seq = list(read_frames(bag))[:frames]
    first = seq[0]
    if first.k is None or first.gt_pose is None or first.gt_depth is None:
        raise ValueError(f"{bag}: needs CameraInfo, /gt/depth and /gt/camera_pose")
    mapping = plan_mapping((first.width, first.height), net.config.img_size, "crop")
    k = torch.as_tensor(mapping.intrinsics_to_model(first.k), dtype=torch.float32)
    anchor = to_tensor(fit_image(first.image, mapping))[None]
    k_est = intrinsics_from_pointmap(net(anchor, anchor).track_pts)  # the tracker's K without CameraInfo
    rows: dict[str, Any] = {key: [] for key in ("frame", *KEYS)}
    for fr in seq[::every]:
        img = to_tensor(fit_image(fr.image, mapping))[None]
        gt = fit_depth(fr.gt_depth, mapping)
        pair, own = net(anchor, img), net(img, img)
        rel = torch.as_tensor(np.linalg.inv(first.gt_pose) @ fr.gt_pose, dtype=torch.float32)  # anchor ← camera j
        for suffix, kk in (("", k), ("_est_k", k_est)):
            pose = torch.eye(4)[None] if fr.index == first.index else estimate_poses(
                pair.recon_pts, pair.recon_conf, kk).t_world_cam.float()
            rows[f"pnp{suffix}"].append(depth_frame_scores(recon_depth(pair.recon_pts, pose)[0].numpy(), gt)[0])
            rows[f"rot_err{suffix}_deg"].append(float(rotation_angle_deg(rel[:3, :3], pose[0, :3, :3])))
            if not suffix:
                true_rot = pose.clone()
                true_rot[0, :3, :3] = rel[:3, :3]
                rows["gt_rot"].append(depth_frame_scores(recon_depth(pair.recon_pts, true_rot)[0].numpy(), gt)[0])
        rows["frame"].append(fr.index)
        rows["self"].append(depth_frame_scores(own.recon_pts[0, ..., 2].numpy(), gt)[0])
        rows["constant"].append(depth_frame_scores(np.ones_like(gt), gt)[0])
        rows["true_rot_deg"].append(float(rotation_angle_deg(rel[:3, :3], torch.eye(3))))
        rows["focal_self_px"].append(float(intrinsics_from_pointmap(own.track_pts)[0, 0]))
    rows["camera_focal_px"] = float(k[0, 0])
    rows["anchor_focal_px"] = float(k_est[0, 0])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("bags", type=Path, nargs="+")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--every", type=int, default=4, help="sample every N-th frame")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = load_checkpoint(args.checkpoint, device=torch.device("cpu")).eval()
    result = {}
    print("| bag | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for bag in args.bags:
        rows = sources(net, bag, args.frames, args.every)
        result[bag.name] = rows
        means = [float(np.nanmean(rows[key])) for key in KEYS]
        print(f"| {bag.name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | (CameraInfo focal "
              f"{rows['camera_focal_px']:.1f} px, anchor's own {rows['anchor_focal_px']:.1f} px)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "every": args.every, "bags": result},
                                        indent=1))


if __name__ == "__main__":
    main()
