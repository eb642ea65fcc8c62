"""Pseudo-labels for test-time adaptation, from classical vision (no extra network on the robot).

2D tracks: OpenCV pyramidal Lucas–Kanade from the anchor's corners through the window's frames, frame to frame, with
a forward–backward check (a point that does not come back to where it started is occluded, on a moving edge or
lost, and stays invisible from then on). Depth: the robot's aligned depth image, when it has one.

Learned labellers (a CoTracker-style point tracker, a MoGe-style monocular depth model) are optional plug-ins:
TorchScript files loaded only from a local path — nothing is ever downloaded, and a TorchScript archive runs no
Python pickle code. Absent, KLT gives the tracks and the depth term is on only with a depth image; the worker's status
says which sources are in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from st4rtrack_ros.tracking.queries import corner_queries


@dataclass
class KLTConfig:
    num_tracks: int = 256
    win: int = 15  # LK window (pixels)
    levels: int = 3  # pyramid levels above the base
    fb_thresh_px: float = 1.0  # forward–backward round-trip error above which a point is dropped


def klt_tracks(rgbs: np.ndarray, query_uv: np.ndarray, cfg: KLTConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Track ``query_uv`` (N, 2) from frame 0 through frames (F, H, W, 3) uint8 → (tracks (F, N, 2), visible (F, N))."""
    cfg = cfg or KLTConfig()
    n_frames, h, w = rgbs.shape[:3]
    grays = [_normalised_gray(im) for im in rgbs]
    tracks = np.zeros((n_frames, len(query_uv), 2), np.float32)
    visible = np.zeros((n_frames, len(query_uv)), bool)
    tracks[0], visible[0] = query_uv, True
    if not len(query_uv):
        return tracks, visible
    lk = dict(winSize=(cfg.win, cfg.win), maxLevel=cfg.levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    prev = query_uv.astype(np.float32).reshape(-1, 1, 2)
    for f in range(1, n_frames):
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(grays[f - 1], grays[f], prev, None, **lk)
        back, st_b, _ = cv2.calcOpticalFlowPyrLK(grays[f], grays[f - 1], nxt, None, **lk)
        fb = np.linalg.norm((back - prev).reshape(-1, 2), axis=1)
        p = nxt.reshape(-1, 2)
        inside = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
        ok = st.ravel().astype(bool) & st_b.ravel().astype(bool) & (fb < cfg.fb_thresh_px) & inside
        visible[f] = visible[f - 1] & ok
        tracks[f] = np.where(visible[f][:, None], p, tracks[f - 1])
        prev = nxt
    return tracks, visible


def _normalised_gray(rgb: np.ndarray) -> np.ndarray:
    """Grey image with its mean and spread fixed: LK assumes constant brightness, and auto-exposure or a
    white-balance change between two frames (a global gain and offset) would otherwise lose every track."""
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = (g - g.mean()) / max(float(g.std()), 1e-3)
    return np.clip(128.0 + 40.0 * g, 0, 255).astype(np.uint8)


def anchor_queries(anchor_rgb: np.ndarray, cfg: KLTConfig | None = None) -> np.ndarray:
    """Well-textured anchor pixels: LK needs corners, not flat walls."""
    cfg = cfg or KLTConfig()
    return corner_queries(anchor_rgb, cfg.num_tracks, margin=cfg.win // 2 + 1)


def load_local_plugin(path: str | Path, what: str) -> torch.nn.Module:
    """A plug-in from a local file (never a URL, never downloaded): a ``torch.export`` archive (``.pt2``) or a
    TorchScript one (anything else); neither format runs Python pickle code on load."""
    p = Path(path).expanduser()
    if "://" in str(path) or not p.is_file():
        raise FileNotFoundError(f"{what} plug-in {str(path)!r} is not a local file (plug-ins are never downloaded)")
    try:
        if p.suffix == ".pt2":
            return torch.export.load(str(p)).module()
        return torch.jit.load(str(p), map_location="cpu").eval()
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{what} plug-in {p} is not a TorchScript or torch.export archive: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


class ScriptedTracker:
    """CoTracker-style plug-in: ``model(video (1, F, 3, H, W) float 0..255, queries (1, N, 3) as (t=0, u, v))`` →
    ``(tracks (1, F, N, 2), visibility (1, F, N))``; used in place of KLT."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.model = load_local_plugin(path, "track")

    @torch.no_grad()
    def __call__(self, rgbs: np.ndarray, query_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        video = torch.from_numpy(np.ascontiguousarray(rgbs)).permute(0, 3, 1, 2).float()[None]
        q = torch.from_numpy(np.c_[np.zeros(len(query_uv)), query_uv].astype(np.float32))[None]
        tracks, vis = self.model(video, q)
        uv = tracks[0].float().numpy().reshape(len(rgbs), len(query_uv), 2)
        visible = vis[0].numpy().reshape(len(rgbs), len(query_uv)) > 0.5
        visible[0] = True
        return uv.astype(np.float32), visible & np.isfinite(uv).all(-1)


class ScriptedDepth:
    """MoGe-style plug-in: ``model(images (F, 3, H, W) float 0..1)`` → depth ``(F, H, W)`` (any scale: the depth
    term is scale-invariant per frame); used when the robot has no depth image."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.model = load_local_plugin(path, "depth")

    @torch.no_grad()
    def __call__(self, rgbs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgbs)).permute(0, 3, 1, 2).float() / 255.0
        depth = self.model(x).float().numpy().reshape(rgbs.shape[:3])
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
