"""``st4rtrack-train`` data-parallel under ``torchrun`` (2 CPU processes, gloo) on the real tiny_128 network.

One job of 2 ranks trains a few steps and records, per rank and step, a hash of all parameters and a fingerprint of
each pair it trained on; rank 1 then kills itself (SIGKILL) as a crashed node would. The job is resumed with the
plain CLI under ``torchrun --resume``. Checked against a single-process run with the same global batch: the ranks
saw different pairs whose union is exactly the single run's batch, parameters are bit-identical across ranks after
every step, the losses agree, and the resumed job continues from the checkpoint (its first step repeats the killed
job's step exactly).

Run as a script (by ``torchrun``), this file is the worker: ``test_training_ddp.py OUT RECORDS DIE_AFTER``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from st4rtrack_ros.model.checkpoint import load_checkpoint
from st4rtrack_ros.model.config import preset as model_preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.training.config import TrainConfig
from st4rtrack_ros.training.data import DataConfig, PairGroups, collate_groups
from st4rtrack_ros.training.loop import Trainer, train
from st4rtrack_ros.training.losses import LossConfig, supervised_loss

# The tiniest useful sizes: 64×48 pairs, 2 pairs per sequence, global batch 4 = 1 sequence per rank.
DATA = DataConfig(width=64, height=48, seq_len=6, max_gap=3, pairs_per_seq=2, p_self=0.3)
CFG = TrainConfig(model_preset="tiny_128", steps=4, batch_size=4, lr=1e-3, warmup_steps=1, eval_every=0,
                  n_val_groups=1, ckpt_every=2, log_every=1000, data=DATA)
DIE_AFTER = 3  # rank 1 dies after this step; the last checkpoint is at step 2


def _fingerprints(batch: dict[str, torch.Tensor]) -> list[float]:
    """One number per pair (B,): which images it holds."""
    return (batch["img1"] + 2.0 * batch["img2"]).double().sum((1, 2, 3)).tolist()


def _param_hash(net: torch.nn.Module) -> str:
    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters())).hexdigest()


def _recorder(path: Path | None, die_after: int = 0) -> tuple[list[dict], object]:
    records: list[dict] = []

    def on_step(trainer: Trainer, batch: dict[str, torch.Tensor]) -> None:
        records.append({"step": trainer.step, "params": _param_hash(trainer.net), "pairs": _fingerprints(batch)})
        if path is not None:  # written every step: a killed rank leaves what it did
            path.write_text(json.dumps(records))
        if die_after and trainer.step == die_after:
            torch.distributed.barrier()  # rank 0 has logged and recorded this step: the kill does not race it
            if trainer.dist.rank == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    return records, on_step


def _worker(out: str, rec_dir: str, die_after: int) -> None:
    torch.set_num_threads(1)
    _, on_step = _recorder(Path(rec_dir) / f"rank{os.environ['RANK']}.json", die_after)
    Trainer(CFG, out).run(on_step=on_step)


def _torchrun(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor-interval", "0.2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_two_ranks_match_one_process_and_resume_after_a_kill(tmp_path):
    run, rec = tmp_path / "ddp", tmp_path / "records"
    rec.mkdir()
    killed = _torchrun([__file__, str(run), str(rec), str(DIE_AFTER)])
    assert killed.returncode != 0, "rank 1 killed itself: the job must fail"
    ranks = [json.loads((rec / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in ranks[1]] == list(range(1, DIE_AFTER + 1)), killed.stderr[-3000:]
    state = torch.load(run / "ckpt" / "last_state.pt", weights_only=True)
    assert state["step"] == 2 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # per-rank RNG states were saved, and they differ (seeded by rank)
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])

    # the single-process reference with the same global batch, in this process
    single_records, on_step = _recorder(None)
    single = Trainer(dataclasses.replace(CFG), tmp_path / "single")
    single_res = single.run(on_step=on_step)

    for s in range(DIE_AFTER):  # after every step: identical parameters on both ranks
        assert ranks[0][s]["params"] == ranks[1][s]["params"], f"ranks diverged at step {s + 1}"
        a, b, ref = ranks[0][s]["pairs"], ranks[1][s]["pairs"], single_records[s]["pairs"]
        assert len(a) == len(b) == 2 and not np.allclose(a, b)  # each rank its own sequence...
        np.testing.assert_allclose(a + b, ref, rtol=1e-9)  # ...together exactly the single run's batch

    # rank 0 alone wrote the log: the killed job's steps 1..3, then the resumed job's 3..4
    resumed = _torchrun(["-m", "st4rtrack_ros.cli.train", "--out", str(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "global batch 4 pairs" in resumed.stderr
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if r["split"] == "train"]
    assert steps == [1, 2, 3, 3, 4], steps
    train = [r for r in log if r["split"] == "train"]
    # the resumed job restarts from the step-2 checkpoint and repeats step 3 exactly (state fully restored)
    assert train[3]["loss"] == pytest.approx(train[2]["loss"], rel=1e-6, abs=1e-7)
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])  # printed once, by rank 0
    assert summary["step"] == 4 and len(resumed.stdout.strip().splitlines()) == 1
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["pairs_per_rank"] == 2
    assert info["start_step"] == 2

    # losses: the loss's batch statistics span both ranks, so the job's loss is the single run's (float rounding)
    ddp_loss = [r["loss"] for r in train[:3]] + [train[4]["loss"]]
    np.testing.assert_allclose(ddp_loss, single_res.losses, rtol=1e-5)
    # and the weights after 4 steps (a killed + a resumed job vs one process) agree
    net = load_checkpoint(run / "ckpt" / "last.safetensors", image_size=(DATA.width, DATA.height))
    # (AdamW normalises each update, so a parameter whose gradient is ~0 can move by up to lr on float rounding:
    # measured 55 of 933k parameters differ by > 1e-5, the whole vector by 9e-6 relative)
    p = torch.cat([t.detach().reshape(-1) for t in net.parameters()])
    q = torch.cat([t.detach().reshape(-1) for t in single_res.net.parameters()])
    assert float((p - q).norm() / q.norm()) < 1e-4
    assert float(((p - q).abs() > 1e-5).float().mean()) < 1e-3


def test_activation_checkpointing_recomputes_blocks_with_identical_gradients_and_bf16_trains(tmp_path):
    """``grad_checkpoint`` (``--grad-checkpoint``) re-runs every block in the backward pass and gives the same loss
    and gradients; off, or in eval mode, each block runs once. ``amp="bf16"`` trains on the CPU too."""
    torch.manual_seed(0)
    net = St4RTrackNet(model_preset("tiny_128").with_image_size(DATA.width, DATA.height)).train()
    batch = collate_groups([PairGroups(DATA)[0]])
    calls = []  # pre-hooks: a recomputation stops as soon as the saved tensors exist, before any post-hook
    net.enc_blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    net.dec_blocks2[-1].register_forward_pre_hook(lambda *_: calls.append(2))

    def step(flag: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        net.grad_checkpoint = flag
        net.zero_grad(set_to_none=True)
        calls.clear()
        loss, _ = supervised_loss(net(batch["img1"], batch["img2"]), batch, LossConfig(), group=DATA.pairs_per_seq)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None], list(calls)

    plain, ckpt = step(False), step(True)
    assert plain[2] == [1, 2] and sorted(ckpt[2]) == [1, 1, 2, 2]  # recomputed in the backward pass
    torch.testing.assert_close(ckpt[0], plain[0], rtol=0, atol=0)
    assert len(ckpt[1]) == len(plain[1])
    for a, b in zip(ckpt[1], plain[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        calls.clear()
        net(batch["img1"], batch["img2"])
    assert calls == [1, 2]  # inference: no checkpointing

    cfg = dataclasses.replace(CFG, batch_size=2, steps=2, ckpt_every=0, grad_checkpoint=True)
    fp32 = train(dataclasses.replace(cfg, amp="none"), tmp_path / "fp32")
    bf16 = train(dataclasses.replace(cfg, amp="bf16"), tmp_path / "bf16")
    assert all(np.isfinite(bf16.losses)) and bf16.losses != fp32.losses  # autocast really ran in bf16
    np.testing.assert_allclose(bf16.losses, fp32.losses, rtol=0.05)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
