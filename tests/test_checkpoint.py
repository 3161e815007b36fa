import os
import pickle

import pytest
import torch

from rnnlm import checkpoint as ckpt
from rnnlm.config import Config


def payload():
    return {"config": Config().to_dict(), "vocab": ["<eos>", "<unk>", "a"], "records": False,
            "model": {"w": torch.ones(2)}, "step": 3, "train": {}}


def test_round_trip(tmp_path):
    ckpt.save(tmp_path / "last.pt", payload())
    point = ckpt.load(tmp_path)
    assert point.step == 3 and point.vocab.itos == ("<eos>", "<unk>", "a") and torch.equal(point.model["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = Payload()
    evil.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "rnnlm-checkpoint", "version": 1, "model": evil}, path)
    with pytest.raises(ckpt.CheckpointError, match="refused to load"):
        ckpt.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "corrupted, truncated or not a checkpoint"),
    (lambda p: p.write_bytes(b"hello world, not a checkpoint"), "corrupted, truncated or not a checkpoint"),
])
def test_damaged_files_are_named(tmp_path, damage, message):
    path = tmp_path / "last.pt"
    ckpt.save(path, payload())
    damage(path)
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(path)


def test_foreign_and_future_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not an rnnlm checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    torch.save({**payload(), "format": "rnnlm-checkpoint", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ckpt.CheckpointError, match="checkpoint format 99"):
        ckpt.load(tmp_path / "future.pt")


def test_missing(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in this folder"):
        ckpt.load(tmp_path)
