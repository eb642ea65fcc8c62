"""Data parallelism for ``st4rtrack-train`` under ``torchrun`` (one code path: a plain run is world size 1).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables in each process it starts.
:func:`setup` reads them, starts the process group (NCCL for CUDA devices, gloo for the CPU) and pins each rank to
``cuda:LOCAL_RANK``. Without them (a plain ``st4rtrack-train``) it does nothing and returns rank 0 of 1, and every
helper here is then the identity: no collective runs, no code path differs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from st4rtrack_ros.training.losses import LOCAL, BatchReduce


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 outside ``torchrun``)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only rank that writes logs, validation and checkpoints."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` job if there is one; returns the rank info and this rank's device.

    ``device`` is the configured one; a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process).
    """
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return DistInfo(), device
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL and the object collectives use the current device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    elif device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return info, device


def teardown() -> None:
    """Leave the process group (``cli.main`` calls it at exit); a no-op outside ``torchrun``."""
    if dist.is_initialized():
        dist.destroy_process_group()


class RankReduce(BatchReduce):
    """The loss's batch statistics over all ranks (one scalar all-reduce each; no gradient flows through them)."""

    def __init__(self, world: int) -> None:
        self.world = world

    def denominator(self, count: torch.Tensor) -> torch.Tensor:
        c = count.detach().clone()
        dist.all_reduce(c, op=dist.ReduceOp.SUM)
        return c.clamp_min(1.0) / self.world

    def max(self, x: torch.Tensor) -> torch.Tensor:
        y = x.detach().clone()
        dist.all_reduce(y, op=dist.ReduceOp.MAX)
        return y


def batch_reduce(info: DistInfo) -> BatchReduce:
    return RankReduce(info.world) if info.parallel else LOCAL


def mean_over_ranks(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """(K,) per-rank values → their mean over ranks, the same on every rank (identity for one process)."""
    if not info.parallel:
        return x
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on one (e.g. the time budget): ranks must stop at the same step."""
    if not info.parallel:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_rank0(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's value on every rank (a wall-clock quantity that must not differ between ranks)."""
    if not info.parallel:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def gather_to_rank0(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere); ``[obj]`` for one process."""
    if not info.parallel:
        return [obj]
    out: list[Any] | None = [None] * info.world if info.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(info: DistInfo) -> None:
    if info.parallel:
        dist.barrier()


def backend() -> str:
    """The process group's backend (``"none"`` for a plain run)."""
    return str(dist.get_backend()) if dist.is_initialized() else "none"
