"""The configuration of a training run (:class:`TrainConfig`, saved with every checkpoint so a resume needs no
flags) and its learning-rate schedule (:func:`lr_at`, a pure function of the step: part of what makes resuming
exact)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from st4rtrack_ros.model.network import PARAM_SETS
from st4rtrack_ros.training.data import DataConfig
from st4rtrack_ros.training.losses import LossConfig

#: dtypes of the final ``model.safetensors`` export (None: as trained, fp32).
EXPORT_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainConfig:
    model_preset: str = "small_256"
    steps: int = 20_000  # length of the LR schedule (and the run, unless stopped earlier)
    batch_size: int = 8  # pairs per step; a multiple of data.pairs_per_seq
    lr: float = 2e-4
    min_lr_ratio: float = 0.01
    warmup_steps: int = 500
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 500
    n_val_groups: int = 16
    ckpt_every: int = 1000
    log_every: int = 10
    time_budget_s: float | None = None
    budget_schedule: bool = False  # cosine follows max(step, time) progress (wall-clock dependent: no exact resume)
    amp: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "bf16" | "none"
    freeze_encoder: bool = False
    # Recompute each transformer block's activations in the backward pass (activation checkpointing): one more
    # forward pass of the blocks per step for far less activation memory (for vitl_512 at a useful batch).
    grad_checkpoint: bool = False
    # The subset of parameters trained (model.network.PARAM_SETS); "recon_head" trains head 2 alone, which cannot
    # change the tracking pointmaps (head 1 and everything it reads stay as loaded).
    train_params: str = "all"
    init: str | None = None  # checkpoint to start from (any format load_checkpoint reads)
    # > 0: cycle over a finite pool of this many training groups instead of fresh ones. 1 = a fixed-batch overfitting
    # check; thousands + data.cache_dir = rendered once, then re-read (the GPU is ~3× faster than fresh rendering).
    pool_groups: int = 0
    export_dtype: str = "fp32"  # dtype of the final model.safetensors export
    max_shard_mib: float | None = None  # split the export into shards of at most this size
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.batch_size % self.data.pairs_per_seq:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of pairs_per_seq "
                             f"{self.data.pairs_per_seq}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"export_dtype must be one of {sorted(EXPORT_DTYPES)}")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError("amp must be 'auto', 'bf16' or 'none'")
        if self.train_params not in PARAM_SETS:
            raise ValueError(f"train_params must be one of {PARAM_SETS}, got {self.train_params!r}")

    @property
    def groups_per_batch(self) -> int:
        return self.batch_size // self.data.pairs_per_seq

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        data = DataConfig(**{k: tuple(v) if k == "presets" else v for k, v in d.pop("data", {}).items()})
        loss = LossConfig(**d.pop("loss", {}))
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(data=data, loss=loss, **d)


def lr_at(cfg: TrainConfig, step: int, time_frac: float = 0.0) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr·min_lr_ratio`` at ``steps``.

    ``time_frac`` (elapsed / time budget, with ``budget_schedule``) lets the decay finish when the time runs out
    even if fewer than ``steps`` steps fit: the cosine follows whichever of the two progresses is further.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, max((step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps), time_frac))
    lo = cfg.lr * cfg.min_lr_ratio
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * t))
