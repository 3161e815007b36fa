"""The learning-rate schedules."""

from __future__ import annotations

import math

import pytest

from rnnlm.config import load_config
from rnnlm.optim import learning_rate


def test_schedules():
    cfg = load_config(None, ["train.schedule=cosine", "train.warmup_steps=10", "train.max_steps=110", "train.lr=1.0"])
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 0) == pytest.approx(1.0)
    # the decay starts at the step after the warmup's last (it repeated the peak) and ends at the run's last step, step
    # 109 of 110 (it never reached the floor)
    assert learning_rate(cfg, 10, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 100)))
    assert learning_rate(cfg, 59, 0) == pytest.approx(0.5)
    assert learning_rate(cfg, 109, 0) == pytest.approx(0.0)
    cfg = load_config(None, ["train.schedule=cosine", "train.max_steps=11", "train.lr=1.0"])  # no warmup
    assert [learning_rate(cfg, s, 0) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    cfg = load_config(None, ["train.schedule=cosine", "train.max_steps=null", "train.max_time=100", "train.lr=1.0"])
    assert learning_rate(cfg, 5, 0, clock=50.0) == pytest.approx(0.5)  # a time budget: the cosine follows the clock
    assert learning_rate(cfg, 5, 0, clock=100.0) == pytest.approx(0.0)
    cfg = load_config(None, ["train.schedule=cosine", "train.max_steps=100", "train.max_time=1000", "train.lr=1.0"])
    assert learning_rate(cfg, 50, 0, clock=750.0) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))  # whichever is further
    cfg = load_config(None, ["train.schedule=char_rnn", "train.decay_after=2", "train.decay_rate=0.5", "train.lr=1.0"])
    assert [learning_rate(cfg, 0, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    # char-rnn's first decay is at the end of the first epoch however early decay_after asks for it
    for after in (0, 1):
        cfg = load_config(None, ["train.schedule=char_rnn", f"train.decay_after={after}", "train.decay_rate=0.5",
                                 "train.lr=1.0"])
        assert [learning_rate(cfg, 0, e) for e in range(4)] == [1.0, 0.5, 0.25, 0.125]


def test_a_cosine_run_ended_by_its_epoch_budget_ends_at_the_floor(tmp_path):
    """train.max_epochs=1 beside the config's max_steps=2000 stopped at step 184 with the rate still at 0.99 of its
    peak: the cosine decayed over the steps alone."""
    from rnnlm.metrics import read_metrics
    from rnnlm.train import train

    cfg = load_config(None, ["train.schedule=cosine", "train.max_steps=100000", "train.max_epochs=2", "train.lr=0.01",
                             "train.min_lr=0.001", "data.dataset=hello", "model.hidden_size=8", "model.num_layers=1",
                             "train.batch_size=4", "train.seq_len=50", "train.log_every=1", "train.eval_every=1000"])
    result = train(cfg, tmp_path / "run", progress=False)
    rates = [r["lr"] for r in read_metrics(tmp_path / "run") if "lr" in r]
    assert result.stopped == "max_epochs" and result.step == len(rates) > 20
    assert rates[-1] == pytest.approx(0.001) and rates[len(rates) // 2] == pytest.approx(0.0055, abs=5e-4)
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    # after a warmup, the decay starts from lr at its last step, as over max_steps (the epoch share counted the
    # warmup: 17% down in the step after it)
    cfg = load_config(None, ["train.schedule=cosine", "train.max_steps=null", "train.max_epochs=1", "train.lr=1.0",
                             "train.warmup_steps=50"])
    per_step = 1 / 184  # epochs a step reads
    rates = [learning_rate(cfg, s, 0, epochs=(s + 1) * per_step) for s in range(184)]
    assert rates[49] == 1.0 and rates[50] > 0.999 and rates[-1] == pytest.approx(0.0)
