"""Adapted weights survive a restart, belong to one base model, and a broken file is never loaded."""

from __future__ import annotations

import pytest
import torch

from st4rtrack_ros.adaptation.config import AdaptationConfig
from st4rtrack_ros.adaptation.persistence import AdaptedCheckpointError, load_adapted, weights_fingerprint
from st4rtrack_ros.adaptation.worker import AdaptationWorker, trainable_names
from st4rtrack_ros.model.config import preset
from st4rtrack_ros.model.network import St4RTrackNet


def _net(seed: int) -> St4RTrackNet:
    torch.manual_seed(seed)
    return St4RTrackNet(preset("tiny_128")).eval()


def _adapt(worker: AdaptationWorker, delta: float = 0.01) -> None:
    """Stand-in for an accepted round: change the live subset and bump the version."""
    with torch.no_grad():
        for _, q in worker._pairs:
            q.add_(delta)
    worker.version += 1
    worker.accepted += 1
    worker.rounds += 1


def test_round_trip_restores_weights_and_version(tmp_path):
    path = tmp_path / "adapted.safetensors"
    a = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path)))
    _adapt(a)
    _adapt(a)
    assert a.stop()  # saves on stop
    names = trainable_names(a.net, "heads")
    live = dict(a.net.named_parameters())
    b = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path)))
    assert b.base_id == a.base_id
    info = b.load()
    other = dict(b.net.named_parameters())
    assert all(torch.equal(live[n], other[n]) for n in names)
    assert b.version == 2 and info["accepted"] == 2 and info["config"]["params"] == "heads"
    _adapt(b)
    assert b.version == 3  # the version continues


def test_foreign_base_model_is_refused(tmp_path):
    path = tmp_path / "adapted.safetensors"
    a = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path)))
    _adapt(a)
    a.save()
    other = AdaptationWorker(_net(1), AdaptationConfig(save_path=str(path)))
    assert other.base_id != a.base_id
    with pytest.raises(AdaptedCheckpointError, match="another base model"):
        other.load()


def test_truncated_file_is_detected_and_the_old_file_survives_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "adapted.safetensors"
    a = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path)))
    _adapt(a)
    a.save()
    good = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(AdaptedCheckpointError, match="not loaded"):
        load_adapted(tmp_path / "cut.safetensors", a.base_id)
    # A crash in the middle of a later write leaves the previous file intact and no temp file behind.
    import st4rtrack_ros.adaptation.persistence as pers

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pers, "save_file", crash)
    _adapt(a)
    with pytest.raises(OSError):
        a.save()
    assert path.read_bytes() == good and list(tmp_path.glob(".*.tmp")) == []


def test_another_subset_is_refused(tmp_path):
    path = tmp_path / "adapted.safetensors"
    a = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path)))
    a.save()
    b = AdaptationWorker(_net(0), AdaptationConfig(save_path=str(path), params="decoders+heads"))
    with pytest.raises(AdaptedCheckpointError, match="subset"):
        b.load()


def test_fingerprint_sees_a_changed_weight():
    net = _net(0)
    before = weights_fingerprint(net)
    with torch.no_grad():
        net.downstream_head1.dpt.head[4].bias[0] += 1e-3
    assert weights_fingerprint(net) != before
