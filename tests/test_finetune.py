"""Fine-tuning: a run that starts from a trained model's weights on another corpus, new characters included."""

from __future__ import annotations

import torch

from helpers import REPO, assert_user_error, cli
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.data import DataRoot
from rnnlm.finetune import start_from, transplant
from rnnlm.metrics import read_metrics
from rnnlm.model import CharRNN
from rnnlm.train import train
from rnnlm.vocab import Vocab

MODEL = ["model.cell=gru", "model.hidden_size=48", "model.num_layers=1", "train.batch_size=16", "train.seq_len=32",
         "train.lr=0.01", "train.eval_every=1000"]


def corpus(path, extra: str):
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to"]
    text = " ".join(words[(i * 7 + i // 3) % len(words)] for i in range(12_000)).replace(" mat", extra)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_fine_tuned_model_beats_a_fresh_one_on_the_new_text_and_learns_its_new_characters(tmp_path):
    first = corpus(tmp_path / "a.txt", " mat")
    second = corpus(tmp_path / "b.txt", " mq!")  # "mat" becomes "mq!": two characters the first corpus lacks
    root = DataRoot(tmp_path / "data")
    base = train(load_config(None, ["data.dataset=text", f"data.path={first}", *MODEL, "train.max_steps=300"]),
                 tmp_path / "base", root=root, progress=False)
    on_b = ["data.dataset=text", f"data.path={second}", *MODEL, "train.max_steps=40"]
    tuned = train(load_config(None, [*on_b, f"train.init_from={base.run_dir}"]), tmp_path / "tuned", root=root,
                  progress=False)
    fresh = train(load_config(None, on_b), tmp_path / "fresh", root=root, progress=False)
    assert tuned.best_val < fresh.best_val - 0.1  # what it knew of the words carries over
    point = ckpt.load(tuned.run_dir)
    assert "q" in point.vocab.itos and "!" in point.vocab.itos  # new characters got rows of their own
    start = read_metrics(tuned.run_dir)[0]
    assert start["init_from"] == str((base.run_dir / "best.pt").resolve()) and start["new_characters"] == ["!", "q"]
    assert load_config(tuned.run_dir / "config.yaml").train.init_from == str(base.run_dir)


def test_a_fine_tuned_run_started_over_says_once_where_it_came_from(tmp_path):
    """A fine-tuned run killed before its first checkpoint starts over on --resume: its metrics read as one run,
    with one record of the weights it started from."""
    root = ["--data-dir", tmp_path / "data"]
    text = corpus(tmp_path / "a.txt", " mat")
    common = [REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={text}", *MODEL, "train.max_steps=4",
              "-q", *root]
    assert cli("train", *common, "--out", tmp_path, "--name", "base")[0] == 0
    status, _, err = cli("train", *common, "--out", tmp_path, "--name", "tuned", "--init-from", tmp_path / "base")
    assert status == 0, err
    # said at the start, as the metrics' first record keeps it (it was there alone)
    said = err.splitlines()
    assert said[1].startswith("model: gru 1x48, ") and " parameters, 15 symbols (characters, <eos>, <unk>); " \
        "training split: " in said[1] and said[1].endswith(f" characters of text ({text})")  # which text: its path
    assert said[2] == (f"starting from the weights of {tmp_path / 'base' / 'best.pt'} (step 4); 0 characters new to "
                       "them")
    for name in ("last.pt", "best.pt", "status.json"):  # as if killed while its first checkpoint was written
        (tmp_path / "tuned" / name).unlink()
    assert cli("train", "--resume", tmp_path / "tuned", "-q", *root)[0] == 0
    records = read_metrics(tmp_path / "tuned" / "metrics.jsonl")
    assert [r["step"] for r in records if "init_from" in r] == [0] and records[-1]["step"] == 4
    # `rnnlm runs` tells the fine-tuned run from the one it came from, and names the file both read (it said "text")
    listed = {line.split()[0]: line.split() for line in cli("runs", tmp_path)[1].splitlines()[1:]}
    assert listed["tuned"][1:7] == ["gru", "1x48", "from", "base", "text", "a.txt"]
    assert listed["base"][1:5] == ["gru", "1x48", "text", "a.txt"]


def test_rows_move_with_their_characters_and_new_ones_start_fresh(tmp_path):
    cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=1"])
    old_vocab = Vocab.from_texts(["bd"])
    torch.manual_seed(0)
    old = CharRNN(len(old_vocab), cfg.model)
    path = tmp_path / "m.pt"
    ckpt.save([path], ckpt.Checkpoint(cfg, old_vocab, False, old.state_dict(), 5, None))
    tuned_cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=1", f"train.init_from={path}",
                                   "model.dropout=0.3"])  # the dropout is the new run's to choose
    start = start_from(tuned_cfg, Vocab.from_texts(["abcd"]))
    assert start.vocab.itos == ("<eos>", "<unk>", "a", "b", "c", "d") and start.new_characters == ["a", "c"]
    torch.manual_seed(1)
    model = CharRNN(len(start.vocab), cfg.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    transplant(model, start)
    got = model.state_dict()
    for char in "bd":  # the trained rows, at their new places
        torch.testing.assert_close(got["decoder.weight"][start.vocab.itos.index(char)],
                                   old.state_dict()["decoder.weight"][old_vocab.itos.index(char)])
        torch.testing.assert_close(got["rnn.weight_ih_l0"][:, start.vocab.itos.index(char)],
                                   old.state_dict()["rnn.weight_ih_l0"][:, old_vocab.itos.index(char)])
    for char in "ac":  # the new ones as a new model has them
        torch.testing.assert_close(got["decoder.bias"][start.vocab.itos.index(char)],
                                   fresh["decoder.bias"][start.vocab.itos.index(char)])
    torch.testing.assert_close(got["rnn.weight_hh_l0"], old.state_dict()["rnn.weight_hh_l0"])
    keep = start_from(load_config(None, ["model.hidden_size=8", "model.num_layers=1", f"train.init_from={path}",
                                         "train.init_vocab=keep"]), Vocab.from_texts(["abcd"]))
    assert keep.vocab == old_vocab


def test_a_model_section_that_differs_is_one_line_naming_the_keys(tmp_path):
    cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=1"])
    vocab = Vocab.from_texts(["ab"])
    path = tmp_path / "m.pt"
    ckpt.save([path], ckpt.Checkpoint(cfg, vocab, False, CharRNN(len(vocab), cfg.model).state_dict(), 5, None))
    text = tmp_path / "t.txt"
    text.write_text("abab" * 1000, encoding="utf-8")
    result = cli("train", REPO / "configs" / "text_lstm.yaml", f"data.path={text}", "model.dropout=0.2", "--init-from", path,
                 "--out", tmp_path / "runs", "--data-dir", tmp_path / "data", "-q")
    err = assert_user_error(result, "its model differs in model.hidden_size, model.num_layers", max_lines=1)
    assert "model.hidden_size=8" in err
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # the failed start left no folder to block its name
    assert not (tmp_path / "data").exists()  # refused before the corpus was prepared (a gigabyte takes half a minute)


def test_weights_that_hold_nan_are_refused_before_training_from_them(tmp_path):
    """Not "training diverged at step 1: lower train.lr", which blames a setting the user did not get wrong."""
    cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=1"])
    vocab = Vocab.from_texts(["ab"])
    weights = CharRNN(len(vocab), cfg.model).state_dict()
    weights["rnn.weight_hh_l0"][0, 0] = float("nan")
    path = tmp_path / "m.pt"
    ckpt.save([path], ckpt.Checkpoint(cfg, vocab, False, weights, 5, None))
    text = tmp_path / "t.txt"
    text.write_text("abab" * 1000, encoding="utf-8")
    result = cli("train", REPO / "configs" / "text_lstm.yaml", f"data.path={text}", "model.hidden_size=8", "model.num_layers=1",
                 "--init-from", path, "--out", tmp_path / "runs", "-q")
    assert_user_error(result, "train.init_from:", "rnn.weight_hh_l0 hold NaN", "start from another checkpoint")
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_model_keys_that_shape_nothing_here_may_differ(tmp_path):
    """A one-hot LSTM reads neither embed_dim nor nonlinearity: a config that sets them otherwise fine-tunes it."""
    cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=1", "model.cell=lstm"])
    vocab = Vocab.from_texts(["ab"])
    path = tmp_path / "m.pt"
    ckpt.save([path], ckpt.Checkpoint(cfg, vocab, False, CharRNN(len(vocab), cfg.model).state_dict(), 5, None))
    tuned = load_config(None, ["model.hidden_size=8", "model.num_layers=1", "model.cell=lstm", "model.embed_dim=32",
                               "model.nonlinearity=relu", f"train.init_from={path}"])
    assert start_from(tuned, vocab).vocab.itos == vocab.itos


def test_a_start_that_is_not_there_names_the_option_that_named_it(tmp_path):
    tiny = REPO / "configs" / "tiny.yaml"
    gone = tmp_path / "nosuch"
    assert_user_error(cli("train", tiny, "--init-from", gone, "--out", tmp_path),
                      f"error: --init-from {gone}: no such checkpoint or run directory")
    assert_user_error(cli("train", tiny, f"train.init_from={gone}", "--out", tmp_path),
                      f"error: train.init_from: {gone}: no such checkpoint or run directory")
    assert_user_error(cli("train", tiny, f"train.init_from={gone}", "--init-from", tmp_path / "other", "--out",
                          tmp_path), f"--init-from {tmp_path / 'other'} and train.init_from={gone} both name the "
                      "weights to start from: give one")  # the option won, unsaid
    assert list(tmp_path.iterdir()) == []  # no run folder left behind
