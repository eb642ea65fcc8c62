"""Checkpoints load from every supported format, and bad ones fail clearly without running anything."""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from st4rtrack_ros.model.checkpoint import (
    CheckpointError,
    config_from_constructor,
    load_checkpoint,
    parse_constructor,
    save_checkpoint,
)
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet

TINY_CTOR = (
    "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
    "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
    "enc_embed_dim=64, enc_depth=2, enc_num_heads=2, dec_embed_dim=48, dec_depth=10, dec_num_heads=2, "
    "dpt_hooks=[0, 5, 7, 10], layer_dims=[8, 16, 32, 64], feature_dim=32, last_dim=16)"
)
VITL_CTOR = (
    "AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
    "head_type='dpt', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
    "enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12)"
)


@pytest.fixture(scope="module")
def golden(golden_dir):
    sd = torch.load(golden_dir / "tiny_public_state_dict.pt", weights_only=True)
    io = {k: torch.from_numpy(v) for k, v in np.load(golden_dir / "tiny_public_io.npz").items()}
    return sd, io


def _assert_golden(net, io):
    with torch.no_grad():
        out = net(io["img1"], io["img2"])
    assert (out.track_pts - io["pts3d_1"]).abs().max() < 1e-4
    assert (out.recon_pts - io["pts3d_2"]).abs().max() < 1e-4


def _official_pth(path: Path, sd, ctor: str = TINY_CTOR) -> Path:
    torch.save({"model": sd, "args": argparse.Namespace(model=ctor, lr=5e-5, batch_size=8),
                "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5}]}, "epoch": 3,
                "best_so_far": np.float64(0.25)}, path)
    return path


def test_official_pth_loads_and_matches_golden(tmp_path, golden):
    sd, io = golden
    net = load_checkpoint(_official_pth(tmp_path / "ckpt.pth", sd), image_size=(128, 80))
    assert not net.training
    assert net.config.dec_depth == 10 and net.config.img_size == (128, 80)
    _assert_golden(net, io)


def test_checkpoint_without_dec_blocks2_copies_dec_blocks(tmp_path, golden):
    sd, _ = golden
    single = {k: v for k, v in sd.items() if not k.startswith("dec_blocks2.")}
    net = load_checkpoint(_official_pth(tmp_path / "one_dec.pth", single))
    for a, b in zip(net.dec_blocks.parameters(), net.dec_blocks2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_hf_folder_loads(tmp_path, golden, golden_dir):
    sd, io = golden
    folder = tmp_path / "hf"
    folder.mkdir()
    meta = json.loads((golden_dir / "tiny_public_meta.json").read_text())
    (folder / "config.json").write_text(json.dumps(meta["model"]))
    # safetensors refuses shared tensors: store one of each DPT alias pair, as an exporter would.
    save_file({k: v.contiguous() for k, v in sd.items() if ".layer_rn." not in k}, str(folder / "model.safetensors"))
    _assert_golden(load_checkpoint(folder), io)


def test_our_format_round_trips(tmp_path, golden, golden_dir):
    sd, io = golden
    net = load_checkpoint(_official_pth(tmp_path / "a.pth", sd))
    path = save_checkpoint(net, tmp_path / "ours.safetensors", {"note": "test"})
    again = load_checkpoint(path)
    assert again.config == net.config
    _assert_golden(again, io)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    payload = {"model": {}, "args": Evil()}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_constructor_string_is_never_evaluated(tmp_path, golden):
    sd, _ = golden
    marker = tmp_path / "pwned2"
    ctor = f"AsymmetricCroCo3DStereo(enc_embed_dim=__import__('os').system('touch {marker}'))"
    with pytest.raises(CheckpointError, match="non-literal"):
        load_checkpoint(_official_pth(tmp_path / "c.pth", sd, ctor))
    assert not marker.exists()


def test_clear_errors(tmp_path, golden):
    sd, _ = golden
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="unknown architecture 'ResNet50'"):
        load_checkpoint(_official_pth(tmp_path / "r.pth", sd, "ResNet50(depth=50)"))
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_checkpoint(_official_pth(tmp_path / "p.pth", sd, TINY_CTOR.replace("RoPE100", "cosine")))
    broken = dict(sd)
    del broken["enc_norm.weight"]
    broken["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): enc_norm.weight.*unexpected keys \(1\): extra"):
        load_checkpoint(_official_pth(tmp_path / "k.pth", broken))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*enc_blocks.0.attn.qkv.weight"):
        load_checkpoint(_official_pth(tmp_path / "s.pth", sd, TINY_CTOR.replace("enc_embed_dim=64",
                                                                               "enc_embed_dim=128")))
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "garbage.pth")


def test_official_constructor_gives_official_config():
    name, kw = parse_constructor(VITL_CTOR)
    assert name == "AsymmetricCroCo3DStereo" and kw["depth_mode"] == ("exp", -float("inf"), float("inf"))
    assert config_from_constructor(VITL_CTOR) == preset("vitl_512")


def test_half_precision_sharded_save_loads_back(tmp_path):
    """fp16 + shards (size-limited transfers): any shard or the plain name loads, outputs match to fp16 precision."""
    net = St4RTrackNet(preset("tiny_128")).eval()
    first = save_checkpoint(net, tmp_path / "model.safetensors", dtype=torch.float16, max_shard_bytes=100_000)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert first == shards[0] and len(shards) >= 2
    assert all(f.stat().st_size <= 100_000 for f in shards)
    img1, img2 = torch.rand(1, 3, 80, 128) * 2 - 1, torch.rand(1, 3, 80, 128) * 2 - 1
    with torch.no_grad():
        ref = net(img1, img2)
        for p in (tmp_path / "model.safetensors", shards[-1]):
            out = load_checkpoint(p)(img1, img2)
            assert next(load_checkpoint(p).parameters()).dtype == torch.float32
            assert torch.allclose(out.track_pts, ref.track_pts, rtol=2e-2, atol=2e-3)
    shards[1].unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(shards[0])
    single = save_checkpoint(net, tmp_path / "one.safetensors", dtype=torch.bfloat16)
    assert single.name == "one.safetensors" and load_checkpoint(single).config == net.config


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_or_empty_checkpoints_fail_clearly(tmp_path, golden, legacy):
    """A cut download: every cut point gives CheckpointError naming the file (never struct.error/EOFError)."""
    sd, _ = golden
    full = tmp_path / "full.pth"
    torch.save({"model": sd, "args": argparse.Namespace(model=TINY_CTOR)}, full,
               _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    for n in (0, 4, 30, 200, len(data) // 2, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=r"cut\.pth.*(empty|truncated)"):
            load_checkpoint(cut)
    net = St4RTrackNet(preset("tiny_128"))
    st = save_checkpoint(net, tmp_path / "ours.safetensors").read_bytes()
    for n in (0, 5, len(st) // 2):
        (tmp_path / "cut.safetensors").write_bytes(st[:n])
        with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
            load_checkpoint(tmp_path / "cut.safetensors")


def test_pickle_disguised_as_safetensors_is_not_run(tmp_path):
    marker = tmp_path / "pwned3"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(path)
    assert not marker.exists()
