"""``st4rtrack-real-bench --out DIR``: a checkpoint (the default model unless
``--checkpoint``) on every real camera bag in ``../shared/data/real`` (or ``$ST4R_REAL_DATA``, or ``--data``) and on
held-out synthetic bags of every preset, with the harness's baselines, in one table (``real_benchmark.md`` and
``real_benchmark.json``) and one picture per bag (``<bag>.png``).

Every bag runs twice through the tracker the node runs: ``protocol`` (frame 0 anchors every frame, the WorldTrack
protocol of ``st4rtrack-eval``) and ``online`` (the tracker's sliding window and re-anchoring).

With ground truth (the RGB-D bag, the synthetic bags): depth AbsRel, ATE, tracking APD (Sim(3)) and frame-to-frame
camera rotation error (RPE rotation), each next to its trivial baseline (constant depth, a static camera, the
frame-0 points held still), and the issue's targets checked.

Without ground truth, what can be measured honestly, on every bag:
- pose success: the share of frames where PnP found a pose;
- reprojection residual (model pixels): KLT tracks (``adaptation.pseudo_labels``, from corners of the first frame)
  against the tracker's 3D tracks of the same pixels, projected with the estimated pose and intrinsics; the baseline
  is "nothing moves" (the KLT displacement since frame 0). In frame 0 (identity pose) the residual measures only how
  well the intrinsics in use fit the network's pointmap;
- static-background jitter: frame-to-frame motion of the 3D tracks that KLT finds on the static background (inliers
  of the dominant epipolar geometry), as a fraction of the median scene depth (0 for a perfect tracker);
- scale drift across re-anchoring: per frame, the online run's depth over the protocol run's (one anchor, no chain);
  with ground-truth depth also each run's scale against the truth;
- latency per frame (measured on whatever machine runs it; on a shared CPU, compare only within one run).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from st4rtrack_ros.adaptation.pseudo_labels import KLTConfig, anchor_queries, klt_tracks
from st4rtrack_ros.data.bag_io import BenchmarkBagReader
from st4rtrack_ros.evaluation.alignment import rebase_to_first_camera
from st4rtrack_ros.evaluation.metrics import as_dict, evaluate_tracks
from st4rtrack_ros.evaluation.report import _finite, compute_metrics
from st4rtrack_ros.evaluation.runner import RunConfig, RunResult, protocol_config, run_frames
from st4rtrack_ros.geometry.projection import project, world_to_camera
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.model.preprocess import fit_image, plan_mapping
from st4rtrack_ros.model.streaming import StreamingEngine
from st4rtrack_ros.pipeline import TrackerSpec, build_tracker
from st4rtrack_ros.tracking.adaptation_port import Adapter
from st4rtrack_ros.tracking.tracker import OnlineTracker, TrackerConfig
from st4rtrack_ros.tracking.types import FrameInput, StepResult

REAL_DATA_ENV = "ST4R_REAL_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTH_PRESETS: tuple[str, ...] = ("easy", "occlusion", "fast", "shift")
SYNTH_SEED = 1000  # held-out scene seeds start here (training uses 10000+, validation 0..n_val-1)
SYNTH_SIZE = (256, 160)
MODES: tuple[str, ...] = ("protocol", "online")


def default_real_dir() -> Path:
    """``$ST4R_REAL_DATA``, else ``../shared/data/real`` beside the repository (where CI lays shared/)."""
    env = os.environ.get(REAL_DATA_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "real"


def find_bags(root: Path) -> list[Path]:
    """The rosbag2 folders directly under ``root`` (sorted by name); empty when ``root`` does not exist."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "metadata.yaml").is_file())



# ------------------------------------------------------------------------------------------------ recording


class RecordingTracker(OnlineTracker):
    """The node's tracker that also tracks corner queries of the first anchor for the KLT comparison.

    When a caller founds the world with its own queries (the evaluation's ground-truth points, ids 0..N-1), up to
    ``klt.num_tracks`` corners of the anchor are appended (ids N..N+M-1: the harness scores only ids < N, so its
    metrics are unchanged). Per step it keeps the model-size image and the 3D positions of those M tracks (NaN once
    a track has ended, in online mode when a re-anchoring does not carry it over).
    """

    def __init__(self, engine: StreamingEngine, config: TrackerConfig | None = None, adaptation: Adapter | None = None,
                 *, klt: KLTConfig | None = None, use_camera_info: bool = True) -> None:
        super().__init__(engine, config, adaptation)
        self.klt = klt or KLTConfig()
        self.use_camera_info = use_camera_info  # False: the tracker gets no K and estimates it (Weiszfeld)
        self.first_id = 0
        self.klt_queries = np.zeros((0, 2))  # (M, 2) model pixels in the first anchor
        self.rgbs: list[np.ndarray] = []  # T × (h, w, 3) uint8 model-size images
        self.positions: list[np.ndarray] = []  # T × (M, 3) world positions of the KLT-query tracks
        self.reanchored: list[bool] = []

    def step(self, frame: FrameInput, queries: np.ndarray | None = None) -> StepResult:
        h, w = frame.rgb.shape[:2]
        mapping = self.mapping or plan_mapping((w, h), self.engine.net.config.img_size, self.config.fit)
        rgb = fit_image(frame.rgb, mapping)
        if queries is not None and self.window is None:  # founding the world with the caller's queries
            own = np.asarray(queries, dtype=np.float64).reshape(-1, 2)
            self.first_id = len(own)
            self.klt_queries = anchor_queries(rgb, self.klt).astype(np.float64)
            queries = np.concatenate((own, self.klt_queries))
        res = super().step(frame if self.use_camera_info else dataclasses.replace(frame, k=None), queries)
        pos = np.full((len(self.klt_queries), 3), np.nan)
        ids = res.tracks.ids - self.first_id
        rows = (ids >= 0) & (ids < len(self.klt_queries))
        pos[ids[rows]] = res.tracks.positions[rows]
        self.rgbs.append(rgb)
        self.positions.append(pos)
        self.reanchored.append(bool(res.reanchored))
        return res


def run_bag(net: St4RTrackNet, bag: Path, mode: str, frames: int, device: torch.device,
            tracker_cfg: TrackerConfig | None = None, use_camera_info: bool = True
            ) -> tuple[RunResult, RecordingTracker]:
    """One pass of the tracker over the bag's first ``frames`` frames in the harness's ``mode``."""
    base = tracker_cfg or TrackerConfig()
    cfg = protocol_config(base) if mode == "protocol" else base
    tracker = build_tracker(TrackerSpec(device=str(device), fit=cfg.fit, tracking=cfg), net=net,
                            tracker_cls=functools.partial(RecordingTracker, use_camera_info=use_camera_info))
    with BenchmarkBagReader(bag) as reader:
        run = run_frames(reader.frames(), tracker, RunConfig(max_frames=frames, mode=mode, progress_every=0))
    return run, tracker


# ------------------------------------------------------------------------------------------------ label-free


def static_background(uv: np.ndarray, visible: np.ndarray, thresh_px: float = 1.0, min_frames: int = 8,
                      min_share: float = 0.8) -> np.ndarray:
    """(M,) bool: KLT tracks that move with the camera, not on their own.

    uv (T, M, 2) pixels, visible (T, M). Per frame t, a track is consistent when it is an inlier (``thresh_px``) of
    a MAGSAC fundamental matrix between frame 0 and t, or, where the image barely moved (median displacement below
    2·thresh), when it stayed within 2·thresh of its start (F is degenerate without motion). Static = consistent
    in at least ``min_share`` of at least ``min_frames`` frames. An approximation: a mover whose motion happens to
    follow its epipolar line passes.
    """
    n_frames, m = visible.shape
    min_frames = min(min_frames, max(n_frames - 1, 1))  # short runs (tests): every frame after the first
    inlier = np.zeros((n_frames, m), bool)
    checked = np.zeros((n_frames, m), bool)
    for t in range(1, n_frames):
        v = visible[t]
        if v.sum() < 15:
            continue
        a, b = uv[0, v].astype(np.float64), uv[t, v].astype(np.float64)
        disp = np.linalg.norm(b - a, axis=1)
        if np.median(disp) < 2 * thresh_px:
            ok = disp < 2 * thresh_px
        else:
            f, mask = cv2.findFundamentalMat(a, b, cv2.USAC_MAGSAC, thresh_px, 0.999)
            if f is None or mask is None:
                continue
            ok = mask.ravel().astype(bool)
        inlier[t, v], checked[t, v] = ok, True
    n = checked.sum(0)
    return (n >= min_frames) & (inlier.sum(0) >= min_share * np.maximum(n, 1))


def reprojection_residual(positions: np.ndarray, poses: np.ndarray, k: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(T, M) pixel distance between KLT positions uv (T, M, 2) and the 3D tracks positions (T, M, 3) (world)
    projected with the estimated poses (T, 4, 4) world ← camera and K (3, 3); NaN behind the camera or unknown."""
    cam = world_to_camera(torch.as_tensor(np.nan_to_num(positions), dtype=torch.float64),
                          torch.as_tensor(poses, dtype=torch.float64))
    proj, z = project(cam, torch.as_tensor(k, dtype=torch.float64))
    err = np.linalg.norm(proj.numpy() - uv, axis=-1)
    return np.where(np.isfinite(positions).all(-1) & (z.numpy() > 1e-6), err, np.nan)


def static_jitter(positions: np.ndarray, visible: np.ndarray, static: np.ndarray, scene_depth: float) -> float:
    """Median over static-background tracks of the RMS frame-to-frame motion of their 3D positions (T, M, 3),
    counted where KLT sees the track in both frames, divided by the scene depth: 0 for a perfect tracker."""
    step = np.linalg.norm(np.diff(positions, axis=0), axis=-1)  # (T-1, M)
    ok = visible[1:] & visible[:-1] & np.isfinite(step) & static[None]
    counts = ok.sum(0)
    keep = counts >= 4
    if not keep.any() or not scene_depth > 0:
        return float("nan")
    rms = np.sqrt((np.where(ok, step, 0.0) ** 2).sum(0)[keep] / counts[keep])
    return float(np.median(rms) / scene_depth)


def _median(x: np.ndarray, q: float = 50.0) -> float:
    """The q-th percentile (default the median) of the finite values; NaN when there are none."""
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else float("nan")


def label_free(run: RunResult, rec: RecordingTracker) -> dict[str, Any]:
    """The label-free measures of one run, plus the arrays the picture needs (key ``_arrays``, not written)."""
    rgbs = np.stack(rec.rgbs)
    uv, vis = klt_tracks(rgbs, rec.klt_queries.astype(np.float32), rec.klt)
    pos = np.stack(rec.positions)
    static = static_background(uv, vis)
    res = reprojection_residual(pos, run.pred_poses, run.k_model, uv)
    scored = vis.copy()
    scored[0] = False  # frame 0 is where the queries were picked
    scored &= np.isfinite(res)
    moved = np.linalg.norm(uv - uv[:1], axis=-1)  # "nothing moves": the image displacement itself
    scene_depth = _median(pos[0, :, 2])
    out = {
        "klt_tracks": len(rec.klt_queries),
        "klt_visible_last_frame": int(vis[-1].sum()),
        "static_tracks": int(static.sum()),
        "reprojection_px": {
            "model_median": _median(res[scored]), "model_p90": _median(res[scored], 90),
            "model_frame0_median": _median(res[0][vis[0]]),  # K vs the pointmap's own focal (no pose involved)
            "model_static_median": _median(res[scored & static[None]]),
            "model_moving_median": _median(res[scored & ~static[None]]),  # every track not classed static
            "nothing_moves_median": _median(moved[scored]),
            "nothing_moves_p90": _median(moved[scored], 90),
            "n": int(scored.sum()),
            "model_width_px": int(rgbs.shape[2]),
        },
        "static_jitter_rel": static_jitter(pos, vis, static, scene_depth),
        "pose_success_rate": float(run.pose_ok.mean()),
        "reanchors": int(sum(rec.reanchored[1:])),
    }
    out["_arrays"] = {"uv": uv, "visible": vis, "static": static, "positions": pos, "residual": res, "rgbs": rgbs}
    return out


def _depth_scale(pred: np.ndarray, ref: np.ndarray) -> float:
    """median(pred) / median(ref) over pixels valid in both (depth maps (h, w), 0 or NaN invalid)."""
    ok = np.isfinite(pred) & np.isfinite(ref) & (pred > 0) & (ref > 0)
    return float(np.median(pred[ok]) / np.median(ref[ok])) if ok.sum() > 100 else float("nan")


def _drift(series: list[float]) -> dict[str, float]:
    """A per-frame scale series normalised by its frame-0 value: last value and the largest factor either way."""
    s = np.asarray(series, dtype=np.float64)
    s = s / s[0] if s.size and np.isfinite(s[0]) else s * np.nan
    logs = np.abs(np.log(s[np.isfinite(s) & (s > 0)]))
    return {"last": float(s[-1]) if s.size else float("nan"),
            "max_factor": float(np.exp(logs.max())) if logs.size else float("nan")}


def scale_drift(runs: dict[str, RunResult]) -> dict[str, Any]:
    """Online depth ÷ protocol depth per frame (the chain's scale against one anchor's), and with ground-truth
    depth each run's depth ÷ the truth per frame, all normalised by frame 0."""
    out: dict[str, Any] = {}
    if "online" in runs and "protocol" in runs:
        on, pr = runs["online"], runs["protocol"]
        out["online_vs_protocol"] = _drift([_depth_scale(a, b) for a, b in zip(on.pred_depth, pr.pred_depth,
                                                                                strict=True)])
    for mode, run in runs.items():
        if all(g is not None for g in run.gt_depth):
            out[f"{mode}_vs_truth"] = _drift([_depth_scale(p, g) for p, g in zip(run.pred_depth, run.gt_depth,
                                                                                  strict=True)])
    return out


# ------------------------------------------------------------------------------------------------ per bag


def held_still_sim3(run: RunResult) -> dict[str, Any] | None:
    """The model's frame-0 track positions held still, scored with the model's own Sim(3) alignment."""
    if run.gt_tracks is None or run.gt_poses is None:
        return None
    _, gt = rebase_to_first_camera(run.gt_poses, run.gt_tracks)
    still = np.broadcast_to(run.pred_tracks[:1], gt.shape).copy()
    scores = evaluate_tracks(still, gt, valid=np.isfinite(gt).all(-1), dynamic=run.gt_dynamic, alignments=("sim3",))
    return as_dict(scores["sim3"])


def targets(metrics: dict[str, Any], still_sim3: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's targets for real RGB-D, where the ground truth allows them: (value, bar, met)."""
    b = metrics.get("baselines", {})
    out: dict[str, Any] = {}
    if "depth" in metrics and "constant_depth" in b:
        v, bar = metrics["depth"]["abs_rel"], b["constant_depth"]["abs_rel"]
        out["depth_abs_rel_below_constant"] = {"value": v, "bar": bar, "met": _lt(v, bar)}
    if "camera" in metrics and "static_camera" in b:
        v, s = metrics["camera"]["ate"], b["static_camera"]["ate"]
        out["ate_25pct_below_static"] = {"value": v, "bar": 0.75 * s if s is not None else None,
                                         "met": _lt(v, 0.75 * s if s is not None else None)}
        v, s = metrics["camera"]["rpe_rot"], b["static_camera"]["rpe_rot"]
        out["rpe_rot_below_2x_static"] = {"value": v, "bar": 2 * s if s is not None else None,
                                          "met": _lt(v, 2 * s if s is not None else None)}
    if "tracking" in metrics and "static_points" in b:
        bars = [b["static_points"]["apd"]] + ([still_sim3["apd"]] if still_sim3 else [])
        bar = max(x for x in bars if x is not None) if any(x is not None for x in bars) else None
        v = metrics["tracking"]["sim3"]["apd"]
        out["apd_sim3_above_held_still"] = {"value": v, "bar": bar, "met": _lt(bar, v)}
    return out


def _lt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else bool(a < b)


def evaluate_bag(net: St4RTrackNet, bag: Path, kind: str, frames: int, device: torch.device, out: Path | None,
                 modes: tuple[str, ...] = MODES, tracker_cfg: TrackerConfig | None = None,
                 use_camera_info: bool = True) -> dict[str, Any]:
    """Every measure of one bag in each mode (JSON-ready), and its picture ``out/<bag>.png`` when ``out`` is set."""
    entry: dict[str, Any] = {"bag": bag.name, "kind": kind, "path": str(bag)}
    runs: dict[str, RunResult] = {}
    arrays: dict[str, Any] = {}
    for mode in modes:
        t0 = time.perf_counter()
        run, rec = run_bag(net, bag, mode, frames, device, tracker_cfg, use_camera_info)
        runs[mode] = run
        metrics = compute_metrics(run)
        lf = label_free(run, rec)
        arrays[mode] = lf.pop("_arrays")
        still = held_still_sim3(run)
        if still is not None:
            metrics["baselines"]["static_points_sim3"] = still
        entry[mode] = {"metrics": metrics, "label_free": lf, "targets": targets(metrics, still),
                       "focal_model_px": float(run.k_model[0, 0]), "wall_s": time.perf_counter() - t0}
        print(f"[real-bench] {bag.name} {mode}: {len(run.stamps_ns)} frames in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    entry["frames"] = len(next(iter(runs.values())).stamps_ns)
    entry["k_source"] = next(iter(runs.values())).k_source
    if not use_camera_info and entry["k_source"] == "camera_info":
        entry["k_source"] = "weiszfeld (CameraInfo ignored)"
    entry["scale_drift"] = scale_drift(runs)
    if out is not None and "protocol" in runs:
        entry["picture"] = bag_picture(bag.name, runs["protocol"], arrays["protocol"], entry, out / f"{bag.name}.png")
    return _finite(entry)


def bag_picture(name: str, run: RunResult, arr: dict[str, Any], entry: dict[str, Any], path: Path) -> str:
    """Three panels: the anchor with its KLT corners (static background green, the rest orange); the last frame that
    still sees a quarter of them, with KLT positions (green) and the model's reprojected 3D tracks (red, joined by
    the residual); the reconstruction and camera path from above (model units). A 256-colour PNG (small files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uv, vis, static, res, rgbs = arr["uv"], arr["visible"], arr["static"], arr["residual"], arr["rgbs"]
    pos = arr["positions"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.7), gridspec_kw={"width_ratios": (1, 1, 1)})
    ax[0].imshow(rgbs[0])
    ax[0].scatter(uv[0, ~static, 0], uv[0, ~static, 1], s=6, c="orange", label="other")
    ax[0].scatter(uv[0, static, 0], uv[0, static, 1], s=6, c="lime", label="static background")
    ax[0].set_title("frame 0: KLT corners", fontsize=9)
    ax[0].legend(fontsize=7, loc="lower right")
    seen = (vis & np.isfinite(res)).sum(1)
    t = int(np.flatnonzero(seen >= 0.25 * seen[0])[-1])
    ok = vis[t] & np.isfinite(res[t])
    cam = world_to_camera(torch.as_tensor(np.nan_to_num(pos[t:t + 1])), torch.as_tensor(run.pred_poses[t:t + 1]))
    proj = project(cam, torch.as_tensor(run.k_model))[0][0].numpy()
    ax[1].imshow(rgbs[t])
    for a, b in zip(uv[t, ok], proj[ok], strict=True):
        ax[1].plot((a[0], b[0]), (a[1], b[1]), "r-", lw=0.5)
    ax[1].scatter(uv[t, ok, 0], uv[t, ok, 1], s=5, c="lime", label="KLT")
    ax[1].scatter(proj[ok, 0], proj[ok, 1], s=5, c="red", marker="x", label="model, reprojected")
    ax[1].set_xlim(0, rgbs.shape[2] - 1)
    ax[1].set_ylim(rgbs.shape[1] - 1, 0)
    lf = entry["protocol"]["label_free"]["reprojection_px"]
    ax[1].set_title(f"frame {t}; residual median over all frames {lf['model_median']:.1f} px "
                    f"(nothing moves {lf['nothing_moves_median']:.1f})", fontsize=9)
    ax[1].legend(fontsize=7, loc="lower right")
    for a in ax[:2]:
        a.set_xticks([])
        a.set_yticks([])
    for pts, col in run.clouds:
        sel = slice(None, None, max(1, len(pts) // 2500))
        ax[2].scatter(pts[sel, 0], pts[sel, 2], c=col[sel] / 255.0, s=1, linewidths=0)
    for j in np.flatnonzero(static)[::4]:
        ax[2].plot(pos[:, j, 0], pos[:, j, 2], "-", lw=0.6, c="lime")
    ax[2].plot(run.pred_poses[:, 0, 3], run.pred_poses[:, 2, 3], "r.-", ms=3, lw=0.8, label="camera (predicted)")
    if run.clouds:  # frame the bulk of the scene: a few stray far points would shrink it to a dot
        xz = np.concatenate([pts[:, [0, 2]] for pts, _ in run.clouds] + [run.pred_poses[:, [0, 2], 3]])
        lo, hi = np.nanpercentile(xz, 1, axis=0), np.nanpercentile(xz, 99, axis=0)
        pad = 0.05 * (hi - lo) + 1e-6
        ax[2].set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax[2].set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax[2].set_aspect("equal", adjustable="datalim")
    ax[2].set_xlabel("x (right)", fontsize=8)
    ax[2].set_ylabel("z (forward)", fontsize=8)
    ax[2].tick_params(labelsize=7)
    ax[2].legend(fontsize=7, loc="lower right")
    ax[2].set_title("reconstruction + static tracks, top view", fontsize=9)
    fig.suptitle(f"{name} (protocol mode, {len(rgbs)} frames, model image)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)
    return path.name


# ------------------------------------------------------------------------------------------------ table


def _f(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _pair(a: Any, b: Any, fmt: str = ".3f") -> str:
    return f"{_f(a, fmt)} ({_f(b, fmt)})" if a is not None or b is not None else "–"


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def table(entries: list[dict[str, Any]]) -> list[str]:
    """The Markdown tables: ground-truth metrics (protocol mode), targets, and label-free measures (both modes)."""
    lines = ["| bag | depth AbsRel (constant depth) | ATE m (static camera) | tracking APD Sim(3) (held still: "
             "Sim(3) / median) | RPE rot ° (static camera) |", "|---|---|---|---|---|"]
    for e in entries:
        m = _get(e, "protocol", "metrics") or {}
        b = m.get("baselines", {})
        if "camera" not in m and "depth" not in m:
            continue
        lines.append(
            f"| {e['bag']} | {_pair(_get(m, 'depth', 'abs_rel'), _get(b, 'constant_depth', 'abs_rel'))} | "
            f"{_pair(_get(m, 'camera', 'ate'), _get(b, 'static_camera', 'ate'))} | "
            f"{_f(_get(m, 'tracking', 'sim3', 'apd'), '.1f')} ({_f(_get(b, 'static_points_sim3', 'apd'), '.1f')} / "
            f"{_f(_get(b, 'static_points', 'apd'), '.1f')}) | "
            f"{_pair(_get(m, 'camera', 'rpe_rot'), _get(b, 'static_camera', 'rpe_rot'), '.2f')} |")
    names = {"depth_abs_rel_below_constant": "AbsRel < constant", "ate_25pct_below_static": "ATE ≤ 0.75 × static",
             "apd_sim3_above_held_still": "APD > held still", "rpe_rot_below_2x_static": "RPE rot < 2 × static"}
    lines += ["", "| bag | " + " | ".join(names.values()) + " |", "|---|" + "---|" * len(names)]
    for e in entries:
        tg = _get(e, "protocol", "targets") or {}
        if not tg:
            continue
        cells = []
        for key in names:
            t = tg.get(key)
            cells.append("–" if not t else f"{'met' if t['met'] else '**missed**'}: {_f(t['value'])} vs "
                         f"{_f(t['bar'])}")
        lines.append(f"| {e['bag']} | " + " | ".join(cells) + " |")
    lines += ["", "| bag | mode | K (focal, model px) | PnP ok % | KLT reprojection px, median (nothing moves) | "
              "frame-0 px (K fit) | static tracks | static jitter % of depth | re-anchors | scale drift online ÷ "
              "protocol (last / max) | latency p50 / p95 ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        for mode in MODES:
            r = e.get(mode)
            if not r:
                continue
            lf, rt = r["label_free"], r["metrics"]["runtime"]
            rp = lf["reprojection_px"]
            jit = lf["static_jitter_rel"]
            drift = _get(e, "scale_drift", "online_vs_protocol") if mode == "online" else None
            drift_s = "–" if not drift else f"{_f(drift['last'], '.2f')} / {_f(drift['max_factor'], '.2f')}"
            cells = [e["bag"], mode, f"{e['k_source']} ({_f(r['focal_model_px'], '.0f')})",
                     _f(100 * lf["pose_success_rate"], ".0f"),
                     _pair(rp["model_median"], rp["nothing_moves_median"], ".1f"),
                     _f(rp.get("model_frame0_median"), ".1f"), f"{lf['static_tracks']}/{lf['klt_tracks']}",
                     _f(None if jit is None else 100 * jit, ".2f"), str(lf["reanchors"]), drift_s,
                     f"{_f(rt['p50_ms'], '.0f')} / {_f(rt['p95_ms'], '.0f')}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_tables(out: Path, lines: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_benchmark.md").write_text("# Real and synthetic bags: model vs baselines\n\n" + "\n".join(lines) +
                                           "\n")
    print("\n".join(lines))
