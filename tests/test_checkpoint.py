import os
import pickle

import pytest
import torch

from rnnlm import checkpoint as ckpt
from rnnlm.config import Config, from_dict
from rnnlm.model import CharRNN
from rnnlm.vocab import Vocab

VOCAB = Vocab.from_list(["<eos>", "<unk>", "a"])


def weights(config: Config = Config()) -> dict[str, torch.Tensor]:
    return CharRNN(len(VOCAB), config.model).state_dict()


def payload(model: dict | None = None) -> ckpt.Checkpoint:
    return ckpt.Checkpoint(Config(), VOCAB, False, weights() if model is None else model, 3, None)


def test_round_trip(tmp_path):
    model = weights()
    ckpt.save([tmp_path / "last.pt"], payload(model))
    point = ckpt.load(tmp_path)
    assert point.step == 3 and point.vocab.itos == ("<eos>", "<unk>", "a")
    assert point.model.keys() == model.keys() and all(torch.equal(point.model[k], v) for k, v in model.items())
    assert point.config == Config() and point.train is None
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_the_training_state_round_trips_by_field(tmp_path):
    """What a resume reads comes back as the typed object it was saved as, the carried LSTM state a pair again."""
    config = Config()  # an LSTM: (h, c), each (layers, batch, hidden)
    state = tuple(torch.randn(config.model.num_layers, config.train.batch_size, config.model.hidden_size)
                  for _ in range(2))
    gathered = ckpt.Gathered(loss_sum=4.0, chars=2, steps=1, lr=2e-3)
    tally = ckpt.Tally(step=3, best_val=1.5, first_loss=2.0, gathered=gathered)
    training = ckpt.TrainingState({"state": {}}, {"pos": 4}, None, {"torch": [torch.get_rng_state()], "cuda": []},
                                  state, tally, ["abc"])
    ckpt.save([tmp_path / "last.pt"], ckpt.Checkpoint(Config(), VOCAB, False, weights(), 3, training))
    back = ckpt.load(tmp_path / "last.pt").train
    assert back.tally == tally and back.batcher == {"pos": 4} and back.replicas == ["abc"]
    assert isinstance(back.state, tuple) and all(torch.equal(a, b) for a, b in zip(back.state, state, strict=True))


def test_a_checkpoint_whose_tally_kept_the_record_sums_flat_still_resumes(tmp_path):
    """Checkpoints written before the record's sums had their own `Gathered` kept them beside the lasting counters:
    a resume of such a run logs its half-gathered record as the run would have."""
    training = ckpt.TrainingState({"state": {}}, {"pos": 4}, None, {"torch": [torch.get_rng_state()], "cuda": []},
                                  None, ckpt.Tally(step=3), [])
    plain = training.to_plain()
    plain["tally"] = {"step": 3, "epoch": 1, "elapsed": 9.5, "loss_sum": 6.0, "chars": 4, "seconds": 0.5,
                      "grad_sum": 1.0, "grad_max": 1.0, "steps": 2, "skipped": 1, "ended_by": ""}
    back = ckpt.TrainingState.from_plain(plain).tally
    assert (back.step, back.epoch, back.elapsed) == (3, 1, 9.5)
    assert back.gathered == ckpt.Gathered(loss_sum=6.0, chars=4, seconds=0.5, grad_sum=1.0, grad_max=1.0, steps=2,
                                          skipped=1)
    assert back.gathered.means() == {"train_loss": 1.5, "grad_norm": 1.0, "grad_norm_max": 1.0, "chars_per_sec": 8.0,
                                     "lr": None}  # which the resumed session computes from the schedule


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
    ckpt.save([path], payload())
    damage(path)
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(path)


def test_foreign_and_future_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not an rnnlm checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    torch.save({"format": "rnnlm-checkpoint", "version": 99, "model": {}}, tmp_path / "future.pt")
    with pytest.raises(ckpt.CheckpointError, match="checkpoint format 99"):
        ckpt.load(tmp_path / "future.pt")


def test_missing(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in this folder.*train first"):
        ckpt.load(tmp_path)
    (tmp_path / "runs" / "a-run").mkdir(parents=True)
    (tmp_path / "runs" / "a-run" / ckpt.LAST).write_bytes(b"")  # a folder of runs, given for one of them
    with pytest.raises(ckpt.CheckpointError, match=f"it holds runs: give one of them \\(`rnnlm runs {tmp_path / 'runs'}`"):
        ckpt.load(tmp_path / "runs")
    (tmp_path / "config.yaml").write_text("model: {cell: gru}\n")  # a run stopped before its first checkpoint
    with pytest.raises(ckpt.CheckpointError, match=f"`rnnlm train --resume {tmp_path}` continues it, or says how to "
                                                   "go on"):
        ckpt.load(tmp_path)
    from rnnlm.runs import RunLock

    with RunLock(tmp_path):  # a run training now, before its first evaluation: not "stopped", nor to resume
        with pytest.raises(ckpt.CheckpointError, match=f"it is being trained now \\(process {os.getpid()}\\) and "
                                                       "saves its first checkpoint at its first evaluation"):
            ckpt.load(tmp_path)
    (tmp_path / "step-000010.pt").write_bytes(b"")  # train.keep_last's alone
    (tmp_path / "step-000200.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=f"give one of its checkpoints, e.g. the newest: "
                                                   f"{tmp_path / 'step-000200.pt'}$"):
        ckpt.load(tmp_path)


def test_a_runs_config_given_for_its_checkpoint_names_the_run(tmp_path):
    """`rnnlm sample RUN/config.yaml` said "corrupted, truncated or not a checkpoint"."""
    ckpt.save([tmp_path / "last.pt"], payload())
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(ckpt.CheckpointError, match=f"config.yaml: a run's config.yaml, not a checkpoint; give the run "
                                                   f"itself: {tmp_path}$"):
        ckpt.load(tmp_path / "config.yaml")


def crafted(change) -> dict:
    model = weights()
    change(model)
    return model


@pytest.mark.parametrize("model, message", [
    (crafted(lambda m: m.update(extra=m.pop("decoder.bias"))), "decoder.bias is missing; extra is not part of"),
    (crafted(lambda m: m.pop("decoder.bias")), "9 tensors, where model.num_layers=2 makes 10"),
    (crafted(lambda m: m.update({"decoder.bias": torch.ones(7)})), r"decoder.bias is \(7,\), the config makes it \(3,\)"),
    (crafted(lambda m: m.update({"decoder.bias": torch.ones(3, dtype=torch.int64)})), "decoder.bias holds torch.int64, "
     "not float16, bfloat16, float32 or float64"),
    # another tool's dtypes and layouts loaded, then raised a traceback at their first use
    (crafted(lambda m: m.update({"decoder.bias": torch.ones(3).to(torch.float8_e4m3fn)})), "holds torch.float8_e4m3fn"),
    (crafted(lambda m: m.update({"decoder.bias": torch.ones(3).to_sparse()})), "decoder.bias is a sparse tensor"),
    ([torch.ones(2)], "not a mapping of names to tensors"),
    ({"decoder.bias": "rm -rf"}, "not a mapping of names to tensors"),
])
def test_weights_that_do_not_fit_their_config_are_named(tmp_path, model, message):
    """A hand-edited or crafted checkpoint fails at load with what is wrong, before any model is built."""
    ckpt.save([tmp_path / "last.pt"], payload(model))
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(tmp_path)


def test_a_config_of_a_million_layers_costs_nothing(tmp_path):
    """The shapes are checked from the config alone: a config claiming huge layers is refused without allocating."""
    point = payload()
    point.config = from_dict({"model": {"num_layers": 1_000_000, "hidden_size": 100_000}})
    ckpt.save([tmp_path / "last.pt"], point)
    with pytest.raises(ckpt.CheckpointError, match="10 tensors, where model.num_layers=1000000 makes 4000002"):
        ckpt.load(tmp_path)


def test_a_plain_pickle_is_refused_unread(tmp_path):
    path = tmp_path / "model.pkl"
    marker = tmp_path / "pwned"
    evil = Payload()
    evil.marker = marker
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(ckpt.CheckpointError, match="refused to load: a plain pickle"):
        ckpt.load(path)
    assert not marker.exists()


def flip_a_weight(path):
    """One bit of the first tensor's bytes (its sign), as a bad disk or copy would: every value stays finite."""
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename)
    at = member.header_offset  # the local header's own name and extra lengths (torch pads the extra field)
    start = at + 30 + int.from_bytes(data[at + 26:at + 28], "little") + int.from_bytes(data[at + 28:at + 30], "little")
    data[start + 3] ^= 0x80
    path.write_bytes(bytes(data))


def test_a_damaged_byte_inside_the_weights_is_caught_by_its_checksum(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save([path], payload())
    flip_a_weight(path)
    with pytest.raises(ckpt.CheckpointError, match=r"last.pt: corrupted: archive/data/\d+ fails its checksum"):
        ckpt.load(path)


@pytest.mark.parametrize("state, message", [
    (torch.zeros(2, 32, 128), "expected two tensors of shape \\(2, 32, 128\\)"),
    ((torch.zeros(2, 32, 7), torch.zeros(2, 32, 7)), "carried state does not fit its config"),
])
def test_a_carried_state_that_does_not_fit_is_named(tmp_path, state, message):
    training = ckpt.TrainingState({}, {}, None, {"torch": [], "cuda": []}, state)
    ckpt.save([tmp_path / "last.pt"], ckpt.Checkpoint(Config(), VOCAB, False, weights(), 3, training))
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(tmp_path)


def test_an_unreadable_checkpoint_is_one_line(tmp_path, monkeypatch):
    ckpt.save([tmp_path / "last.pt"], payload())
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith("last.pt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(ckpt.CheckpointError, match="last.pt: cannot be read \\(Permission denied\\)"):
        ckpt.load(tmp_path)
