"""st4rtrack-adapt: rounds over a domain's bags produce a checkpoint that loads, with its provenance."""

from __future__ import annotations

import json

import torch

from st4rtrack_ros.adaptation.persistence import weights_fingerprint
from st4rtrack_ros.cli.adapt import main as adapt_main
from st4rtrack_ros.data.bag_io import write_sequence
from st4rtrack_ros.data.sequence import make_sequence
from st4rtrack_ros.model.checkpoint import load_checkpoint, read_safetensors, save_checkpoint
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet


def _domain(tmp_path, seeds):
    """A random tiny base checkpoint, one short `shift` bag per seed, and a params file that keeps one window per
    bag (an untrained model loses its tracks at once)."""
    torch.manual_seed(0)
    base = save_checkpoint(St4RTrackNet(preset("tiny_128")), tmp_path / "base.safetensors")
    bags = []
    for seed in seeds:
        write_sequence(make_sequence("shift", 10, seed=seed, width=128, height=80, n_tracks=8, n_object_tracks=2),
                       tmp_path / f"bag{seed}")
        bags.append(str(tmp_path / f"bag{seed}"))
    cfg = tmp_path / "params.yaml"
    cfg.write_text("/**:\n  ros__parameters:\n    tracking:\n      min_visible_fraction: 0.0\n"
                   "      window_size: 100\n")
    return base, bags, cfg


def _differ(a, b) -> bool:
    """Whether two checkpoints' weights differ anywhere."""
    return any(not torch.equal(x, y) for x, y in zip(load_checkpoint(a).state_dict().values(),
                                                     load_checkpoint(b).state_dict().values(), strict=True))


def test_domain_adaptation_writes_a_loadable_checkpoint(tmp_path):
    base, bags, cfg = _domain(tmp_path, (1, 2))
    out = tmp_path / "domain.safetensors"
    assert adapt_main([*bags, "--checkpoint", str(base), "--out", str(out), "--every", "6", "--steps", "1",
                       "--device", "cpu", "--config", str(cfg)]) == 0
    load_checkpoint(out)
    _, meta = read_safetensors(out)
    assert meta["base_id"] == weights_fingerprint(load_checkpoint(base))
    assert int(meta["rounds"]) >= 2 and json.loads(meta["bags"]) == bags
    history = json.loads(out.with_suffix(".history.json").read_text())
    assert len(history) == int(meta["rounds"])
    # weights differ from the base only if a round was accepted
    assert _differ(out, base) == (int(meta["accepted"]) > 0)


def test_validation_bags_keep_only_rounds_that_lower_their_loss(tmp_path):
    """With --val-bags a round its window accepted survives only if the held-out bags' loss falls: the kept
    validation losses strictly decrease, and the checkpoint differs from the base exactly when one was kept."""
    base, bags, cfg = _domain(tmp_path, (1, 2, 3))
    out = tmp_path / "domain.safetensors"
    assert adapt_main([*bags[:2], "--val-bags", bags[2], "--checkpoint", str(base), "--out", str(out),
                       "--every", "3", "--steps", "2", "--lr", "1e-3", "--device", "cpu", "--config", str(cfg)]) == 0
    _, meta = read_safetensors(out)
    history = json.loads(out.with_suffix(".history.json").read_text())
    checked = [h for h in history if h["accepted"]]
    assert checked and all("val" in h for h in checked)  # every accepted round was put to the validation bags
    kept = [h["val"] for h in checked if h["kept"]]
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == len(kept)
    assert int(meta["val_kept"]) == len(kept) and json.loads(meta["val_bags"]) == [bags[2]]
    assert _differ(out, base) == bool(kept)
