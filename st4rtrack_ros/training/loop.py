"""The supervised training loop: AdamW, warm-up + cosine LR, grad clipping, bf16 autocast on CUDA, exact resume,
data parallelism under ``torchrun`` (DistributedDataParallel; ``training.distributed``).

Resumability without data-pipeline state: batch ``s`` is made of groups ``s·G .. s·G+G-1`` (G groups per batch),
each a pure function of its index (``training.data``), and the learning rate is a pure function of the step. A
checkpoint therefore only holds the model (``ckpt/last.safetensors``, our safetensors format) and
``ckpt/last_state.pt`` (optimizer state, step, RNG states, config: plain tensors/containers, loaded with
``weights_only=True``). Training N steps, stopping, and resuming for M gives the N+M-step run.

Data parallel: ``batch_size`` is the *global* batch. With W ranks, rank r renders groups
``s·G + r·G/W .. s·G + (r+1)·G/W − 1`` of step s, so the W ranks together see exactly the batch a single process
would (different sequences per rank, a pure function of (data seed, step, rank): reproducible, and a resume needs
only the step). DDP averages the gradients, so every rank takes the same optimizer step; the learning rate schedule
is per optimizer step and is not rescaled with W. Rank 0 alone writes logs, validation and checkpoints; the state
file keeps every rank's RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from st4rtrack_ros.model.checkpoint import load_checkpoint, save_checkpoint
from st4rtrack_ros.model.config import preset as model_preset
from st4rtrack_ros.model.network import PARAM_SETS, St4RTrackNet
from st4rtrack_ros.training import distributed
from st4rtrack_ros.training.data import DataConfig, PairGroups, collate_groups, worker_init
from st4rtrack_ros.training.losses import LOCAL, BatchReduce, LossConfig, supervised_loss

log = logging.getLogger(__name__)

_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_RANK_SEED = 1_000_003  # rank r seeds torch/numpy/python with seed + r·this (rank 0: the plain run's seed)


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
        if self.export_dtype not in _DTYPES:
            raise ValueError(f"export_dtype must be one of {sorted(_DTYPES)}")
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 — the global generator, for any code that still uses it
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 for the encoder/decoders on CUDA (the network keeps its heads in fp32 itself)."""
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def bf16_cpu_supported() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 / AMX), where ``--amp bf16`` can pay off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class PairLoss(nn.Module):
    """The network and the supervised loss as one module: what DDP wraps, so its output is tensors only (the total
    loss and the detached terms) and the gradient averaging covers exactly the loss. The same module runs a plain
    single-process step."""

    def __init__(self, net: St4RTrackNet, cfg: TrainConfig, device: torch.device,
                 reduce: BatchReduce = LOCAL) -> None:
        super().__init__()
        self.net, self.cfg, self.device, self.reduce = net, cfg, device, reduce

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``batch``: ``collate_groups`` output (B pairs) on the device → (loss (), terms {name: ()})."""
        with _autocast(self.cfg, self.device):
            out = self.net(batch["img1"], batch["img2"])
        return supervised_loss(out, batch, self.cfg.loss, group=self.cfg.data.pairs_per_seq, reduce=self.reduce)


def _checkpoint_step(path: Path) -> int | None:
    """The ``step`` recorded in a training checkpoint's metadata (None when absent)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None else None


def _load_state(ckpt_dir: Path) -> dict[str, Any]:
    """The state that belongs to ``ckpt_dir/last.safetensors``: ``last_state.pt``, or, for a job killed between the
    two renames of :meth:`Trainer.save`, the complete ``last_state.pt.tmp`` written just before them."""
    state = torch.load(ckpt_dir / "last_state.pt", map_location="cpu", weights_only=True)
    model_step = _checkpoint_step(ckpt_dir / "last.safetensors")
    if model_step is None or model_step == int(state["step"]):
        return state
    tmp = ckpt_dir / "last_state.pt.tmp"
    if tmp.is_file():
        newer = torch.load(tmp, map_location="cpu", weights_only=True)
        if int(newer["step"]) == model_step:
            return newer
    raise RuntimeError(f"{ckpt_dir}: model at step {model_step} but optimizer state at step {state['step']}")


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class TrainResult:
    net: St4RTrackNet
    step: int  # steps completed
    losses: list[float]  # training loss of each step run in this call
    stopped_by_budget: bool
    checkpoint: Path  # ckpt/last.safetensors (fp32, resumable)
    export: Path  # model.safetensors (export dtype; first shard if sharded)
    last_val: dict[str, float] | None = None
    is_main: bool = True  # rank 0 (or a plain run): the rank that wrote the files


class Trainer:
    """Owns model, optimizer, data and logs of one run directory; ``run()`` trains until done, stopped or out of
    time, then writes the checkpoint, the export and the loss curves."""

    def __init__(self, cfg: TrainConfig | None, out_dir: str | Path, resume: bool = False) -> None:
        """``cfg=None`` with ``resume`` reuses the configuration saved in the run directory."""
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "ckpt"
        state_file = self.ckpt_dir / "last_state.pt"
        self.step = 0
        state = None
        if resume and state_file.is_file():
            state = _load_state(self.ckpt_dir)
            cfg = TrainConfig.from_dict(state["config"]) if cfg is None else cfg
            self.step = int(state["step"])
        if cfg is None:
            raise FileNotFoundError(f"nothing to resume in {self.out} (no ckpt/last_state.pt) and no config given")
        self.cfg = cfg
        self.dist, self.device = distributed.setup(_device(cfg))
        if cfg.batch_size % (self.dist.world * cfg.data.pairs_per_seq):
            raise ValueError(f"global batch_size {cfg.batch_size} must be a multiple of world size {self.dist.world} "
                             f"× pairs_per_seq {cfg.data.pairs_per_seq}")
        self.groups_per_rank = cfg.groups_per_batch // self.dist.world
        if cfg.amp == "bf16" and self.device.type == "cpu" and not bf16_cpu_supported():
            log.warning("--amp bf16 on a CPU without native bf16 (AVX-512 BF16/AMX): emulated, expect it slower")
        # Per-rank seeds (rank 0 = the plain run's); the initial weights still agree: DDP broadcasts rank 0's.
        seed_everything(cfg.seed + _RANK_SEED * self.dist.rank)
        mcfg = model_preset(cfg.model_preset).with_image_size(cfg.data.width, cfg.data.height)
        if state is not None:
            self.net = load_checkpoint(self.ckpt_dir / "last.safetensors", self.device)
        elif cfg.init:
            self.net = load_checkpoint(cfg.init, self.device, image_size=(cfg.data.width, cfg.data.height))
        else:
            self.net = St4RTrackNet(mcfg).to(self.device)
        self.net.train()
        self.net.grad_checkpoint = cfg.grad_checkpoint
        if cfg.freeze_encoder:
            for p in self.net.trainable_groups()["encoder"]:
                p.requires_grad_(False)
        if cfg.train_params != "all":
            keep = set(self.net.subset_names(cfg.train_params))
            for name, p in self.net.named_parameters():
                if name not in keep:
                    p.requires_grad_(False)
        params = [p for p in self.net.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # norms, biases, tokens: no weight decay
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, fused=self.device.type == "cuda",
        )
        if state is not None:
            self.opt.load_state_dict(state["optimizer"])
            self._restore_rng(state)
            log.info("resumed %s at step %d", self.out, self.step)
        loss = PairLoss(self.net, cfg, self.device, distributed.batch_reduce(self.dist))
        # static_graph: the same parameters take part every step (mask_token, kept for checkpoints, never does)
        self.model: nn.Module = DistributedDataParallel(
            loss, device_ids=[self.device.index] if self.device.type == "cuda" else None, static_graph=True,
        ) if self.dist.parallel else loss
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        in_memory = cfg.pool_groups if cfg.num_workers == 0 and cfg.pool_groups <= 64 else 0  # small pools only
        self.train_set = PairGroups(cfg.data, "train", memory_cache=in_memory)
        self.val_set = PairGroups(cfg.data, "val", memory_cache=cfg.n_val_groups)

    # -- data ---------------------------------------------------------------------------------------------------

    def _group_indices(self, first_step: int) -> Iterator[int]:
        """This rank's groups from ``first_step`` on: its slice of each step's global groups (all of them for one
        process)."""
        g, per = self.cfg.groups_per_batch, self.groups_per_rank
        for s in range(first_step, self.cfg.steps):
            first = s * g + self.dist.rank * per
            for i in range(first, first + per):
                yield i % self.cfg.pool_groups if self.cfg.pool_groups else i

    def _loader(self, first_step: int) -> DataLoader:
        """Workers start from a forkserver, not by forking this process: a fork after torch's OpenMP pool (or
        CUDA) has run can deadlock the child (seen in the test suite)."""
        nw = self.cfg.num_workers
        ctx = None
        if nw:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
        return DataLoader(self.train_set, batch_size=self.groups_per_rank, sampler=self._group_indices(
            first_step), collate_fn=collate_groups, num_workers=nw, worker_init_fn=worker_init if nw else None,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if nw else None, persistent_workers=False,
            multiprocessing_context=ctx)

    # -- evaluation ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss without the confidence term plus scale-aligned 3D EPE (m) per head, on the fixed validation set."""
        self.net.eval()
        g = self.cfg.groups_per_batch
        sums: dict[str, float] = {}
        n = 0
        for start in range(0, self.cfg.n_val_groups, g):
            batch = _to(collate_groups([self.val_set[i] for i in range(start, min(start + g,
                                                                                   self.cfg.n_val_groups))]),
                        self.device)
            with _autocast(self.cfg, self.device):
                out = self.net(batch["img1"], batch["img2"])
            _, terms = supervised_loss(out, batch, self.cfg.loss, with_conf=False, group=self.cfg.data.pairs_per_seq)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
        self.net.train()
        return {k: v / max(n, 1) for k, v in sums.items()}

    # -- checkpoints --------------------------------------------------------------------------------------------

    def save(self) -> Path:
        """Model (fp32 safetensors) and state, each written to a temporary file first and renamed, the state last:
        a job killed at any moment leaves a complete pair (:func:`_load_state` finds it). Every rank must call it
        (the RNG states are gathered); rank 0 writes."""
        path = self.ckpt_dir / "last.safetensors"
        rngs = distributed.gather_to_rank0(_rng_state(), self.dist)
        if not self.dist.main:
            return path
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "optimizer": self.opt.state_dict(), "rng": rngs[0], "config": self.cfg.to_dict()}
        if self.dist.parallel:
            state.update(world_size=self.dist.world, rng_ranks=rngs)
        tmp_model = save_checkpoint(self.net, self.ckpt_dir / "last.tmp.safetensors", metadata={"step": str(self.step)})
        tmp = self.ckpt_dir / "last_state.pt.tmp"
        torch.save(state, tmp)
        tmp_model.replace(path)
        tmp.replace(self.ckpt_dir / "last_state.pt")
        return path

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """This rank's saved RNG state; a plain run's file (or another world size) restores rank 0 only."""
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) == self.dist.world:
            _set_rng_state(ranks[self.dist.rank])
        elif self.dist.main:
            _set_rng_state(state["rng"])
        else:  # the data do not depend on it (they are a function of the step), only random draws beyond them do
            log.warning("rank %d: checkpoint saved by %s rank(s); keeping this rank's fresh seed", self.dist.rank,
                        len(ranks) if ranks is not None else 1)

    def export(self) -> Path:
        """The deliverable: ``model.safetensors`` in the export dtype, sharded when a size limit is set."""
        for old in self.out.glob("model*.safetensors"):
            old.unlink()
        shard = None if self.cfg.max_shard_mib is None else int(self.cfg.max_shard_mib * 2**20)
        return save_checkpoint(self.net, self.out / "model.safetensors", metadata={"step": str(self.step)},
                               dtype=_DTYPES[self.cfg.export_dtype], max_shard_bytes=shard)

    # -- the loop -----------------------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _say(self, text: str) -> None:
        """A progress line on stderr, from rank 0 only."""
        if self.dist.main:
            print(text, file=sys.stderr, flush=True)

    def _state_parallelism(self) -> None:
        """Say (stderr) and record (``run_info.json``) the global batch, its split over ranks and the LR schedule."""
        c, d = self.cfg, self.dist
        info = {"world_size": d.world, "backend": distributed.backend(), "device": str(self.device),
                "global_batch_pairs": c.batch_size, "pairs_per_rank": c.batch_size // d.world,
                "groups_per_rank": self.groups_per_rank, "start_step": self.step, "steps": c.steps,
                "lr_peak": c.lr, "warmup_steps": c.warmup_steps, "lr_final": c.lr * c.min_lr_ratio,
                "grad_checkpoint": c.grad_checkpoint, "amp": c.amp}
        self._say(f"batch: {d.world} rank(s) × {info['pairs_per_rank']} pairs = global batch {c.batch_size} pairs per "
                  f"optimizer step (gradients averaged over ranks); LR per optimizer step, not rescaled with the "
                  f"world size: linear warm-up over {c.warmup_steps} steps to {c.lr:g}, cosine to "
                  f"{info['lr_final']:g} at step {c.steps}")
        if d.main:
            (self.out / "run_info.json").write_text(json.dumps(info, indent=1))

    def run(self, stop_at_step: int | None = None,
            on_step: Callable[[Trainer, dict[str, torch.Tensor]], None] | None = None) -> TrainResult:
        """Train from ``self.step`` to ``cfg.steps`` (or ``stop_at_step``, or the time budget).

        ``on_step(trainer, batch)`` runs on every rank after each optimizer step (``batch``: this rank's pairs).
        """
        cfg = self.cfg
        end = min(cfg.steps, stop_at_step) if stop_at_step is not None else cfg.steps
        self._state_parallelism()
        t0 = time.perf_counter()
        losses: list[float] = []
        by_budget = False
        last_val = None
        start_step = self.step
        window_t, window_n = time.perf_counter(), 0
        if self.step < end:
            for batch in self._loader(self.step):
                if self.step >= end:
                    break
                frac = 0.0
                if cfg.budget_schedule and cfg.time_budget_s:  # rank 0's clock, so that every rank's LR agrees
                    frac = distributed.from_rank0((time.perf_counter() - t0) / cfg.time_budget_s, self.dist,
                                                  self.device)
                lr = lr_at(cfg, self.step, frac)
                for group in self.opt.param_groups:
                    group["lr"] = lr
                batch = _to(batch, self.device)
                loss, terms = self.model(batch)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()  # under DDP: gradients averaged over ranks here
                gnorm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
                self.opt.step()
                self.step += 1
                window_n += cfg.batch_size
                # the logged terms are the mean over ranks (one small all-reduce; nothing for one process)
                vals = distributed.mean_over_ranks(torch.stack([gnorm.float(), *terms.values()]), self.dist).tolist()
                rec = {"step": self.step, "split": "train", "lr": lr, "grad_norm": vals[0],
                       **dict(zip(terms, vals[1:], strict=True))}
                losses.append(rec["loss"])
                self._log(rec)
                elapsed = time.perf_counter() - t0
                if self.step % cfg.log_every == 0 or self.step == end:
                    now = time.perf_counter()
                    sps = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    per_step = elapsed / (self.step - start_step)
                    eta = per_step * (end - self.step)
                    if cfg.time_budget_s is not None:
                        eta = min(eta, max(0.0, cfg.time_budget_s - elapsed))
                    self._say(f"step {self.step}/{end} loss {rec['loss']:.4f} (track {rec['track']:.3f} recon "
                              f"{rec['recon']:.3f} depth {rec['depth']:.3f} align {rec['align']:.3f}) lr {lr:.2e} "
                              f"{sps:.1f} samples/s ETA {eta / 60:.1f} min")
                if on_step is not None:
                    on_step(self, batch)
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    last_val = self._validate()
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
                # every rank must stop at the same step: one rank over the budget stops them all
                if cfg.time_budget_s is not None and distributed.any_rank(
                        time.perf_counter() - t0 >= cfg.time_budget_s, self.dist, self.device):
                    by_budget = self.step < end
                    self._say(f"time budget {cfg.time_budget_s:.0f} s reached at step {self.step}: stopping")
                    break
        if cfg.eval_every and (last_val is None or self.step % cfg.eval_every) and self.step > start_step:
            last_val = self._validate()
        ckpt = self.save()
        export = self.export() if self.dist.main else self.out / "model.safetensors"
        if self.dist.main:
            self._plot()
        distributed.barrier(self.dist)  # the job ends when rank 0's files are written
        self.net.eval()
        return TrainResult(self.net, self.step, losses, by_budget, ckpt, export, last_val, self.dist.main)

    def _validate(self) -> dict[str, float] | None:
        """Validation on rank 0 alone (the others go on and wait for it at the next gradient all-reduce)."""
        if not self.dist.main:
            return None
        val = self.evaluate()
        self._log({"step": self.step, "split": "val", **val})
        print(f"val @ {self.step}: loss {val['loss']:.4f} EPE track {val['epe_track']:.3f} m (dyn "
              f"{val['epe_track_dyn']:.3f}) recon {val['epe_recon']:.3f} m", file=sys.stderr, flush=True)
        return val

    def _plot(self) -> Path | None:
        """Loss curves from the whole log (all resumed segments): training loss (smoothed), validation terms."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is a convenience; never fail a run for it
            return None
        recs = [json.loads(line) for line in (self.out / "log.jsonl").read_text().splitlines() if line.strip()]
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
        path = self.out / "loss_curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def train(cfg: TrainConfig | None, out_dir: str | Path, resume: bool = False, stop_at_step: int | None = None
          ) -> TrainResult:
    """Train (or resume the run in ``out_dir``); see :class:`Trainer`."""
    return Trainer(cfg, out_dir, resume=resume).run(stop_at_step=stop_at_step)


def validate_checkpoint(cfg: TrainConfig, checkpoint: str | Path) -> dict[str, float]:
    """Score ``checkpoint`` on ``cfg``'s fixed validation set on the CPU — how the shipped model's recorded metric is
    checked, and how models trained with different data settings are compared on each other's validation sets."""
    cfg = dataclasses.replace(cfg, init=str(checkpoint), num_workers=0, device="cpu",
                              data=dataclasses.replace(cfg.data, cache_dir=None))
    with tempfile.TemporaryDirectory() as tmp:
        return Trainer(cfg, Path(tmp)).evaluate()
