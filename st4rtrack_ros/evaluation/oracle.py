"""An engine that answers with the exact St4RTrack targets of a synthetic sequence instead of a network.

It measures everything after the network — pose from PnP, track sampling, visibility, window chaining, metrics —
against an upper bound, and lets tests check that machinery exactly. Frames are recognised by their pixels: the
engine interface only receives image tensors.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import torch

from st4rtrack_ros.data.sequence import SynthSequence
from st4rtrack_ros.data.targets import pair_targets
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import PairOutput
from st4rtrack_ros.model.preprocess import fit_image, plan_mapping, to_tensor

CONF_VALID, CONF_INVALID = 10.0, 1.0


def _key(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().float().numpy().tobytes()).hexdigest()


class OracleEngine:
    """Duck-types ``StreamingEngine`` (``net.config``, ``device``, ``set_anchor``, ``step``, ``reset``)."""

    def __init__(self, seq: SynthSequence, rgbs: list[np.ndarray]) -> None:
        if seq.width % 16 or seq.height % 16:
            raise ValueError("the oracle runs at the sequence's own size, which must be a multiple of 16")
        self.seq = seq
        self.device = torch.device("cpu")
        self.net = SimpleNamespace(config=preset("tiny_128").with_image_size(seq.width, seq.height))
        mapping = plan_mapping((seq.width, seq.height), (seq.width, seq.height))
        self._index = {_key(to_tensor(fit_image(rgb, mapping))[None]): i for i, rgb in enumerate(rgbs)}
        self.anchor: int | None = None

    def reset(self) -> None:
        self.anchor = None

    def _frame(self, x: torch.Tensor) -> int:
        try:
            return self._index[_key(x)]
        except KeyError:
            raise ValueError("the oracle does not know this image") from None

    def set_anchor(self, x: torch.Tensor) -> None:
        self.anchor = self._frame(x)

    def step(self, x: torch.Tensor, recon: bool = True) -> PairOutput:
        """Ground-truth maps for (anchor, x); ``recon`` is accepted for the engine interface (both maps always)."""
        if self.anchor is None:
            raise RuntimeError("set_anchor() must be called before step()")
        j = self._frame(x)
        s = self.seq
        t = pair_targets(s.scene, s.k, s.width, s.height, self.anchor, [j])
        track_conf = np.where(t.track_valid, CONF_VALID, CONF_INVALID)[None]
        recon_conf = np.where(t.recon_valid, CONF_VALID, CONF_INVALID)
        f = torch.float32
        return PairOutput(torch.as_tensor(t.track_pts, dtype=f), torch.as_tensor(track_conf, dtype=f),
                          torch.as_tensor(t.recon_pts, dtype=f), torch.as_tensor(recon_conf, dtype=f))
