"""Our network computes the official function: golden tokens and outputs, and the official key set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from st4rtrack_ros.model.config import ModelConfig, preset
from st4rtrack_ros.model.network import St4RTrackNet


@pytest.fixture(scope="module")
def tiny(golden_dir):
    meta = json.loads((golden_dir / "tiny_public_meta.json").read_text())
    net = St4RTrackNet(ModelConfig.from_dict(meta["model"])).eval()
    net.load_state_dict(torch.load(golden_dir / "tiny_public_state_dict.pt", weights_only=True), strict=True)
    io = {k: torch.from_numpy(v) for k, v in np.load(golden_dir / "tiny_public_io.npz").items()}
    return net, io, meta


def test_tiny_parameter_count_matches(tiny):
    net, _, meta = tiny
    assert sum(p.numel() for p in net.parameters()) == meta["n_params"]


def test_encoder_tokens_match_golden(tiny):
    net, io, _ = tiny
    with torch.no_grad():
        for img, ref in (("img1", "enc_tokens1"), ("img2", "enc_tokens2")):
            err = (net.encode(io[img]) - io[ref]).abs().max().item()
            assert err < 1e-5, f"{ref}: max abs error {err}"


def test_pair_outputs_match_golden(tiny):
    net, io, _ = tiny
    with torch.no_grad():
        out = net(io["img1"], io["img2"])
    for ours, ref in (("track_pts", "pts3d_1"), ("track_conf", "conf_1"), ("recon_pts", "pts3d_2"),
                      ("recon_conf", "conf_2")):
        got = getattr(out, ours)
        assert got.shape == io[ref].shape
        err = (got - io[ref]).abs().max().item()
        assert err < 1e-4, f"{ours}: max abs error {err}"


def test_outputs_change_with_weights(tiny):
    """Guards the parity test itself: a perturbed head changes the outputs well beyond the tolerance."""
    net, io, _ = tiny
    perturbed = St4RTrackNet(net.config).eval()
    perturbed.load_state_dict(net.state_dict())
    with torch.no_grad():
        perturbed.downstream_head2.dpt.head[4].bias.add_(0.01)
        err = (perturbed(io["img1"], io["img2"]).recon_pts - io["pts3d_2"]).abs().max().item()
    assert err > 1e-3


def test_vitl_has_exactly_the_official_keys_and_shapes(golden_dir):
    ref = json.loads((golden_dir / "st4rtrack_vitl_state_dict_shapes.json").read_text())
    with torch.device("meta"):
        net = St4RTrackNet(preset("vitl_512"))
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert set(ours) == set(ref["state_dict_shapes"]), set(ours) ^ set(ref["state_dict_shapes"])
    assert ours == ref["state_dict_shapes"]
    assert sum(p.numel() for p in net.parameters()) == ref["n_params"] == 571_171_208
    # Official training freezes mask_token, patch_embed and enc_blocks; everything else trains.
    frozen = net.mask_token.numel() + sum(p.numel() for m in (net.patch_embed, net.enc_blocks) for p in m.parameters())
    assert ref["n_params"] - frozen == 268_073_608


def test_dpt_alias_keys_are_one_tensor():
    net = St4RTrackNet(preset("tiny_128"))
    sd = net.state_dict()
    a = sd["downstream_head1.dpt.scratch.layer1_rn.weight"]
    b = sd["downstream_head1.dpt.scratch.layer_rn.0.weight"]
    assert a.data_ptr() == b.data_ptr()
