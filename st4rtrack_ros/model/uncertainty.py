"""Per-point uncertainty σ² for the St4RTrack+ robust losses, derived from the network's confidence channel.

Why this mapping: the official training loss ``conf·ℓ − α·log(conf)`` is the negative log-likelihood of a
heteroscedastic model whose precision is ``conf``; its minimiser is ``conf ∝ 1/ℓ``. So the variance that goes with a
confidence is ``σ² = 1/conf``. Official checkpoints therefore need no extra output channel: σ² comes from the
``1 + exp(c)`` confidence every head already predicts (conf > 1, so σ² ∈ (0, 1)).

The clamp keeps σ² inside ``[sigma2_min, sigma2_max]``: the floor stops a single over-confident point from
dominating a weighted loss, the ceiling stops the network from switching a point's loss off by claiming infinite
uncertainty (the robust losses additionally carry a ``log σ²`` penalty, see ``adaptation.losses``).
"""

from __future__ import annotations

import torch

SIGMA2_MIN = 1e-3
SIGMA2_MAX = 1.0


def sigma2_from_conf(
    conf: torch.Tensor, sigma2_min: float = SIGMA2_MIN, sigma2_max: float = SIGMA2_MAX
) -> torch.Tensor:
    """Map a confidence map (> 1, any shape) to a per-point variance σ² = clamp(1/conf, min, max)."""
    return (1.0 / conf.clamp_min(1e-6)).clamp(sigma2_min, sigma2_max)
