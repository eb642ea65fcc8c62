"""The loss curves of a training run (``loss_curves.png``), drawn from its whole ``log.jsonl`` (every resumed
segment)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def plot_loss_curves(out: Path) -> Path | None:
    """Loss curves from ``out/log.jsonl``: training loss (smoothed), validation terms; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a convenience; never fail a run for it
        return None
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    tr = [r for r in recs if r["split"] == "train"]
    va = [r for r in recs if r["split"] == "val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if tr:
        s = np.array([r["step"] for r in tr])
        for key in ("loss", "track", "recon"):
            y = np.array([r[key] for r in tr])
            k = max(1, len(y) // 50)
            ys = np.convolve(y, np.ones(k) / k, mode="valid")
            axes[0].plot(s[k - 1:], ys, label=f"train {key}")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss (with confidence term)")
    axes[0].legend()
    if va:
        s = [r["step"] for r in va]
        for key in ("epe_track", "epe_track_dyn", "epe_recon"):
            axes[1].plot(s, [r[key] for r in va], marker="o", label=f"val {key} (m)")
        ax2 = axes[1].twinx()
        ax2.plot(s, [r["loss"] for r in va], "k--", label="val loss (no conf)")
        ax2.legend(loc="upper center")
    axes[1].set_xlabel("step")
    axes[1].set_title("validation")
    if va:
        axes[1].legend()
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
