"""The tracker's side of background adaptation: the window snapshot it hands over and what it needs of an adapter.

Defined here, below the adaptation package, so the dependency runs one way: ``adaptation`` implements this
interface (``AdaptationWorker``) and imports ``tracking``; ``tracking`` never imports ``adaptation``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class WindowSnapshot:
    """What the tracker hands over: frames of one window at model resolution, the anchor first."""

    images: torch.Tensor  # (F, 3, H, W) in [-1, 1], CPU
    rgb: np.ndarray  # (F, H, W, 3) uint8 (for KLT)
    k: torch.Tensor  # (3, 3) the window's K in model pixels
    depth: np.ndarray | None = None  # (F, H, W) aligned depth (metres, 0 = none) or None
    # Every frame from the anchor on (G, H, W, 3) and where the F frames sit in it: KLT follows points through
    # consecutive frames, a few pixels apart, then the labels are read at the snapshot's frames. None: KLT runs on rgb.
    chain_rgb: Sequence[np.ndarray] | None = None  # (G × (H, W, 3)); a list from the tracker: no copy on its thread
    chain_index: np.ndarray | None = None  # (F,) int, chain_index[0] == 0
    # The F frames' stamps (ns), as the tracker received them: which recorded frames the snapshot holds (an offline
    # label source looks its ground truth up by them). None: not known.
    stamps_ns: np.ndarray | None = None  # (F,) int64


class Adapter(Protocol):
    """What OnlineTracker uses of an adaptation worker."""

    lock: threading.Lock  # held around inference; the adapter's weight swap takes it too
    enabled: bool
    window_frames: int  # frames per snapshot (may shrink after running out of memory)
    config: Any  # .every_n_frames
    version: int  # weights version in use

    def submit(self, snapshot: WindowSnapshot) -> bool: ...
