"""Data-parallel training: two CPU processes under torchrun (gloo) train the model one process would."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.distributed import Dist
from rnnlm.errors import RnnlmError
from rnnlm.metrics import read_metrics
from rnnlm.train import train

TINY = str(REPO / "configs" / "tiny.yaml")
# no dropout: each process draws masks for its own rows, which one process would draw differently
COMMON = ["train.batching=sequential", "train.bptt=random", "train.batch_size=16", "train.eval_every=10",
          "train.log_every=5", "train.device=cpu", "model.dropout=0.0"]


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "rnnlm", "train", *args, "-q"], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_would(tmp_path):
    run = tmp_path / "two"
    first = torchrun(TINY, *COMMON, "train.max_steps=20", "--out", str(tmp_path), "--name", "two")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("done at step 20") == 1  # rank 0 alone reports (and writes)
    # resumed by two processes, carrying each one's rows of the hidden state through last.pt
    resumed = torchrun("--resume", str(run), "train.max_steps=40")
    assert resumed.returncode == 0, resumed.stderr

    one = train(load_config(TINY, [*COMMON, "train.max_steps=40"]), tmp_path / "one", progress=False).run_dir
    two, single = read_metrics(run), read_metrics(one)
    assert [r["step"] for r in two] == [r["step"] for r in single]
    for a, b in zip(two, single):
        for key in ("train_loss", "val_loss", "grad_norm"):
            if key in b:
                assert math.isclose(a[key], b[key], rel_tol=1e-4), (a, b)

    point = ckpt.load(run / ckpt.LAST)
    replicas = point.train.replicas
    assert len(replicas) == 2 and replicas[0] == replicas[1]  # both processes hold the same parameters
    reference = ckpt.load(one / ckpt.LAST).model
    for name, value in point.model.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5)


def test_the_batch_must_split_evenly(tmp_path):
    cfg = load_config(TINY, ["train.batch_size=16", "train.device=cpu"])
    with pytest.raises(RnnlmError, match=r"^train.batch_size=16 cannot be shared evenly by 3 processes; use a multiple of 3$"):
        train(cfg, tmp_path / "run", dist=Dist(rank=0, world_size=3), progress=False)
    assert not (tmp_path / "run").exists()


def test_each_process_takes_its_rows():
    assert [Dist(rank=r, world_size=4).rows(16) for r in range(4)] == [slice(0, 4), slice(4, 8), slice(8, 12),
                                                                       slice(12, 16)]
