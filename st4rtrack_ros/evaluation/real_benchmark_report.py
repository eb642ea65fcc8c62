"""The real-data benchmark's report: its Markdown tables (``real_benchmark.md``) from the per-bag entries of
``real_benchmark.evaluate_bag`` (also re-rendered from a stored ``real_benchmark.json``) and one picture per bag."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from st4rtrack_ros.evaluation.recorded_runs import MODES
from st4rtrack_ros.evaluation.runner import RunResult
from st4rtrack_ros.geometry.projection import project, world_to_camera


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
