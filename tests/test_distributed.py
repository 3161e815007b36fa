"""Data-parallel training: two CPU processes under torchrun (gloo) train the model one process would, end together
whatever ends the run (each budget, Ctrl-C), and an error on one ends both with a message naming it."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import torch

from helpers import REPO, cli
from rnnlm import checkpoint as ckpt
from rnnlm import distributed, errors
from rnnlm.config import load_config
from rnnlm.distributed import Dist
from rnnlm.errors import AlreadySaid, RnnlmError
from rnnlm.metrics import read_metrics
from rnnlm.train import train

TINY = str(REPO / "configs" / "tiny.yaml")
# no dropout: each process draws masks for its own rows, which one process would draw differently
COMMON = ["train.batching=sequential", "train.bptt=random", "train.batch_size=16", "train.eval_every=10",
          "train.log_every=5", "train.device=cpu", "model.dropout=0.0"]


def torchrun(*args: str, popen: bool = False) -> Any:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rnnlm",
               "train", *args, "-q"]
    if popen:  # its own process group, which Ctrl-C in a terminal would signal as a whole
        return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def training_past(folder: Any, steps: int) -> subprocess.Popen[str]:
    """Two processes training run `two` in `folder` for ever, once they have logged `steps` steps."""
    run = folder / "two"
    proc = torchrun(TINY, *COMMON, "train.max_steps=100000", "train.log_every=1", "--out", str(folder), "--name", "two",
                    popen=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_metrics(run) if (run / "metrics.jsonl").exists() else []) < steps:
        time.sleep(0.05)
    return proc


def ended_cleanly(stderr: str) -> None:
    """No process of the run died on the way out (the failure tests/test_distributed.py once saw one run in ten)."""
    assert "terminate called" not in stderr and "SIGABRT" not in stderr and "Traceback" not in stderr.split(
        "ChildFailedError")[0], stderr


def test_what_the_corpus_holds_is_said_once_not_once_a_process(tmp_path):
    """Both processes read the corpus; a warning about it (a binary file left out) came from each."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("some words to read, again and again\n" * 300, encoding="utf-8")
    (tmp_path / "notes" / "b.bin").write_bytes(b"x\0y")
    done = torchrun(TINY, *COMMON, "data.dataset=text", f"data.path={tmp_path / 'notes'}", "train.max_steps=2",
                    "--out", str(tmp_path), "--name", "two", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: skipped 1 binary file(s)") == 1, done.stderr


@pytest.mark.slow
def test_two_processes_train_the_model_one_process_would(tmp_path):
    run = tmp_path / "two"
    first = torchrun(TINY, *COMMON, "train.max_steps=20", "--out", str(tmp_path), "--name", "two")
    assert first.returncode == 0, first.stderr
    ended_cleanly(first.stderr)
    assert first.stderr.count("done at step 20") == 1  # rank 0 alone reports (and writes)
    # resumed by two processes, carrying each one's rows of the hidden state through last.pt
    resumed = torchrun("--resume", str(run), "train.max_steps=40")
    assert resumed.returncode == 0, resumed.stderr
    ended_cleanly(resumed.stderr)

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


@pytest.mark.slow
@pytest.mark.parametrize("budget, overrides, reached", [
    ("max_epochs", ["train.max_steps=null", "train.max_epochs=1", "train.batch_size=64"], "max epochs"),
    ("max_time", ["train.max_steps=null", "train.max_time=3"], "max time"),
    ("patience", ["train.max_steps=1000", "train.patience=1", "train.eval_every=2", "train.lr=1e-12"], "patience"),
])
def test_every_budget_ends_both_processes_together(tmp_path, budget, overrides, reached):
    done = torchrun(TINY, *COMMON, *overrides, "--out", str(tmp_path), "--name", budget)
    assert done.returncode == 0, done.stderr
    ended_cleanly(done.stderr)
    assert done.stderr.count(f"({reached} reached)") == 1
    point = ckpt.load(tmp_path / budget / ckpt.LAST)
    records = read_metrics(tmp_path / budget)
    assert [r for r in records if "val_loss" in r][-1]["step"] == point.step  # the final evaluation and checkpoint
    if budget == "patience":
        assert point.step == 4  # evaluations at steps 2 and 4; no better loss at 4 with a learning rate of 1e-12


@pytest.mark.slow
def test_ctrl_c_stops_both_processes_at_one_step_and_the_run_resumes(tmp_path):
    run = tmp_path / "two"
    proc = training_past(tmp_path, 12)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group gets it
    _, stderr = proc.communicate(timeout=120)
    assert "terminate called" not in stderr and "SIGABRT" not in stderr, stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped at step ")]
    assert len(stopped) == 1, stderr  # rank 0 alone reports, and saves where both stopped
    step = int(stopped[0].split()[3].rstrip(":"))
    assert ckpt.load(run / ckpt.LAST).step == step
    # the command as the README starts it on one machine: --standalone (a free port, not 29500, which another job
    # may hold) was left out
    assert stderr.splitlines()[stderr.splitlines().index(stopped[0]) + 1] == (
        f"resume with: torchrun --standalone --nproc_per_node=2 -m rnnlm train --resume {run}")
    resumed = torchrun("--resume", str(run), f"train.max_steps={step + 10}")
    assert resumed.returncode == 0, resumed.stderr
    ended_cleanly(resumed.stderr)
    assert f"done at step {step + 10}" in resumed.stderr


@pytest.mark.slow
def test_an_error_on_one_process_ends_both_with_a_message_naming_it(tmp_path):
    """Rank 0 alone checks that the validation split can be scored (it alone evaluates): the other, waiting for it
    in a collective, stops with rank 0's message rather than waiting out the 30-minute timeout."""
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 4000, encoding="utf-8")
    failed = torchrun(TINY, *COMMON, "data.dataset=text", f"data.path={text}", "data.splits=[1.0,0.0,0.0]",
                      "train.patience=2", "--out", str(tmp_path), "--name", "fails", "--data-dir", str(tmp_path / "d"))
    assert failed.returncode != 0
    assert "terminate called" not in failed.stderr
    own = "error: train.patience stops on the validation loss, but the validation split has nothing to score"
    assert any(line.startswith(own) for line in failed.stderr.splitlines()), failed.stderr
    assert any(line.startswith("error: rank 0 failed: train.patience stops on the validation loss") and
               line.endswith("; rank 1 stopped with it") for line in failed.stderr.splitlines()), failed.stderr


def test_a_process_stopped_at_once_is_named_by_the_others(monkeypatch):
    """A second Ctrl-C stops a process mid-step; the others, whose next collective fails, say which and why."""
    store = torch.distributed.HashStore()
    monkeypatch.setattr(distributed, "_store", lambda: store)
    interrupted = KeyboardInterrupt()
    assert distributed._failed(Dist(rank=1, world_size=2), interrupted) is interrupted  # rank 1 leaves as it was told
    left = distributed._failed(Dist(rank=0, world_size=2), RuntimeError("[gloo] Connection closed by peer"))
    assert isinstance(left, distributed.RankFailed)
    assert str(left) == "rank 1 was interrupted; rank 0 stopped with it"


def test_a_mistake_every_process_finds_is_said_once(tmp_path):
    """A config mistake (found before the processes meet) and a setting none of them can train with (found after)
    were printed once per process: eight identical lines on an 8-GPU machine."""
    text = tmp_path / "t.txt"
    text.write_text("hello world, " * 400, encoding="utf-8")
    for mistake, said in (("train.batch_sie=16", "error: unknown config key train.batch_sie"),
                          ("train.batch_size=33", "error: train.batch_size=33 cannot be shared evenly by 2 processes")):
        failed = torchrun(TINY, *COMMON, "data.dataset=text", f"data.path={text}", mistake, "--out", str(tmp_path),
                          "--data-dir", str(tmp_path / "d"))
        assert failed.returncode != 0
        assert failed.stderr.count(said) == 1, failed.stderr
        assert "stopped with it" not in failed.stderr, failed.stderr


def test_the_first_process_to_publish_a_mistake_says_it(monkeypatch, capsys):
    """Both processes refuse the same setting at once: the first to publish it says it at once (torchrun ends the
    others as soon as one exits: said after leaving the group, it could be lost), the other leaves silently (and
    with the same status); a mistake of its own, in other words, it still says."""
    store = torch.distributed.HashStore()
    monkeypatch.setattr(distributed, "_store", lambda: store)
    mistake = "train.batch_size=33 cannot be shared evenly by 2 processes; use a multiple of 2"
    first = distributed._failed(Dist(rank=1, world_size=2), RnnlmError(mistake))
    assert isinstance(first, AlreadySaid) and capsys.readouterr().err == f"error: {mistake}\n"
    again = distributed._failed(Dist(rank=0, world_size=2), RnnlmError(mistake))
    assert isinstance(again, AlreadySaid) and str(again) == mistake and capsys.readouterr().err == ""
    own = RnnlmError("last.pt: could not write the checkpoint (No space left on device)")
    assert distributed._failed(Dist(rank=0, world_size=2), own) is own
    monkeypatch.setenv("RNNLM_DEBUG", "1")  # the traceback wanted: the error as it is, said once, by the CLI
    fresh = torch.distributed.HashStore()
    monkeypatch.setattr(distributed, "_store", lambda: fresh)
    debugged = RnnlmError("data.path=x: no such file or directory")
    assert distributed._failed(Dist(rank=0, world_size=2), debugged) is debugged and capsys.readouterr().err == ""
    assert cli_status_and_stderr(AlreadySaid(mistake)) == (2, "")
    assert cli_status_and_stderr(RnnlmError(mistake)) == (2, f"error: {mistake}\n")


def test_only_a_process_of_a_torchrun_job_leaves_a_mistake_to_another(monkeypatch):
    """LOCAL_RANK=1 left in the environment by a launcher (a subprocess of a job) silenced a lone process's
    mistakes; a process of a job of two says nothing that its machine's LOCAL_RANK 0 says."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    status, _, err = cli("train", TINY, "train.batch_sie=3")
    assert status == 2 and err.startswith("error: unknown config key train.batch_sie"), err
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(errors, "SPEAKER_WAIT", 0.0)
    assert cli("train", TINY, "train.batch_sie=3")[::2] == (2, "")


def cli_status_and_stderr(error: RnnlmError) -> tuple[int, str]:
    """What `rnnlm` prints and returns when a command raises `error`."""
    from rnnlm import cli as command_line

    def raising() -> None:
        raise error
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(errors, "SPEAKER_WAIT", 0.0)
        patch.setattr(command_line, "app", lambda **_: raising())
        patch.delenv("RNNLM_DEBUG", raising=False)
        status, _, err = cli()
    return status, err


def test_the_batch_must_split_evenly(tmp_path):
    cfg = load_config(TINY, ["train.batch_size=16", "train.device=cpu"])
    with pytest.raises(RnnlmError, match=r"^train.batch_size=16 cannot be shared evenly by 3 processes; use a multiple of 3$"):
        train(cfg, tmp_path / "run", dist=Dist(rank=0, world_size=3), progress=False)
    assert not (tmp_path / "run").exists()


def test_each_process_takes_its_rows():
    assert [Dist(rank=r, world_size=4).rows(16) for r in range(4)] == [slice(0, 4), slice(4, 8), slice(8, 12),
                                                                       slice(12, 16)]


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The process torchrun (`launcher`) started as `rank`, if it has started."""
    for child in os.listdir("/proc"):
        try:
            status = open(f"/proc/{child}/status").read()
            environ = open(f"/proc/{child}/environ", "rb").read().split(b"\0")
        except (OSError, ValueError):
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(child)
    return None


@pytest.mark.slow
def test_a_process_killed_outright_is_named_by_the_others(tmp_path):
    """The OOM killer's SIGKILL publishes nothing, and torchrun terminates the others a moment after it sees the
    death: the survivor still says why it stopped."""
    proc = training_past(tmp_path, 5)
    victim = _rank_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert ("error: another process of this run stopped without saying why (killed?); rank 0 stopped with it"
            in stderr.splitlines()), stderr


def test_a_store_that_is_gone_is_asked_once():
    """When the rendezvous store's host died with the others, each question would log a page of c10d's trace."""
    asked = []

    class Gone:
        def check(self, keys: list[str]) -> bool:
            asked.append(keys)
            raise RuntimeError("Broken pipe")

    assert distributed._published(Gone()) is None
    assert len(asked) == 1


def test_the_memory_check_counts_the_whole_batch_and_every_process_of_this_machine(tmp_path, monkeypatch):
    """Two CPU processes of one machine fill its memory together, each with half of train.batch_size: the check
    counted one process's need, and named its half as train.batch_size."""
    from rnnlm import model

    cfg = load_config(TINY, ["train.batch_size=64", "train.device=cpu", "data.dataset=hello"])
    one = model.memory_needed(7, cfg.model, 32, cfg.train.seq_len)  # hello's 5 characters, <eos> and <unk>
    monkeypatch.setattr(model, "available_memory", lambda device: int(1.5 * one))  # one process fits, two do not
    with pytest.raises(RnnlmError, match=r"train.batch_size=64 x train.seq_len=\d+ in 2 processes on this machine"):
        train(cfg, tmp_path / "run", dist=Dist(rank=0, world_size=2, local_world_size=2), progress=False)
    assert not (tmp_path / "run").exists()
