"""Learning tests: train for seconds on the built-in data sets and check what was learned."""

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import time

import pytest
import torch

from rnnlm import checkpoint as ckpt
from rnnlm.batching import pad_records
from rnnlm.config import load_config
from rnnlm.errors import RnnlmError
from rnnlm.metrics import read_metrics
from rnnlm.model import CharRNN
from rnnlm.train import train

from helpers import REPO, TIMING, cli


def fit(tmp_path, *overrides, name="run"):
    cfg = load_config(None, ["train.log_every=10", "train.eval_every=100", *overrides])
    result = train(cfg, tmp_path / name, progress=False)
    point = ckpt.load(result.run_dir / ckpt.LAST)
    model = CharRNN(len(point.vocab), point.config.model)
    model.load_state_dict(point.model)
    return result, point, model.eval()


def anbn_accuracy(model, vocab):
    """Argmax accuracy on the positions a^n b^n determines: every b after the first, and the <eos>."""
    a, b = vocab.itos.index("a"), vocab.itos.index("b")
    records = [torch.tensor([a] * n + [b] * n) for n in range(1, 11)]
    inputs, targets = pad_records(records)
    with torch.no_grad():
        predicted = model(inputs)[0].argmax(-1)
    hits = total = 0
    for n in range(1, 11):
        for pos in list(range(n + 1, 2 * n)) + [2 * n]:  # target index: b's after the first one, then <eos>
            hits += int(predicted[n - 1, pos] == targets[n - 1, pos])
            total += 1
    return hits / total


def test_lstm_counts_anbn(tmp_path):
    _, point, model = fit(tmp_path, "data.dataset=anbn", "data.records=pad", "model.cell=lstm", "model.hidden_size=32",
                          "model.num_layers=1", "train.lr=0.01", "train.batch_size=32", "train.max_steps=600")
    assert anbn_accuracy(model, point.vocab) >= 0.99


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_fits_hello(tmp_path, cell):
    result, _, _ = fit(tmp_path, "data.dataset=hello", f"model.cell={cell}", "model.hidden_size=32", "model.num_layers=1",
                       "train.batching=sequential", "train.seq_len=16", "train.batch_size=8", "train.lr=0.01",
                       "train.max_steps=300")
    assert result.last_val < 0.05  # nats/char: every character of "hello" is determined by the one or two before


def test_gru_and_rnn_learn_anbn_structure(tmp_path):
    for cell in ("gru", "rnn"):
        result, _, _ = fit(tmp_path, "data.dataset=anbn", f"model.cell={cell}", "model.hidden_size=32", "model.num_layers=1",
                           "train.lr=0.01", "train.max_steps=300", name=cell)
        # a model that knows nothing pays log(4) = 1.39 nats/char; the a/b structure alone is worth far more
        assert result.last_val < 0.5


def test_run_directory_holds_config_metrics_and_checkpoints(tmp_path):
    result, point, _ = fit(tmp_path, "data.dataset=hello", "train.max_steps=30", "train.eval_every=10")
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "best.pt", "last.pt"} <= names
    records = read_metrics(result.run_dir)
    train_records = [r for r in records if "train_loss" in r]
    val_records = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in train_records] == [10, 20, 30]
    assert [r["step"] for r in val_records] == [10, 20, 30]
    assert set(train_records[0]) == {"step", "epoch", "train_loss", "lr", "grad_norm", "grad_norm_max", "chars_per_sec",
                                     "elapsed", "train_time"}
    assert set(val_records[0]) == {"step", "epoch", "val_loss", "bpc", "perplexity", "elapsed", "train_time"}
    assert val_records[0]["bpc"] == pytest.approx(val_records[0]["val_loss"] / math.log(2))
    assert train_records[-1]["train_loss"] < train_records[0]["train_loss"]
    assert point.step == 30 and point.vocab.itos[2:] == ("e", "h", "l", "o")


def test_same_seed_same_run(tmp_path):
    a, _, _ = fit(tmp_path, "data.dataset=hello", "train.max_steps=20", name="a")
    b, _, _ = fit(tmp_path, "data.dataset=hello", "train.max_steps=20", name="b")
    losses = lambda r: [x["train_loss"] for x in read_metrics(r.run_dir) if "train_loss" in x]  # noqa: E731
    assert losses(a) == losses(b)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    common = ["data.dataset=anbn", "train.batching=sequential", "train.bptt=random", "model.dropout=0.1",
              "train.eval_every=20", "train.log_every=5", "model.hidden_size=32", "model.num_layers=2",
              "train.seq_len=32", "train.batch_size=16"]
    full, _, _ = fit(tmp_path, *common, "train.max_steps=60", name="full")
    half, point, _ = fit(tmp_path, *common, "train.max_steps=40", name="half")
    cfg = load_config(None, ["train.max_steps=60", *common])
    train(cfg, half.run_dir, resume=ckpt.load(half.run_dir / ckpt.LAST), progress=False)
    strip = lambda r: [{k: v for k, v in x.items() if k not in TIMING}  # noqa: E731
                       for x in read_metrics(r.run_dir)]
    assert strip(half) == strip(full)


def test_a_time_budget_is_spent_training_not_building_the_kernels(tmp_path, monkeypatch):
    """The first run on a machine compiles rnnlm's C kernels (half a minute): that time is neither training time nor
    a reason to think evaluation will be slow, so a 3-second budget still trains (it stopped after one step)."""
    from rnnlm import fused

    real = fused._load.__wrapped__

    def slow_build():
        time.sleep(2)  # as a first compile would take, on a small scale
        return real()

    monkeypatch.setattr(fused, "_load", functools.cache(slow_build))
    result, _, _ = fit(tmp_path, "data.dataset=hello", "train.max_steps=null", "train.max_time=3",
                       "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4", "train.seq_len=8")
    first = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert result.stopped == "max_time" and result.step >= 20 and first["train_time"] < 2


def test_the_time_left_counts_an_epoch_budget():
    """With train.max_epochs the only budget, the progress line said nothing of the time left (or, beside a step
    budget that ends later, the later end)."""
    from rnnlm.checkpoint import Tally
    from rnnlm.console import Progress

    read, out, tally = [0.0], io.StringIO(), Tally()
    for budgets in (["train.max_steps=null"], ["train.max_steps=100000"]):
        cfg = load_config(None, [*budgets, "train.max_time=null", "train.max_epochs=2"])
        bar = Progress(cfg.train, tally, True, out, epochs=lambda: read[0])
        tally.step, tally.elapsed, read[0] = 10, 30.0, 0.5  # half an epoch in 30 s: 1.5 epochs, 90 s, to go
        bar.show(tally, {"train_loss": 2.0, "chars_per_sec": 100.0, "lr": 0.01})
        assert out.getvalue().splitlines()[-1].endswith("epoch 1/2 · 1:30 left")
        tally.step, tally.elapsed, read[0] = 0, 0.0, 0.0


def test_the_time_left_stays_in_view_across_an_evaluation():
    """After each evaluation the progress line dropped the time left until the next training record (with
    log_every 100, for a hundred steps)."""
    from rnnlm.checkpoint import Tally
    from rnnlm.console import Progress

    out, tally = Terminal(), Tally()
    bar = Progress(load_config(None, ["train.max_steps=100"]).train, tally, True, out)
    tally.step, tally.elapsed = 10, 20.0
    bar.step(tally)
    bar.show(tally, {"train_loss": 2.0, "chars_per_sec": 100.0, "lr": 0.01})
    bar.evaluating(tally)
    bar.evaluated(tally, 1.9, 2.7, 1.0)
    bar.step(tally)
    last = out.getvalue().split("\r")[-1]
    assert last.split(", ", 1)[1].startswith("3:00 left · loss 2.0000 · val 1.9000"), last


def test_a_terminal_that_says_it_is_0_wide_still_shows_the_bar(tmp_path):
    """A fresh pseudo-terminal (`script`, `docker exec -t` before its size is set) reports 0 columns, at which tqdm
    drew nothing: a run showed no progress at all."""
    import pty
    import select
    import subprocess
    import sys

    from helpers import REPO

    main, side = pty.openpty()  # 0 x 0 until someone sets its size
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "rnnlm", "train", str(REPO / "configs" / "tiny.yaml"),
                            "train.max_steps=30", "--out", str(tmp_path)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=side, env=env)
    os.close(side)
    shown, deadline = b"", time.monotonic() + 300
    with contextlib.suppress(OSError):  # read as it writes (a full pty would block it), until EIO: it has gone
        while select.select([main], [], [], max(0.0, deadline - time.monotonic()))[0] and (
                chunk := os.read(main, 1 << 16)):
            shown += chunk
    os.close(main)
    run.kill()  # if the deadline passed
    assert run.wait(timeout=300) == 0 and b"/30" in shown and b"100%|" in shown, shown[-500:]


def test_a_preview_prime_the_model_cannot_read_is_warned_of_once(tmp_path):
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=hello", "model.hidden_size=8",
                         "train.max_steps=4", "train.sample_every=2", "sample.prime=Zh9", "--out", tmp_path, "-q")
    assert status == 0 and err.count("warning: sample.prime has character(s) the model never saw, read as <unk> in "
                                     "the samples shown while training: 'Z', '9'") == 1, err


class Terminal(io.StringIO):
    """What a terminal's stderr looks like to the progress line."""

    def isatty(self) -> bool:
        return True


def trained_on_a_terminal(tmp_path, monkeypatch, columns: int, *overrides: str):
    """A run of the hello corpus shown on a terminal `columns` wide: its result, and the frames the terminal got."""
    import shutil

    from rnnlm import console

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=None: os.terminal_size((columns, 24)))
    terminal = Terminal()
    monkeypatch.setattr(console.sys, "stderr", terminal)
    result = train(load_config(None, ["data.dataset=hello", "train.sample_every=0", *overrides]), tmp_path / "run",
                   progress=True)
    return result, [f.strip("\n") for f in terminal.getvalue().split("\r") if f.strip()]


def test_on_a_terminal_the_loss_beside_the_bar_is_the_step_it_shows(tmp_path, monkeypatch):
    """The bar drawn with a training record counts the step the record was logged at (it showed the step before)."""
    import re

    _, frames = trained_on_a_terminal(tmp_path, monkeypatch, 100, "train.max_steps=9", "train.log_every=3",
                                      "train.eval_every=100", "model.hidden_size=8")
    bars = [f for f in frames if "· loss" in f or ", loss" in f]
    counts = {re.search(r"\| (\d)/9", f).group(1) for f in bars}
    assert counts and counts <= {"3", "6", "9"}, bars


def test_on_a_terminal_the_progress_line_fits_and_counts_a_time_budget_in_seconds(tmp_path, monkeypatch):
    import re

    result, frames = trained_on_a_terminal(tmp_path, monkeypatch, 80, "train.max_steps=null", "train.max_time=2",
                                           "train.log_every=1", "train.eval_every=20")
    bars = [f for f in frames if str(tmp_path) not in f]  # the run directory's line is as long as its path
    assert all(len(f) <= 80 for f in bars), max(bars, key=len)
    assert any("left · loss" in f for f in frames)  # time left first, then the loss
    assert any("evaluating" in f for f in frames) and any("· val " in f for f in frames)
    # each evaluation is kept above the bar, as lines sent to a file keep it (only the bar showed it, until the next)
    assert re.search(r"^step \d+ · val \d\.\d{4} nats/char · \d\.\d{4} bpc · evaluated in", "\n".join(frames), re.M)
    last = frames[-1]
    assert f"step {result.step}" in last and "100%" in last  # the bar counts seconds: it ends full, never jumps
    assert all(re.search(r"\| \d/2(?![.\d])", f) for f in bars if "%|" in f)  # whole seconds (it showed 1/2.0)


def test_sent_to_a_file_progress_is_one_plain_line_per_record(tmp_path, capsys):
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=30", "train.log_every=10", "train.eval_every=15",
                             "train.sample_every=0"])
    train(cfg, tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split(" · ")[0] for line in lines] == ["step 10/30", "step 15", "step 20/30", "step 30/30", "step 30"]
    assert "val" in lines[1] and "bpc" in lines[1] and "loss" in lines[0]


def test_samples_while_training_use_the_sample_settings_under_a_header(tmp_path, capsys):
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=10", "train.sample_every=5", "sample.prime=he",
                             "sample.length=12", "train.eval_every=100"])
    train(cfg, tmp_path / "run", progress=False)
    err = capsys.readouterr().err.splitlines()
    headers = [k for k, line in enumerate(err) if line.startswith("sample at step ")]
    assert [err[k] for k in headers] == ["sample at step 5 (temperature 0.8, prime 'he'):",
                                         "sample at step 10 (temperature 0.8, prime 'he'):"]
    assert all(err[k + 1].startswith("he") and len(err[k + 1]) == 2 + 12 for k in headers)


def test_a_stop_asked_for_at_a_preview_step_saves_without_drawing_the_preview(tmp_path, capsys, monkeypatch):
    """Ctrl-C at a step with a sample due drew the sample (seconds, for a long sample.length) before saving."""
    import signal

    from rnnlm.train import Trainer

    log = Trainer.log_training

    def ctrl_c_at_step_5(self, final=False):
        log(self, final)
        if self.tally.step == 5:
            signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(Trainer, "log_training", ctrl_c_at_step_5)
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=10", "train.sample_every=5", "train.log_every=1",
                             "sample.length=12", "train.eval_every=100"])
    assert train(cfg, tmp_path / "run", progress=False).stopped == "interrupted"
    assert "sample at step" not in capsys.readouterr().err
    assert ckpt.load(tmp_path / "run" / ckpt.LAST).step == 6  # a stop is agreed on with the step after it


def test_a_time_budget_leaves_room_for_the_final_evaluation(tmp_path, monkeypatch):
    """The budget counts evaluations, the final one too: a run stops when what it has spent and the final
    evaluation's expected time reach the budget (here an evaluation expected to take it all: one step)."""
    from rnnlm.train import Trainer

    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 3600.0)
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=null", "train.max_time=3600"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.stopped == "max_time" and result.step == 1


def test_a_time_budget_without_room_for_a_due_and_a_final_evaluation_ends_at_the_due_one(tmp_path, monkeypatch):
    """Room was left for the final evaluation alone: a regular one due took it, the run went on a step, evaluated
    again, and overran the budget by an evaluation (here each is expected to take 60% of the budget from step 5)."""
    from rnnlm.train import Trainer

    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 600.0 if self.tally.step >= 4 else 0.0)
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=20", "train.max_time=1000", "train.eval_every=5"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert (result.stopped, result.step) == ("max_time", 5)
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "val_loss" in r] == [5]


def test_the_room_guessed_for_the_final_evaluation_rests_on_the_fastest_step_and_leaves_half_the_budget(tmp_path):
    """On a busy machine the first steps took a second each: the guess from the mean speed so far (250,000 validation
    characters at 1,700 a second) took more than a 20 s budget, and the run ended at its second step."""
    from rnnlm.distributed import Dist
    from rnnlm.train import Trainer

    cfg = load_config(None, ["data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                             "train.seq_len=8", "train.max_steps=null", "train.max_time=20"])
    trainer = Trainer(cfg, tmp_path / "run", None, None, Dist(device=torch.device("cpu")))
    val = trainer.prepared.store.manifest["splits"]["val"]["characters"]
    trainer.fastest = val / 3 / 100  # an evaluation guessed at 100 s
    assert trainer._final_eval() == 10.0
    real_step, rooms = trainer.step, []

    def slow_first_step(batch, stop):
        if trainer.tally.step == 0:
            time.sleep(1.0)
        taken = real_step(batch, stop)
        rooms.append(trainer._final_eval())
        return taken

    trainer.fastest, trainer.step = 0.0, slow_first_step
    trainer.cfg.train.max_steps = 4
    trainer.run(progress=False)
    assert rooms[-1] < rooms[0] / 10  # from the fast steps after the first


def test_a_resumed_session_leaves_the_room_its_last_evaluation_took(tmp_path):
    """A resumed session guessed its final evaluation from the training speed, which a trial's Linux LSTM evaluated
    several times slower than the guess: 80 s more of time budget trained 4 s and evaluated for 71 s."""
    from rnnlm.distributed import Dist
    from rnnlm.train import Trainer

    result, point, _ = fit(tmp_path, *SMALL, "train.max_steps=4", "train.eval_every=2")
    took = point.train.tally.eval_seconds
    assert took is not None and took > 0
    resume = ckpt.load(result.run_dir / ckpt.LAST)
    cfg = dataclasses.replace(resume.config, train=dataclasses.replace(resume.config.train, max_steps=8))
    trainer = Trainer(cfg, result.run_dir, resume, None, Dist(device=torch.device("cpu")))
    trainer.fastest = 1e12  # the guess from the training speed would be no time at all
    assert trainer._final_eval() == took


def test_the_room_left_for_the_final_evaluation_does_not_vanish_when_every_step_is_logged(tmp_path, monkeypatch):
    """Before any evaluation, the room is the validation split read at three times the training speed; that speed
    came from the record being gathered, which is empty right after each record (with log_every=1, always), so a
    short time budget overran by a whole evaluation."""
    from rnnlm.train import Trainer

    rooms, log = [], Trainer.log_training
    monkeypatch.setattr(Trainer, "log_training", lambda self, final=False: (log(self, final),
                                                                            rooms.append(self._final_eval())))
    fit(tmp_path, "data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
        "train.seq_len=8", "train.max_steps=3", "train.log_every=1", "train.eval_every=1000")
    assert len(rooms) == 3 and all(room > 0 for room in rooms), rooms


def test_divergence_stops_with_a_message(tmp_path):
    from rnnlm.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="training diverged at step .*: lower train.lr or set train.grad_clip "
                                               "and start again$"):
        fit(tmp_path, "data.dataset=hello", "train.lr=1e30", "train.grad_clip=null", "train.optimizer=sgd",
            "train.max_steps=50")
    with pytest.raises(TrainingDiverged, match=r"lower train.lr or train.grad_clip \(now 5\) and start again$"):
        fit(tmp_path, "data.dataset=hello", "train.lr=1e30", "train.grad_clip=5", "train.optimizer=sgd",
            "train.max_steps=50", name="clipped")  # it said to set it


def test_divergence_after_a_checkpoint_names_the_new_run_that_goes_on_from_it(tmp_path):
    """A resume keeps train.lr and train.grad_clip, so "lower train.lr and resume" could not be followed."""
    from rnnlm.train import TrainingDiverged

    with pytest.raises(TrainingDiverged) as e:
        fit(tmp_path, "data.dataset=hello", "train.lr=1e30", "train.grad_clip=null", "train.optimizer=sgd",
            "train.eval_every=1", "train.max_steps=50", name="late")
    run = tmp_path / "late"
    assert str(e.value).endswith(
        f"the last good checkpoint is {run / 'last.pt'}: lower train.lr or set train.grad_clip in a new run from it, "
        f"e.g. rnnlm train {run / 'config.yaml'} --init-from {run / 'last.pt'} --out {tmp_path} train.lr=LOWER")


SMALL = ["data.dataset=hello", "model.hidden_size=16", "model.num_layers=1", "train.seq_len=16", "train.batch_size=8",
         "train.device=cpu"]


def test_max_epochs_ends_at_an_epoch_boundary_and_a_larger_budget_continues_exactly(tmp_path):
    common = [*SMALL, "train.max_steps=null", "train.log_every=1", "train.eval_every=1000"]
    one, _, _ = fit(tmp_path, *common, "train.max_epochs=1", name="one")
    two, _, _ = fit(tmp_path, *common, "train.max_epochs=2", name="two")
    assert one.stopped == two.stopped == "max_epochs"
    epochs = [r["epoch"] for r in read_metrics(two.run_dir) if "train_loss" in r]
    assert epochs == [0] * one.step + [1] * (two.step - one.step)
    cfg = load_config(None, ["train.log_every=10", "train.eval_every=100", *common, "train.max_epochs=2"])
    train(cfg, one.run_dir, resume=ckpt.load(one.run_dir / ckpt.LAST), progress=False)
    losses = lambda r: [x["train_loss"] for x in read_metrics(r.run_dir) if "train_loss" in x]  # noqa: E731
    assert losses(one) == losses(two)


def test_patience_stops_when_the_validation_loss_stops_improving(tmp_path):
    # gradients clipped to 1e-30: the weights never change, so the first evaluation stays the best
    result, _, _ = fit(tmp_path, *SMALL, "train.grad_clip=1e-30", "train.eval_every=2", "train.patience=2",
                       "train.max_steps=100")
    assert result.stopped == "patience" and result.step == 6
    assert [r["step"] for r in read_metrics(result.run_dir) if "val_loss" in r] == [2, 4, 6]


def test_keep_last_keeps_the_newest_numbered_checkpoints(tmp_path):
    result, _, _ = fit(tmp_path, *SMALL, "train.max_steps=30", "train.eval_every=5", "train.keep_last=2")
    assert sorted(p.name for p in result.run_dir.glob("step-*.pt")) == ["step-000025.pt", "step-000030.pt"]
    assert ckpt.load(result.run_dir / "step-000025.pt").step == 25


def test_a_budget_spent_mid_record_still_logs_its_steps(tmp_path):
    result, _, _ = fit(tmp_path, *SMALL, "train.max_steps=25", "train.log_every=10", "train.eval_every=10")
    records = read_metrics(result.run_dir)
    assert [r["step"] for r in records if "train_loss" in r] == [10, 20, 25]
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 25]


def test_the_last_steps_record_comes_before_the_last_evaluation(tmp_path):
    """The final step is an evaluation step but not a logging one: its training record (steps 21-30) was written after
    the evaluation's, so a reader taking records in order saw the run end on a training record."""
    result, _, _ = fit(tmp_path, *SMALL, "train.max_steps=30", "train.log_every=20", "train.eval_every=15")
    records = [("train" if "train_loss" in r else "val", r["step"]) for r in read_metrics(result.run_dir)]
    assert records == [("val", 15), ("train", 20), ("train", 30), ("val", 30)]


def test_bf16_trains_on_a_cpu(tmp_path):
    result, _, _ = fit(tmp_path, "data.dataset=hello", "model.hidden_size=32", "model.num_layers=1", "train.seq_len=16",
                       "train.batch_size=8", "train.lr=0.01", "train.max_steps=300", "train.precision=bf16",
                       "train.device=cpu")
    assert result.last_val < 0.1  # nats/char; knowing nothing costs log(4) = 1.39


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(RnnlmError, match="^train.precision=fp16 needs a CUDA device; on a CPU use train.precision=auto, bf16 or fp32$"):
        fit(tmp_path, *SMALL, "train.precision=fp16")


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # compiling unrolls the recurrence over the window: a short window keeps the compile to a minute or less
    common = ["data.dataset=hello", "model.cell=rnn", "model.hidden_size=8", "model.num_layers=1", "train.seq_len=4",
              "train.batch_size=4", "train.max_steps=6", "train.log_every=1", "train.eval_every=6", "train.device=cpu"]
    from torch._dynamo.utils import counters

    eager, _, _ = fit(tmp_path, *common, name="eager")
    counters.clear()
    compiled, _, _ = fit(tmp_path, *common, "train.compile=true", name="compiled")
    losses = lambda r: [x["train_loss"] for x in read_metrics(r.run_dir) if "train_loss" in x]  # noqa: E731
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-5)
    # compiled once, as the README says: the first window's state (None, sequential batching) compiled it again
    assert counters["stats"]["unique_graphs"] == 1


def test_evaluation_scores_at_most_eval_chars_of_the_validation_split(tmp_path):
    from rnnlm.data import DataRoot
    from rnnlm.evaluate import score_stream
    from rnnlm.corpus import evaluate_split, prepare

    text = "".join("abcdefgh"[(i * 7 + i // 13) % 8] for i in range(40_000))  # val: 2,000 characters
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    common = ["data.dataset=text", f"data.path={tmp_path / 't.txt'}", "model.hidden_size=8", "model.num_layers=1"]
    root = DataRoot(tmp_path / "data")
    budget, whole = load_config(None, [*common, "train.eval_chars=300"]), load_config(None, [*common, "train.eval_chars=null"])
    prepared = prepare(budget, root, progress=False)
    torch.manual_seed(0)
    model = CharRNN(len(prepared.vocab), budget.model)
    prefix = evaluate_split(model, budget, prepared, "val")
    assert prefix.chars == 300  # the first 300 characters after the split's first, which they are read after
    assert prefix.nll == pytest.approx(score_stream(model, prepared.vocab.encode(text[36_000:36_301])).nll, abs=1e-9)
    assert evaluate_split(model, whole, prepared, "val").chars == 1_999
    result = train(load_config(None, [*common, "train.eval_chars=300", "train.max_steps=4", "train.eval_every=4",
                                      "train.batch_size=4", "train.seq_len=16"]), tmp_path / "run", root=root,
                   progress=False)
    assert [r["step"] for r in read_metrics(result.run_dir) if "val_loss" in r] == [4]


def test_train_threads_is_how_many_cores_training_uses(tmp_path):
    """On a shared machine train.threads leaves cores to others: torch's pool (which the C loops share) is set."""
    try:
        status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.threads=2", "train.max_steps=2",
                             "--out", tmp_path, "-q")
        assert status == 0 and torch.get_num_threads() == 2, err
    finally:
        torch.set_num_threads(1)  # conftest's setting for the other tests


def test_an_empty_validation_split_is_said_at_the_start_and_in_the_summary(tmp_path):
    """With nothing to validate on, a run logs no validation loss and saves no best.pt: the user hears it before
    training, not as `val nan` at the first evaluation."""
    (tmp_path / "t.txt").write_text("hello world, " * 400, encoding="utf-8")
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={tmp_path / 't.txt'}",
                         "data.splits=[1.0,0.0,0.0]", "train.max_steps=4", "train.eval_every=2", "--out", tmp_path,
                         "--name", "run", "--data-dir", tmp_path / "data", "-q")
    assert status == 0, err
    assert ("warning: the validation split has nothing to score, so the run logs no validation loss and saves no "
            "best.pt; give data.splits a larger val share to measure it") in err.splitlines()
    assert "done at step 4: no validation loss (nothing to score) (max steps reached)" in err
    assert not (tmp_path / "run" / "best.pt").exists()
    (tmp_path / "t20.txt").write_text("a" * 18 + "z\n", encoding="utf-8")  # val: one 'z' the model never saw
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text",
                         f"data.path={tmp_path / 't20.txt'}", "train.batch_size=1", "train.seq_len=1",
                         "train.max_steps=2", "--out", tmp_path, "--data-dir", tmp_path / "data", "-q")
    assert status == 0 and "the validation split has nothing to score" in err, err
    assert "count in the val loss" not in err  # it said both
    status, out, err = cli("sample", tmp_path / "run", "-n", "5")  # its last.pt, as the README says
    assert status == 0 and len(out) == 6, err
    status, _, err = cli("train", "--resume", tmp_path / "run", "train.max_steps=6")  # the progress lines too
    assert status == 0 and "step 6 · no validation loss (nothing to score) · evaluated in" in err and "nan" not in err, err


def test_a_step_fp16_skipped_for_an_overflow_leaves_the_gradient_norms_finite():
    """fp16's loss scaler skips a step whose gradient overflowed (a few at the start of every fp16 run): the record's
    mean and largest norm are over the steps taken, and the skipped ones are counted, not turned into null."""
    from rnnlm.checkpoint import Tally

    tally = Tally()
    for norm in (1.0, math.inf, 3.0):
        tally.count_step(0, 0.1, 2.0, 10, norm, 1e-3)
    assert (tally.gathered.steps, tally.gathered.skipped) == (3, 1)
    assert tally.gathered.means()["grad_norm"] == 2.0 and tally.gathered.means()["grad_norm_max"] == 3.0
    every = Tally()
    for _ in range(2):  # a record whose steps were all skipped measured no norm: not a norm of 0
        every.count_step(0, 0.1, 2.0, 10, math.inf, 1e-3)
    assert all(math.isnan(every.gathered.means()[k]) for k in ("grad_norm", "grad_norm_max"))


def test_a_run_that_ends_at_an_evaluation_writes_its_last_checkpoint_once(tmp_path, monkeypatch):
    """The evaluation at the last step saved last.pt; writing it again as the run ends (a big model's checkpoint
    takes seconds) is needed only when what a resume reads of it changed: a last record logged after it (a time or
    epoch budget, found spent after the step), a preview's time, or a time budget that ended the run."""
    written = []
    save = ckpt.save
    monkeypatch.setattr(ckpt, "save", lambda paths, point: (written.extend(p.name for p in paths), save(paths, point)))
    base = ["data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4", "train.seq_len=8",
            "train.max_time=null", "train.eval_every=2", "train.max_steps=4"]
    train(load_config(None, [*base, "train.log_every=2"]), tmp_path / "even", progress=False)
    assert written.count(ckpt.LAST) == 2  # at steps 2 and 4
    written.clear()
    run = train(load_config(None, [*base, "train.log_every=3"]), tmp_path / "odd", progress=False)
    assert written.count(ckpt.LAST) == 2  # the last step's record is logged before its evaluation saves
    assert ckpt.load(run.run_dir / ckpt.LAST).train.tally.gathered.steps == 0
    written.clear()
    train(load_config(None, [*base, "train.log_every=2", "train.sample_every=4", "sample.length=5"]),
          tmp_path / "preview", progress=False)
    assert written.count(ckpt.LAST) == 3  # the preview's time after the evaluation is in the elapsed a resume reads


def test_an_evaluation_cut_short_counts_in_the_elapsed_time(tmp_path, monkeypatch):
    """train.max_time counts wall-clock time, evaluations included: one a stop signal cut short took its seconds too
    (the resumed run does it again, and counts that one as well)."""
    from rnnlm.distributed import Dist
    from rnnlm.runtime import StopSignal
    from rnnlm.train import Trainer

    cfg = load_config(None, ["data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                             "train.seq_len=8", "train.max_time=null", "train.eval_every=2", "train.max_steps=4"])
    trainer = Trainer(cfg, tmp_path / "run", None, None, Dist(device=torch.device("cpu")))

    def cut_after_a_while(split):
        time.sleep(0.5)
        raise StopSignal.Cut

    monkeypatch.setattr(trainer, "evaluate", cut_after_a_while)
    assert trainer.run(progress=False).stopped == "interrupted"
    saved = ckpt.load(tmp_path / "run" / ckpt.LAST).train.tally
    assert saved.step == 2 and saved.last_eval_step != 2 and saved.elapsed >= 0.5


def test_a_resume_owing_an_evaluation_shows_the_preview_due_with_it(tmp_path, monkeypatch):
    """A stop signal cut the evaluation of a step that also had a preview due: the resumed run does that evaluation
    first, and then shows the preview (it showed none)."""
    from rnnlm.distributed import Dist
    from rnnlm.runtime import StopSignal
    from rnnlm.train import Trainer

    cfg = load_config(None, ["data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                             "train.seq_len=8", "train.max_time=null", "train.eval_every=2", "train.max_steps=3",
                             "train.sample_every=2", "sample.length=5"])
    first = Trainer(cfg, tmp_path / "run", None, None, Dist(device=torch.device("cpu")))
    previews = []
    monkeypatch.setattr(Trainer, "preview", lambda self: previews.append(self.tally.step) or "a preview")

    def cut(split):
        raise StopSignal.Cut

    monkeypatch.setattr(first, "evaluate", cut)
    assert first.run(progress=False).stopped == "interrupted"
    assert previews == []
    resumed = Trainer(cfg, tmp_path / "run", ckpt.load(tmp_path / "run" / ckpt.LAST), None,
                      Dist(device=torch.device("cpu")))
    assert resumed.run(progress=False).stopped == "max_steps"
    assert previews == [2]


def test_the_elapsed_time_a_checkpoint_keeps_counts_its_evaluation(tmp_path, monkeypatch):
    """train.max_time counts evaluations, over every session: the final one's time is in the checkpoint a resume
    reads (it was left out, and a resumed run got that much extra)."""
    from rnnlm.train import Trainer

    evaluate = Trainer.evaluate

    def slow(self, split):
        time.sleep(0.5)
        return evaluate(self, split)

    monkeypatch.setattr(Trainer, "evaluate", slow)
    result, _, _ = fit(tmp_path, "data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                       "train.seq_len=8", "train.max_steps=4", "train.eval_every=2")
    assert ckpt.load(result.run_dir / ckpt.LAST).train.tally.elapsed >= 1.0  # two evaluations of half a second


def test_an_infinite_time_budget_is_no_time_budget(tmp_path):
    """train.max_time: .inf is a limit never reached (as null); the progress line had int(inf) to show."""
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=null", "train.max_time=.inf",
                         "train.max_epochs=1", "train.seq_len=64", "train.batch_size=64", "--out", tmp_path)
    assert status == 0, err
    assert "(max epochs reached)" in err


def test_a_training_step_reads_from_the_device_once(tmp_path):
    """Each read of a tensor's value on a GPU waits for the GPU to finish its queue; a step read seven values one by
    one (the character count, the gradient norm, the loss, the exchange's four fields). rnnlm's own reads in a step
    are counted here on the CPU, where the same code runs: one, after the exchange."""
    import sys
    from collections import Counter

    from torch.overrides import TorchFunctionMode

    from rnnlm.distributed import Dist
    from rnnlm.runtime import StopSignal
    from rnnlm.train import Trainer, _draw

    reads = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
             torch.Tensor.__bool__, torch.Tensor.__index__}

    class CountReads(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.where = Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            caller = sys._getframe(1)
            while caller.f_code.co_filename.endswith(("_tensor.py", "overrides.py")):
                caller = caller.f_back  # past torch's Python side of a Tensor method, to the line that called it
            if func in reads and os.sep + "rnnlm" + os.sep in caller.f_code.co_filename:
                self.where[f"{caller.f_code.co_filename}:{caller.f_lineno}"] += 1
            return func(*args, **(kwargs or {}))

    cfg = load_config(None, ["data.dataset=hello", "model.hidden_size=8", "model.num_layers=1", "train.batch_size=4",
                             "train.seq_len=8", "train.batching=sequential", "train.max_time=null"])
    trainer = Trainer(cfg, tmp_path / "run", None, None, Dist(device=torch.device("cpu")))
    trainer.tick = time.perf_counter()
    with StopSignal() as stop:
        batch = _draw(trainer.batcher, None)
        with CountReads() as counted:
            trainer.step(batch, stop)
    assert sum(counted.where.values()) == 1, counted.where
    assert trainer.tally.step == 1 and math.isfinite(trainer.tally.gathered.loss_sum)


def test_padded_records_count_their_longest_record_in_the_memory_a_run_needs(tmp_path, monkeypatch):
    """data.records=pad reads each record whole: one 300,000-character line (a log file among the names) makes a
    step that wide, which the check counted as train.seq_len; the run took gigabytes instead of being refused."""
    from rnnlm import model

    monkeypatch.setattr(model, "available_memory", lambda device: 2 * 10**9)
    (tmp_path / "names.txt").write_text("".join(f"name{i}\n" for i in range(40)) + "x" * 300_000 + "\n",
                                        encoding="utf-8")
    args = ["train", REPO / "configs" / "tiny.yaml", "data.dataset=names", f"data.path={tmp_path / 'names.txt'}",
            "data.records=pad", "data.splits=[1.0, 0.0, 0.0]", "model.hidden_size=512", "train.batch_size=1",
            "train.max_steps=1", "--out", tmp_path, "--data-dir", tmp_path / "data", "-q"]
    status, _, err = cli(*args)
    assert status == 2 and "records of up to 300,000 characters read whole" in err and "data.records=pack" in err, err


def test_a_resume_that_no_longer_fits_is_told_to_start_a_new_run_from_its_weights(monkeypatch):
    """A resume keeps the batch size, the window and the model: the refusal's fix is a new run from the weights."""
    from rnnlm import model

    monkeypatch.setattr(model, "available_memory", lambda device: 10**6)
    cfg = load_config(None, []).model
    with pytest.raises(RnnlmError, match=r"train.seq_len in a new run from this one's weights \(rnnlm train CONFIG "
                                         r"--init-from RUN\)$"):
        model.check_fits(100, cfg, torch.device("cpu"), 32, 64, resumed=True)


def test_a_warmup_longer_than_the_run_is_warned_of(tmp_path):
    """train.warmup_steps=5000 with train.max_steps=400 trained at a rate that never reached train.lr, unsaid (a
    user trial: val 0.56 where 0.22)."""
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=3", "train.warmup_steps=4",
                         "--out", tmp_path, "--name", "run", "-q")
    assert status == 0, err
    assert ("warning: train.warmup_steps=4 is above train.max_steps=3, so the learning rate rises for the whole run "
            "and never reaches train.lr=0.01; lower train.warmup_steps") in err.splitlines()
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=3", "train.warmup_steps=3",
                         "--out", tmp_path, "--name", "run2", "-q")  # its last step at train.lr: no word
    assert status == 0 and "train.warmup_steps" not in err, err


def test_an_fp16_gradient_that_keeps_overflowing_ends_the_run(tmp_path):
    """The scaler halves its scale at each skipped step, without a floor: a gradient that overflowed at every step
    skipped every step to the end of the budget, writing checkpoints of unchanged weights."""
    from types import SimpleNamespace

    from rnnlm.train import OVERFLOWS_IN_A_ROW, Trainer, TrainingDiverged

    trainer = SimpleNamespace(overflows=0, tally=SimpleNamespace(first_loss=2.0, step=0), run_dir=tmp_path,
                              scaler=SimpleNamespace(is_enabled=lambda: True),
                              cfg=SimpleNamespace(train=SimpleNamespace(grad_clip=None)))
    for _ in range(3):  # a scale too high at first: a few skipped steps, then one taken, counts again from 0
        Trainer._check_divergence(trainer, 2.0, math.inf)
    Trainer._check_divergence(trainer, 2.0, 1.0)
    for _ in range(OVERFLOWS_IN_A_ROW - 1):
        Trainer._check_divergence(trainer, 2.0, math.inf)
    with pytest.raises(TrainingDiverged, match=f"the fp16 gradient overflowed {OVERFLOWS_IN_A_ROW} steps in a row"):
        Trainer._check_divergence(trainer, 2.0, math.inf)


def test_settings_the_rest_of_the_config_gives_nothing_to_do_are_warned_of(tmp_path):
    """A relu asked of an LSTM, momentum of Adam, an embedding width with one-hot input, a decay rate without
    char-rnn's schedule: each trained without a word (a user trial asked for a relu LSTM and got a tanh one)."""
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=1", "model.cell=lstm",
                         "model.nonlinearity=relu", "train.momentum=0.9", "model.embed_dim=7", "train.decay_rate=0.5",
                         "--out", tmp_path, "--name", "run", "-q")
    assert status == 0, err
    assert [line for line in err.splitlines() if "does nothing" in line] == [
        "warning: model.nonlinearity=relu does nothing with model.cell=lstm; it is for model.cell=rnn",
        "warning: model.embed_dim=7 does nothing with model.encoding=onehot; it is for model.encoding=embedding",
        "warning: train.momentum=0.9 does nothing with train.optimizer=adam; it is for train.optimizer=sgd or rmsprop",
        "warning: train.decay_rate=0.5 does nothing with train.schedule=constant; it is for train.schedule=char_rnn"]
    status, out, err = cli("config", REPO / "configs" / "tiny.yaml", "model.cell=gru", "model.forget_bias=0")
    assert status == 0 and "model.forget_bias=0.0 does nothing with model.cell=gru" in err and "warning" not in out
    for config in sorted((REPO / "configs").glob("*.yaml")):  # what the project ships says nothing of the kind
        assert cli("config", config)[2] == "", config


def test_validation_characters_the_training_split_lacks_are_warned_of_at_the_start(tmp_path):
    """The vocabulary is the training split's: characters only the val split holds were scored as <unk> in every
    val loss, unsaid until `rnnlm eval` (a user trial compared val losses with char-rnn's, whose vocabulary is the
    whole file's)."""
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 400 + "xyzx", encoding="utf-8")  # x, y, z: in the last 5% alone
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={text}",
                         "data.splits=[0.9,0.1,0.0]", "train.max_steps=1", "--out", tmp_path, "--name", "run", "-q")
    assert status == 0, err
    assert ("warning: the val split holds 4 occurrences of 3 characters the model's vocabulary (the training "
            "split's) lacks ('x', 'y', 'z'): read as <unk>, they count in the val loss") in err.splitlines()
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={text}",
                         "train.max_steps=1", "--out", tmp_path, "--name", "quiet", "-q")  # the test split's: unsaid
    assert status == 0 and "val split holds" not in err, err


def test_a_fine_tuned_run_keeping_its_vocabulary_names_the_model_s_vocabulary_in_the_warning(tmp_path):
    """With train.init_vocab=keep the vocabulary is the weights', not the training split's: the warning said the
    training split lacked a character it holds hundreds of times (a review)."""
    base, tuned = tmp_path / "a.txt", tmp_path / "b.txt"
    base.write_text("abcab" * 400, encoding="utf-8")
    tuned.write_text("abxcab" * 400, encoding="utf-8")
    common = [REPO / "configs" / "tiny.yaml", "data.dataset=text", "train.max_steps=1", "--out", tmp_path, "-q"]
    assert cli("train", *common, f"data.path={base}", "--name", "base")[0] == 0
    status, _, err = cli("train", *common, f"data.path={tuned}", f"train.init_from={tmp_path / 'base'}",
                         "train.init_vocab=keep", "--name", "tuned")
    assert status == 0, err
    assert any(line.startswith("warning: the val split holds ") and "the model's vocabulary lacks ('x')" in line
               for line in err.splitlines()), err


def test_an_evaluation_that_leaves_no_room_for_a_step_and_the_final_one_is_the_final_one(tmp_path, monkeypatch):
    """The time check before an evaluation can only guess its cost: a Linux run's first evaluation took longer than
    guessed, the run trained one more step and evaluated again (steps 100 and 101), past its budget. Here evaluations
    are guessed free until one has been made, then known to take the whole budget."""
    from rnnlm.train import Trainer

    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 0.0 if self.tally.eval_seconds is None else 1000.0)
    cfg = load_config(None, ["data.dataset=hello", "train.max_steps=20", "train.max_time=1000", "train.eval_every=5"])
    result = train(cfg, tmp_path / "run", progress=False)
    assert (result.stopped, result.step) == ("max_time", 5)
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "val_loss" in r] == [5]
    resumed = train(cfg, tmp_path / "run", resume=ckpt.load(tmp_path / "run" / "last.pt"), progress=False)
    assert resumed.nothing_to_do and resumed.step == 5  # a session that ended on its time budget has spent it


def test_a_new_run_on_windows_line_ends_is_told_the_model_learns_the_carriage_return(tmp_path):
    """A trial trained on a CR LF file and sampled carriage returns: nothing had said the model learns them."""
    (tmp_path / "crlf.txt").write_bytes(b"hello there\r\n" * 300)
    (tmp_path / "lf.txt").write_bytes(b"hello there\n" * 300)
    (tmp_path / "cr.txt").write_bytes(b"hello there\r" * 300)  # classic Mac: "0 of 0 lines end in \r\n"
    said = {}
    for name in ("crlf", "lf", "cr"):
        status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text",
                             f"data.path={tmp_path / f'{name}.txt'}", "train.max_steps=1", "--out", tmp_path,
                             "--data-dir", tmp_path / "data", "-q")
        assert status == 0, err
        said[name] = err
    assert ("note: the training split holds 270 carriage returns (\\r) beside 270 newlines: the model learns \\r as "
            "a character and writes it; to train on \\n alone, convert the files first (dos2unix for \\r\\n line "
            "ends, mac2unix for \\r alone)") in said["crlf"], said["crlf"]
    assert "holds 270 carriage returns (\\r) beside 0 newlines" in said["cr"], said["cr"]
    assert "carriage returns" not in said["lf"]


def test_a_stop_while_the_first_checkpoints_are_written_leaves_a_run_that_resumes(tmp_path, monkeypatch):
    """A second Ctrl-C while best.pt was written, before last.pt: "stopped before the run saved anything", and the run
    that held best.pt could not be resumed (nor after a disk that filled up there)."""
    real = ckpt._write

    def stopped_at_best(path, data):
        if path.name == ckpt.BEST:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(ckpt, "_write", stopped_at_best)
    args = (REPO / "configs" / "tiny.yaml", "train.max_steps=4", "train.eval_every=2", "--out", tmp_path, "--name", "r")
    status, _, err = cli("train", *args)
    assert status == 130 and "stopped at once: the steps since the last checkpoint are lost; resume with" in err, err
    monkeypatch.undo()
    status, _, err = cli("train", "--resume", tmp_path / "r", "-q")
    assert status == 0 and (tmp_path / "r" / "best.pt").exists(), err


def test_a_checkpoint_that_cannot_be_written_says_how_to_go_on(tmp_path, monkeypatch):
    """A full disk said `last.pt: could not write the checkpoint (No space left on device); the previous last.pt is
    intact` and no more: not that the run resumes once there is room, nor, before its first checkpoint, that its
    folder was removed."""
    import errno

    real, writes = ckpt._write, []

    def disk_full_from(n):
        def write(path, data):
            writes.append(path.name)
            if len(writes) >= n:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data)
        return write

    args = (REPO / "configs" / "tiny.yaml", "train.max_steps=4", "train.eval_every=2", "--out", tmp_path, "-q")
    monkeypatch.setattr(ckpt, "_write", disk_full_from(3))  # step 2's last.pt and best.pt, then none
    status, _, err = cli("train", *args, "--name", "full")
    assert status == 2 and err.strip().endswith(f"once that is mended, resume with: rnnlm train --resume "
                                                f"{tmp_path / 'full'}"), err
    writes.clear()
    monkeypatch.setattr(ckpt, "_write", disk_full_from(1))
    status, _, err = cli("train", *args, "--name", "none")
    assert status == 2 and err.strip().endswith(f"nothing was saved, and {tmp_path / 'none'} was removed"), err
