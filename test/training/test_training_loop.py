"""Training machinery on tiny_128 on the CPU: the loss falls, resume is exact, the time budget leaves a loadable
checkpoint, the CLI runs and exports shards."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from st4rtrack_ros.cli import train as cli
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.data.targets import pair_targets
from st4rtrack_ros.model.checkpoint import load_checkpoint, save_checkpoint
from st4rtrack_ros.model.config import preset as model_preset
from st4rtrack_ros.model.network import St4RTrackNet
from st4rtrack_ros.training.config import TrainConfig, lr_at
from st4rtrack_ros.training.data import TRAIN_SEED_BASE, DataConfig, PairGroups, collate_groups, group_plan
from st4rtrack_ros.training.loop import train

# Small images keep the tests fast; the network runs at any multiple of the patch size.
DATA = DataConfig(width=64, height=48, seq_len=8, max_gap=4, pairs_per_seq=2, p_self=0.3)
BASE = TrainConfig(model_preset="tiny_128", batch_size=2, lr=1e-3, warmup_steps=2, eval_every=0, n_val_groups=1,
                   log_every=1000, data=DATA)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core box OpenMP spin-waits make them
    50× slower; one thread keeps this file fast and its timings stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_groups_have_exact_labels_and_disjoint_seeds():
    item = PairGroups(DATA)[3]
    preset, seed, anchor, frames = group_plan(DATA, "train", 3)
    seq = make_sequence(preset, DATA.seq_len, seed, DATA.width, DATA.height, n_tracks=0, n_object_tracks=0)
    ref = pair_targets(seq.scene, seq.k, DATA.width, DATA.height, anchor, frames)
    np.testing.assert_allclose(item["track_pts"], ref.track_pts, atol=1e-4)
    np.testing.assert_allclose(item["recon_pts"], ref.recon_pts, atol=1e-4)
    assert (item["track_valid"] == ref.track_valid).all() and (item["recon_valid"] == ref.recon_valid).all()
    assert (item["track_dyn"] == ref.dynamic).all()
    assert list(item["is_self"]) == [j == anchor for j in frames]
    assert all(group_plan(DATA, "train", g)[1] >= TRAIN_SEED_BASE for g in range(50))
    assert {group_plan(DATA, "val", g)[1] for g in range(8)} == set(range(8))
    assert {group_plan(DATA, "val", g)[0] for g in range(4)} == set(DATA.presets)
    weighted = dataclasses.replace(DATA, presets=("easy", "fast", "fast"))  # a repeat oversamples training only
    drawn = [group_plan(weighted, "train", g)[0] for g in range(300)]
    assert 0.55 < drawn.count("fast") / len(drawn) < 0.78
    assert [group_plan(weighted, "val", g)[0] for g in range(4)] == ["easy", "fast", "easy", "fast"]
    batch = collate_groups([item, item])
    assert batch["img1"].shape == (4, 3, 48, 64) and batch["track_pts"].shape == (4, 48, 64, 3)
    assert -1.0 <= float(batch["img2"].min()) and float(batch["img2"].max()) <= 1.0


def test_lr_schedule_warms_up_then_decays():
    cfg = dataclasses.replace(BASE, steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.01)
    assert lr_at(cfg, 0) == pytest.approx(1e-4) and lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-5) and lr_at(cfg, 40) > lr_at(cfg, 80)
    assert lr_at(cfg, 20, time_frac=1.0) == pytest.approx(1e-5)  # out of time: the decay has finished


def test_overfitting_a_fixed_batch_lowers_the_loss(tmp_path):
    cfg = dataclasses.replace(BASE, steps=30, pool_groups=1, lr=2e-3, min_lr_ratio=0.5)
    res = train(cfg, tmp_path / "run")
    first, last = res.losses[0], float(np.mean(res.losses[-5:]))
    assert len(res.losses) == 30 and last < first - 0.3 * abs(first), res.losses
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "train"] == list(range(1, 31))
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 1000


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    cfg = dataclasses.replace(BASE, steps=6)
    whole = train(cfg, tmp_path / "whole")
    part1 = train(cfg, tmp_path / "split", stop_at_step=3)
    assert part1.step == 3 and (tmp_path / "split" / "ckpt" / "last_state.pt").is_file()
    part2 = train(None, tmp_path / "split", resume=True)  # the configuration comes from the checkpoint
    assert part2.step == 6
    np.testing.assert_allclose(part1.losses + part2.losses, whole.losses, rtol=1e-5, atol=1e-6)
    for (k, a), b in zip(whole.net.state_dict().items(), part2.net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_time_budget_stop_writes_a_loadable_checkpoint(tmp_path):
    cfg = dataclasses.replace(BASE, steps=10_000, time_budget_s=0.0, eval_every=1, export_dtype="fp16")
    res = train(cfg, tmp_path / "run")
    assert res.stopped_by_budget and res.step == 1 and res.last_val is not None
    img1, img2 = torch.rand(1, 3, 48, 64) * 2 - 1, torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        ref = res.net(img1, img2)
        out = load_checkpoint(res.checkpoint, image_size=(64, 48))(img1, img2)
        half = load_checkpoint(res.export, image_size=(64, 48))(img1, img2)
    torch.testing.assert_close(out.track_pts, ref.track_pts)
    torch.testing.assert_close(out.recon_conf, ref.recon_conf)
    torch.testing.assert_close(half.recon_pts, ref.recon_pts, rtol=3e-2, atol=3e-3)


def test_cli_runs_resumes_and_shards_the_export(tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["--out", str(out), "--preset", "tiny_128", "--batch-size", "2", "--eval-every", "0",
              "--seq-len", "6", "--max-gap", "3", "--export-dtype", "fp16", "--max-shard-mib", "0.5"]
    assert cli.main([*common, "--steps", "2"]) == 0
    assert cli.main(["--out", str(out), "--resume", "--steps", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2 and all(f.stat().st_size <= 0.5 * 2**20 for f in shards)
    net = load_checkpoint(out / "model.safetensors")
    assert net.config.img_size == (128, 80)  # tiny_128's resolution: pairs are rendered at the model size
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 3 and saved["export_dtype"] == "fp16" and saved["data"]["seq_len"] == 6
    assert cli.main(["--out", str(tmp_path / "bad"), "--batch-size", "3"]) == 2


def test_disk_cache_and_workers_give_the_same_batches(tmp_path):
    data = dataclasses.replace(DATA, cache_dir=str(tmp_path / "cache"))
    fresh = PairGroups(data)[5]
    assert len(list((tmp_path / "cache").glob("train_5_*.npz"))) == 1
    cached = PairGroups(data)[5]  # a new dataset reads the file
    for k in fresh:
        np.testing.assert_array_equal(fresh[k], cached[k])
    from st4rtrack_ros.training.loop import Trainer

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        trainer = Trainer(dataclasses.replace(BASE, steps=2, num_workers=workers), tmp_path / f"w{workers}")
        return list(trainer._loader(0))

    b0, b1 = batches(0), batches(1)
    assert len(b0) == len(b1) == 2
    for x, y in zip(b0, b1, strict=True):
        for k in x:
            torch.testing.assert_close(x[k], y[k])


def test_training_the_reconstruction_head_alone_leaves_tracking_bit_identical(tmp_path):
    """``train_params="recon_head"``: only head 2 moves, so the tracking pointmaps cannot change (the point of a
    depth-only stage), while the reconstruction does."""
    torch.manual_seed(0)
    init = St4RTrackNet(model_preset("tiny_128").with_image_size(64, 48))
    save_checkpoint(init, tmp_path / "init.safetensors")
    cfg = dataclasses.replace(BASE, steps=3, lr=1e-2, train_params="recon_head",
                              init=str(tmp_path / "init.safetensors"))
    res = train(cfg, tmp_path / "run")
    before, after = init.state_dict(), res.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("downstream_head2.") for k in changed), sorted(changed)[:5]
    img1, img2 = torch.rand(1, 3, 48, 64) * 2 - 1, torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        a, b = init.eval()(img1, img2), res.net.eval()(img1, img2)
    assert torch.equal(a.track_pts, b.track_pts) and torch.equal(a.track_conf, b.track_conf)
    assert not torch.equal(a.recon_pts, b.recon_pts)
    with pytest.raises(ValueError, match="train_params"):
        dataclasses.replace(BASE, train_params="encoder_only")
