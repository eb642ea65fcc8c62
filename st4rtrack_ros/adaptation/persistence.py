"""Keep what the robot has learned: adapted weights saved atomically, tied to the base model they came from.

File: our safetensors format holding only the adapted subset, with metadata — format tag, the base model's
fingerprint, weights version, rounds, accepted/rolled back, last validation losses, wall time and the adaptation
config. Written to a temporary file in the same folder, fsync-ed, then renamed over the target, so a crash leaves
either the old file or the new one; a truncated file fails safetensors' own header/size check and is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from st4rtrack_ros.model.checkpoint import CheckpointError, read_safetensors

FORMAT = "st4rtrack_ros/adapted/1"


class AdaptedCheckpointError(RuntimeError):
    """An adapted-weights file that must not be loaded (broken, foreign base model, wrong subset)."""


def weights_fingerprint(net: torch.nn.Module) -> str:
    """A short hash identifying a set of weights without reading every byte of a large model.

    Per tensor: name, shape, the float64 sum and 4,096 values from each end. Two different checkpoints agree on all
    of that only by accident.
    """
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        flat = t.detach().reshape(-1)
        sample = torch.cat((flat[:4096], flat[-4096:])).float().cpu().numpy().tobytes()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(repr(float(flat.double().sum())).encode())
        h.update(sample)
    return h.hexdigest()[:32]


def save_adapted(path: str | Path, tensors: dict[str, torch.Tensor], base_id: str, info: dict[str, Any]) -> Path:
    """Atomically write the adapted subset with its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "base_id": base_id, "saved_unix": f"{time.time():.3f}", "info": json.dumps(info)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_adapted(path: str | Path, base_id: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and info of an adapted-weights file made for ``base_id``; AdaptedCheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise AdaptedCheckpointError(f"no adapted weights at {path}")
    try:
        tensors, meta = read_safetensors(path)
    except CheckpointError as e:  # truncated, bad header
        raise AdaptedCheckpointError(f"{e}; not loaded") from e
    if meta.get("format") != FORMAT:
        raise AdaptedCheckpointError(f"{path} is not an adapted-weights file (format {meta.get('format')!r})")
    if meta.get("base_id") != base_id:
        raise AdaptedCheckpointError(
            f"{path} was adapted from another base model (base {meta.get('base_id')}, running {base_id}); "
            "refusing to load it — point the node at the matching base checkpoint or start fresh")
    return tensors, json.loads(meta.get("info", "{}"))
