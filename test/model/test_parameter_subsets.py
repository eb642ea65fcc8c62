"""The named trainable subsets that training (``--train-params``) and adaptation (``adaptation.params``) share."""

from __future__ import annotations

import pytest

from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import PARAM_SETS, St4RTrackNet


@pytest.fixture(scope="module")
def net() -> St4RTrackNet:
    return St4RTrackNet(preset("tiny_128"))


def test_subsets_nest_and_the_two_heads_are_disjoint(net):
    names = {s: set(net.subset_names(s)) for s in PARAM_SETS}
    assert names["all"] == {n for n, _ in net.named_parameters()}
    assert names["track_head"] and names["recon_head"] and not names["track_head"] & names["recon_head"]
    assert names["heads"] == names["track_head"] | names["recon_head"]
    assert names["heads"] < names["heads+last_decoder"] < names["decoders+heads"] < names["all"]
    encoder = {n for n in names["all"] if n.startswith(("patch_embed.", "enc_blocks.", "enc_norm."))}
    assert encoder and not encoder & names["decoders+heads"]
    assert all(n.startswith("downstream_head2.") for n in names["recon_head"])


def test_an_unknown_subset_is_refused_with_the_choices(net):
    with pytest.raises(ValueError, match="recon_head"):
        net.subset_names("encoder")
