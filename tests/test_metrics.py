"""Metric loggers: metrics.jsonl read back, TensorBoard when the package is there, one clear line when not."""

from __future__ import annotations

import sys

import pytest

from rnnlm.config import load_config
from rnnlm.errors import RnnlmError
from rnnlm.metrics import JsonlLogger, Loggers, check_tensorboard, read_metrics, truncate_metrics
from rnnlm.train import train

SMALL = ["data.dataset=hello", "model.hidden_size=16", "model.num_layers=1", "train.seq_len=16", "train.batch_size=8",
         "train.device=cpu", "train.max_steps=20", "train.log_every=5", "train.eval_every=10"]


def test_jsonl_round_trip_and_truncation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = Loggers([JsonlLogger(path)])
    for step in (5, 10, 15):
        logger.log({"step": step, "train_loss": 1.0 / step, "val_loss": float("nan")})
    logger.close()
    with open(path, "a") as f:
        f.write('{"step": 20, "train_lo')  # a line cut off by a crash
    assert [r["step"] for r in read_metrics(path)] == [5, 10, 15]
    assert read_metrics(path)[0]["val_loss"] is None  # NaN is not JSON
    truncate_metrics(path, 10)
    assert [r["step"] for r in read_metrics(path)] == [5, 10]
    assert path.read_text().endswith("\n") and len(list(tmp_path.iterdir())) == 1


def test_without_tensorboard_the_run_fails_at_once_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    message = "train.tensorboard=true needs the tensorboard package: pip install 'rnnlm[tensorboard]'"
    with pytest.raises(RnnlmError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_tensorboard()
    with pytest.raises(RnnlmError, match="needs the tensorboard package"):
        train(load_config(None, [*SMALL, "train.tensorboard=true"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_tensorboard_gets_every_record(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(load_config(None, [*SMALL, "train.tensorboard=true"]), tmp_path / "run", progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert {"train/train_loss", "train/grad_norm", "train/lr", "val/val_loss", "val/bpc"} <= set(events.Tags()["scalars"])
    logged = [r["train_loss"] for r in read_metrics(result.run_dir) if "train_loss" in r]
    points = events.Scalars("train/train_loss")
    assert [p.step for p in points] == [5, 10, 15, 20]
    assert [p.value for p in points] == pytest.approx(logged, rel=1e-6)


def test_an_evaluation_record_at_an_unevaluated_checkpoint_is_dropped(tmp_path):
    """A session cut during an evaluation saves last.pt unevaluated; a resume killed after logging that evaluation
    but before saving leaves its record, which the next resume would log again."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "val_loss": 1.0}\n{"step": 20, "train_loss": 2.0}\n{"step": 20, "val_loss": 1.5}\n',
                    encoding="utf-8")
    truncate_metrics(path, 20, evaluated=False)
    assert read_metrics(path) == [{"step": 10, "val_loss": 1.0}, {"step": 20, "train_loss": 2.0}]
