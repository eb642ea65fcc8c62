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

The run's configuration and LR schedule are ``training.config``; the RNG and optimizer state of a resume
``training.resume_state``; the loss curves ``training.loss_curves``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from st4rtrack_ros.model.checkpoint import load_checkpoint, save_checkpoint
from st4rtrack_ros.model.config import preset as model_preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.training import distributed
from st4rtrack_ros.training.config import EXPORT_DTYPES, TrainConfig, lr_at
from st4rtrack_ros.training.data import PairGroups, collate_groups, worker_init
from st4rtrack_ros.training.loss_curves import plot_loss_curves
from st4rtrack_ros.training.losses import LOCAL, BatchReduce, supervised_loss
from st4rtrack_ros.training.resume_state import load_state, rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

_RANK_SEED = 1_000_003  # rank r seeds torch/numpy/python with seed + r·this (rank 0: the plain run's seed)


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
            state = load_state(self.ckpt_dir)
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
        a job killed at any moment leaves a complete pair (``resume_state.load_state`` finds it). Every rank must call
        it (the RNG states are gathered); rank 0 writes."""
        path = self.ckpt_dir / "last.safetensors"
        rngs = distributed.gather_to_rank0(rng_state(), self.dist)
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
            set_rng_state(ranks[self.dist.rank])
        elif self.dist.main:
            set_rng_state(state["rng"])
        else:  # the data do not depend on it (they are a function of the step), only random draws beyond them do
            log.warning("rank %d: checkpoint saved by %s rank(s); keeping this rank's fresh seed", self.dist.rank,
                        len(ranks) if ranks is not None else 1)

    def export(self) -> Path:
        """The deliverable: ``model.safetensors`` in the export dtype, sharded when a size limit is set."""
        for old in self.out.glob("model*.safetensors"):
            old.unlink()
        shard = None if self.cfg.max_shard_mib is None else int(self.cfg.max_shard_mib * 2**20)
        return save_checkpoint(self.net, self.out / "model.safetensors", metadata={"step": str(self.step)},
                               dtype=EXPORT_DTYPES[self.cfg.export_dtype], max_shard_bytes=shard)

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
            plot_loss_curves(self.out)
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
