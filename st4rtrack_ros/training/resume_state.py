"""What a training run needs to resume exactly, besides the model: the RNG states (saved as plain tensors and
containers, so the state file loads with ``weights_only=True``) and the optimizer state file that belongs to
``ckpt/last.safetensors`` (see :mod:`~st4rtrack_ros.training.loop`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 — the global generator, for any code that still uses it
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values only, so the state file loads with ``weights_only=True``."""
    np_state = np.random.get_state()  # noqa: NPY002 — saved so a resumed run continues it
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def checkpoint_step(path: Path) -> int | None:
    """The ``step`` recorded in a training checkpoint's metadata (None when absent)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None else None


def load_state(ckpt_dir: Path) -> dict[str, Any]:
    """The state that belongs to ``ckpt_dir/last.safetensors``: ``last_state.pt``, or, for a job killed between the
    two renames of :meth:`~st4rtrack_ros.training.loop.Trainer.save`, the complete ``last_state.pt.tmp`` written
    just before them."""
    state = torch.load(ckpt_dir / "last_state.pt", map_location="cpu", weights_only=True)
    model_step = checkpoint_step(ckpt_dir / "last.safetensors")
    if model_step is None or model_step == int(state["step"]):
        return state
    tmp = ckpt_dir / "last_state.pt.tmp"
    if tmp.is_file():
        newer = torch.load(tmp, map_location="cpu", weights_only=True)
        if int(newer["step"]) == model_step:
            return newer
    raise RuntimeError(f"{ckpt_dir}: model at step {model_step} but optimizer state at step {state['step']}")
