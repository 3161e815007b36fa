"""Stopping and resuming through the real command line: Ctrl-C, SIGTERM, SIGKILL at any moment, and
resuming with a changed config. Each compares the finished run's metrics with an uninterrupted run's."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers
from helpers import REPO, TIMING
from rnnlm import checkpoint as ckpt
from rnnlm.atomic import remove_stale_temp_files
from rnnlm.config import load_config
from rnnlm.metrics import read_metrics
from rnnlm.runs import LOCK, SAFE_TO_CHANGE
from rnnlm.train import train

# dropout and random BPTT lengths: a resume must restore the torch and batcher generators to match
TINY = str(REPO / "configs" / "tiny.yaml")
COMMON = ["data.dataset=anbn", "model.hidden_size=32", "model.num_layers=1", "model.dropout=0.1", "train.bptt=random",
          "train.seq_len=32", "train.batch_size=16", "train.lr=0.01", "train.log_every=5", "train.eval_every=20",
          "train.device=cpu"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # one thread, as the in-process reference
ENV.pop("RNNLM_DEBUG", None)


def in_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`rnnlm ARGS` in this process (`helpers.cli`): a command that is not interrupted needs no process of its own (a
    new one spends about 5 s importing torch); the signals and kills go to real processes (`start`)."""
    with contextlib.chdir(cwd or os.getcwd()):
        code, out, err = helpers.cli(*args)
    return subprocess.CompletedProcess(["rnnlm", *args], code, out, err)


def reference(tmp_path: Path, *overrides: str) -> list[dict]:
    """The records of an uninterrupted run (in this process, single-threaded like the subprocesses)."""
    result = train(load_config(TINY, [*COMMON, *overrides]), tmp_path / "reference", progress=False)
    return strip(result.run_dir)


def strip(run_dir: Path) -> list[dict]:
    """Records without the fields that measure time."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rnnlm", "train", *args, "-q"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until metrics.jsonl has a record at `step` or later: training is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.jsonl").exists() and any(r["step"] >= step for r in read_metrics(run_dir)):
            return
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.02)
    raise AssertionError(f"no record at step {step} after {timeout} s")


def wait_for_progress(run: Path, resumed_from: int, process: subprocess.Popen[str]) -> bool:
    """Until the process has trained past its checkpoint (True), or has finished (False). It first drops
    the records a killed run wrote past that checkpoint, then writes its own."""
    def newest() -> int:
        return max((r["step"] for r in read_metrics(run)), default=0) if (run / "metrics.jsonl").exists() else 0

    truncated = False
    while process.poll() is None:
        truncated = truncated or newest() <= resumed_from
        if truncated and newest() > resumed_from:
            return True
        time.sleep(0.01)
    assert process.returncode == 0, process.communicate()[1]
    return False


def temp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp-*"))


def writing(run_dir: Path, pid: int) -> bool:
    return any(name.endswith(f".tmp-{pid}") for name in os.listdir(run_dir)) if run_dir.exists() else False


def interrupt(process: subprocess.Popen[str], run: Path, sig: int, after_step: int) -> int:
    """Send `sig` once training passed `after_step`; check the exit status, the message and last.pt."""
    wait_for_step(run, after_step, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, err
    assert f"resume with: rnnlm train --resume {run}" in err.splitlines()[-1]
    assert temp_files(run) == []
    step = ckpt.load(run / ckpt.LAST).step
    stopped = next(line for line in err.splitlines() if line.startswith("stopped at step "))
    evaluated = any("val_loss" in r for r in read_metrics(run))  # a signal during an evaluation cuts it short
    assert stopped.startswith(f"stopped at step {step}: {'val loss' if evaluated else 'not evaluated yet;'}"), err
    return step


def test_ctrl_c_and_sigterm_save_and_the_resumed_run_is_exact(tmp_path):
    steps = "train.max_steps=200"
    run = tmp_path / "run"
    first = interrupt(start(TINY, "--out", str(tmp_path), "--name", "run", *COMMON, steps), run, signal.SIGINT, 10)
    second = interrupt(start("--resume", str(run)), run, signal.SIGTERM, first + 5)
    assert 10 <= first < second < 200, "the run ended before the signal came"

    resumed = in_process("train", "--resume", str(run), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {second}" in resumed.stderr
    assert (run / "resume.log").read_text().count("resumed at step") == 2
    assert strip(run) == reference(tmp_path, steps)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Killed again and again, at random moments and right as checkpoints are being written: each time
    the newest checkpoint loads and the run resumes; in the end its metrics are an uninterrupted run's."""
    last = 480  # room for every kill (at most 40 steps each) before the end, and one mid-write
    steps = [f"train.max_steps={last}", "train.eval_every=4", "train.keep_last=2", "model.hidden_size=64"]  # writes often
    run = tmp_path / "run"
    rng = random.Random(5)
    kills, mid_write, killed = 0, 0, set()
    while kills < 6 or (mid_write == 0 and kills < 12):
        resumed_from = ckpt.load(run / ckpt.LAST).step if (run / ckpt.LAST).exists() else 0
        process = start("--resume", str(run)) if kills else start(TINY, "--out", str(tmp_path), "--name", "run",
                                                                   *COMMON, *steps)
        if not wait_for_progress(run, resumed_from, process):
            break  # it finished first
        if kills % 2 == 0:  # at a random moment: in a step, an evaluation, a checkpoint or metrics write
            # a random step ahead, not a random time: on a fast machine a time could outlast the whole run
            wait_for_step(run, min(resumed_from + rng.randint(1, 40), last - 10), process)
            time.sleep(rng.uniform(0, 0.02))
        else:  # as soon as this process has begun writing a checkpoint
            while process.poll() is None and not writing(run, process.pid):
                time.sleep(0.0005)
        if process.poll() is not None:
            assert process.returncode == 0, process.communicate()[1]
            break
        process.kill()
        process.wait()
        kills += 1
        killed.add(process.pid)
        left = temp_files(run)
        assert all(int(name.rsplit("-", 1)[1]) in killed for name in left), left  # only killed writers leave any
        mid_write += any(name.endswith(f".tmp-{process.pid}") for name in left)
        point = ckpt.load(run / ckpt.LAST)  # the newest checkpoint loads, whatever the moment of the kill
        assert point.step % 4 == 0 and resumed_from <= point.step <= last
        if point.step == last:
            break  # killed after its final checkpoint, as it was exiting: nothing left to lose
    assert kills >= 4 and mid_write > 0, (kills, mid_write)

    finished = in_process("train", "--resume", str(run), "-q")
    assert finished.returncode == 0, finished.stderr
    assert temp_files(run) == []
    assert sorted(p.name for p in run.glob("step-*.pt")) == [f"step-{last - 4:06d}.pt", f"step-{last:06d}.pt"]
    assert strip(run) == reference(tmp_path, *steps)


def test_a_run_whose_config_yaml_was_emptied_resumes_with_its_checkpoints_config(tmp_path):
    """An emptied config.yaml read as all defaults: the resume was refused for a dozen keys "edited"."""
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=4",
                      "-q").returncode == 0
    kept = (run / "config.yaml").read_text()
    for steps, emptied in ((6, ""), (8, "# emptied by hand\n")):  # a comment alone is as empty
        (run / "config.yaml").write_text(emptied)
        resumed = in_process("train", "--resume", str(run), f"train.max_steps={steps}", "-q")
        assert resumed.returncode == 0, resumed.stderr
        assert (f"warning: {run / 'config.yaml'} is empty: resuming with the config the checkpoint holds"
                in resumed.stderr)
        assert (run / "config.yaml").read_text() == kept.replace("max_steps: 4", f"max_steps: {steps}")


def test_resuming_with_another_config_file_gives_back_its_data_path_too(tmp_path):
    """data.path may change on resume (the same text, moved), but a config file's own is rarely the run's: the
    command to go on gave back the other changes alone, and what it said to type failed next on the file's data.path
    (text_lstm.yaml's notes.txt)."""
    text = tmp_path / "mine.txt"
    text.write_text("some text of mine. " * 100, encoding="utf-8")
    first = in_process("train", TINY, "--out", str(tmp_path), "--name", "run", "data.dataset=text", f"data.path={text}",
                       "model.hidden_size=8", "train.max_steps=2", "--data-dir", str(tmp_path / "data"), "-q")
    assert first.returncode == 0, first.stderr
    other = tmp_path / "other.yaml"
    other.write_text((tmp_path / "run" / "config.yaml").read_text().replace(str(text), "notes.txt")
                     .replace("hidden_size: 8", "hidden_size: 16"))
    refused = in_process("train", other, "--resume", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"))
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        f"or give model.hidden_size=8 data.path={text} after it, or start a new run)"), refused.stderr
    moved = text.rename(tmp_path / "moved.txt")  # the text did move: the config's new place is the one to keep
    other.write_text(other.read_text().replace("notes.txt", str(moved)))
    refused = in_process("train", other, "--resume", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"))
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        "or give model.hidden_size=8 after it, or start a new run)"), refused.stderr


def test_resume_with_a_changed_config(tmp_path):
    run = tmp_path / "run"
    first = in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=10", "-q")
    assert first.returncode == 0, first.stderr
    before = (run / "metrics.jsonl").read_text()

    refused = in_process("train", "--resume", str(run), "model.hidden_size=64", "train.lr=0.1", "train.max_steps=20")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: cannot resume with a changed config: model.hidden_size, train.lr differ from the config the run was "
        "trained with; only " + ", ".join(sorted(SAFE_TO_CHANGE)) + ", sample.* and data.path (to the same text, "
        "moved) may change on resume (drop model.hidden_size, train.lr from the overrides, or start a new run)"]
    assert (run / "metrics.jsonl").read_text() == before and not (run / "resume.log").exists()
    # a change the weights can go on with: the new run from them, ready to paste
    refused = in_process("train", "--resume", str(run), "train.lr=0.1", "train.batch_size=8")
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        f"(drop train.batch_size, train.lr from the overrides, or start a new run from its weights with the change: "
        f"rnnlm train "
        f"{run / 'config.yaml'} --init-from {run} --out {tmp_path} and the overrides given here)")

    # the change named where it came from: a config file given (not the run's config.yaml, which was not edited)
    other = tmp_path / "other.yaml"
    other.write_text((run / "config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64"))
    refused = in_process("train", other, "--resume", str(run), "train.max_steps=20")
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        f"(leave {other} out (the run's config.yaml holds what it trained with) or give model.hidden_size=32 after "
        "it, or start a new run)"), refused.stderr  # it said to undo an edit in a file no one had edited
    edited = run / "config.yaml"
    edited.write_text(edited.read_text().replace("hidden_size: 32", "hidden_size: 64"))
    refused = in_process("train", "--resume", str(run), "train.max_steps=20")
    assert refused.returncode == 2 and f"(undo the edit in {edited}, or start a new run)" in refused.stderr
    edited.write_text(edited.read_text().replace("hidden_size: 64", "hidden_size: 32"))

    accepted = in_process("train", "--resume", str(run), "train.max_steps=20", "train.eval_every=5", "train.threads=1",
                       "sample.length=50", "-q")
    assert accepted.returncode == 0, accepted.stderr
    change = "train.max_steps: 10 -> 20; train.eval_every: 20 -> 5; train.threads: null -> 1; sample.length: 40 -> 50"
    assert f"resuming at step 10 with {change}" in accepted.stderr
    assert (run / "resume.log").read_text().strip().endswith(f"resumed at step 10 with {change}")
    assert load_config(run / "config.yaml").train.max_steps == 20
    assert [r["step"] for r in read_metrics(run) if "val_loss" in r] == [10, 15, 20]
    assert "(max steps reached)" in accepted.stderr


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(load_config(TINY, [*COMMON, "train.max_steps=10"]).to_yaml())
    (run / "metrics.jsonl").write_text('{"step": 5, "epoch": 0, "train_loss": 9.0}\n{"step": 10, "ep')
    (run / ".best.pt.tmp-999999999").write_bytes(b"half a checkpoint")  # no process has this id
    result = in_process("train", "--resume", str(run), "-q")
    assert result.returncode == 0, result.stderr
    assert "starting it over" in result.stderr and "removed .best.pt.tmp-999999999" in result.stderr
    assert temp_files(run) == [] and ckpt.load(run / ckpt.LAST).step == 10
    assert strip(run) == reference(tmp_path, "train.max_steps=10")


def test_a_trained_run_without_last_pt_is_refused_not_started_over(tmp_path):
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=10",
                   "-q").returncode == 0
    (run / ckpt.LAST).unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK}
    refused = in_process("train", "--resume", str(run), "train.max_steps=20", "-q")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: --resume {run}: the run has best.pt but no last.pt, which a resume continues from (the optimizer, "
        f"the position in the data); start a new run from its weights with: rnnlm train {run / 'config.yaml'} "
        f"--init-from {run / 'best.pt'} --out {tmp_path}"]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK} == before


def test_a_run_whose_checkpoints_are_all_gone_is_refused_not_started_over(tmp_path):
    """With every checkpoint removed, a resume took the run for one stopped before its first checkpoint, started it
    over and emptied its metrics.jsonl; with only numbered ones left, the refusal named the oldest."""
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=20",
                      "train.keep_last=2", "-q").returncode == 0
    for name in (ckpt.LAST, ckpt.BEST):
        (run / name).unlink()
    refused = in_process("train", "--resume", str(run), "-q")
    assert refused.returncode == 2 and refused.stderr.strip().endswith(
        f"start a new run from its weights with: rnnlm train {run / 'config.yaml'} --init-from "
        f"{run / 'step-000020.pt'} --out {tmp_path}"), refused.stderr
    for numbered in run.glob("step-*.pt"):
        numbered.unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK}
    refused = in_process("train", "--resume", str(run), "-q")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: --resume {run}: the run saved checkpoints (its metrics.jsonl goes to step 20), but they are gone, "
        f"and a resume would start it over on top of its metrics; train it again as a new run: rnnlm train "
        f"{run / 'config.yaml'} --out {tmp_path}"]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK} == before


def test_a_resume_given_its_config_and_a_relative_data_path_again_is_the_same_run(tmp_path):
    (tmp_path / "mine.txt").write_text("the quick brown fox jumps over the lazy dog. " * 300, encoding="utf-8")
    args = [TINY, *COMMON, "data.dataset=text", "data.path=mine.txt", "--data-dir", "data"]
    first = in_process("train", *args, "train.max_steps=10", "--out", "runs", "--name", "run", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = in_process("train", *args, "train.max_steps=15", "--resume", "runs/run", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming at step 10 with train.max_steps: 10 -> 15" in again.stderr
    assert ckpt.load(tmp_path / "runs" / "run" / ckpt.LAST).step == 15


def test_a_corpus_changed_under_a_run_is_refused_on_resume_and_named_by_eval(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(800)), encoding="utf-8")
    args = ["data.dataset=text", f"data.path={text}", "--data-dir", str(tmp_path / "data")]
    first = in_process("train", TINY, *COMMON, *args, "train.max_steps=10", "--out", str(tmp_path), "--name", "run", "-q")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK}
    text.write_text(text.read_text(encoding="utf-8")[:5000], encoding="utf-8")  # cut short: the saved position is past it
    refused = in_process("train", "--resume", str(run), "train.max_steps=20", "--data-dir", str(tmp_path / "data"), "-q")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --resume {run}: the text corpus has changed since this run trained on it (files edited, added or "
        "removed), so the position saved in it means nothing now; put the files back, or start a new run from this "
        f"one's weights: rnnlm train {run / 'config.yaml'} --init-from {run} --out {tmp_path}")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK} == before
    scored = in_process("eval", str(run), "--data-dir", str(tmp_path / "data"))
    assert scored.returncode == 0 and "warning: the text corpus has changed since this checkpoint was written" in \
        scored.stderr
    command = refused.stderr.strip().split("weights: rnnlm ")[1].split()  # the command it gives runs as it is
    again = in_process(*command, "train.max_steps=12", "--data-dir", str(tmp_path / "data"), "-q")
    assert again.returncode == 0, again.stderr
    assert [p.name.rsplit("-", 2)[0] for p in tmp_path.iterdir() if p.name.startswith("run-")] == ["run"]


def test_a_run_trained_with_pad_on_a_stream_corpus_still_resumes(tmp_path):
    """data.records=pad on a stream corpus was ignored before new runs refused it: a run trained so resumes."""
    first = in_process("train", TINY, *COMMON, "data.dataset=hello", "train.max_steps=10", "--out", str(tmp_path),
                       "--name", "run", "-q")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "run"
    point = ckpt.load(run / ckpt.LAST)
    padded = dataclasses.replace(point.config, data=dataclasses.replace(point.config.data, records="pad"))
    ckpt.save([run / ckpt.LAST], dataclasses.replace(point, config=padded))
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("records: pack", "records: pad"))
    refused = in_process("train", TINY, *COMMON, "data.dataset=hello", "data.records=pad", "--out", str(tmp_path), "-q")
    assert refused.returncode == 2 and "data.records=pad batches whole records" in refused.stderr
    resumed = in_process("train", "--resume", str(run), "train.max_steps=20", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load(run / ckpt.LAST).step == 20


def test_a_moved_corpus_is_found_again_by_resume_and_eval_given_its_new_place(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(800)), encoding="utf-8")
    data = ["--data-dir", str(tmp_path / "data")]
    first = in_process("train", TINY, *COMMON, "data.dataset=text", f"data.path={text}", "train.max_steps=10", *data,
                       "--out", str(tmp_path), "--name", "run", "-q")
    assert first.returncode == 0, first.stderr
    run, moved = tmp_path / "run", tmp_path / "elsewhere" / "renamed.txt"
    moved.parent.mkdir()
    text.rename(moved)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK}

    lost = in_process("train", "--resume", str(run), "train.max_steps=20", *data, "-q")
    assert lost.returncode == 2 and lost.stderr.strip().splitlines() == [
        f"error: data.path={text}: no such file or directory; if the run's text moved, resume with its new place: "
        f"rnnlm train --resume {run} data.path=WHERE_IT_IS"]
    unscored = in_process("eval", str(run), *data)
    assert unscored.returncode == 2 and unscored.stderr.strip().splitlines() == [
        f"error: data.path={text}: no such file or directory; if the run's text moved, give its new place: "
        f"rnnlm eval {run / 'best.pt'} --data-path WHERE_IT_IS"]
    typo = in_process("train", "--resume", str(run), f"data.path={tmp_path / 'elsewher'}", *data, "-q")
    assert typo.returncode == 2 and typo.stderr.strip().splitlines() == [
        f"error: data.path={tmp_path / 'elsewher'}: no such file or directory; give the place the text the run "
        f"trained on (from {text}) moved to"]
    (tmp_path / "other.txt").write_text(moved.read_text(encoding="utf-8") + "one line more\n", encoding="utf-8")
    other = in_process("train", "--resume", str(run), "train.max_steps=20", f"data.path={tmp_path / 'other.txt'}",
                       *data, "-q")
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1] == (
        f"error: --resume {run}: data.path={tmp_path / 'other.txt'} does not hold the text the run trained on (from "
        f"{text}): a moved corpus must hold the same text, unchanged; give the place it moved to")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != LOCK} == before

    wrong = in_process("eval", str(run), "--data-path", str(tmp_path / "other.txt"), *data)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
        f"error: --data-path {tmp_path / 'other.txt'} does not hold the text the run trained on (from {text}): give "
        "the place that text moved to, unchanged, with --data-path")
    kept = (run / "config.yaml").read_text()  # an edit a refused resume left there is not followed to other text
    (run / "config.yaml").write_text(kept.replace(str(text), str(tmp_path / "other.txt")))
    followed = in_process("eval", str(run), *data)
    assert followed.returncode == 2 and followed.stderr.strip().splitlines()[-1] == (
        f"error: data.path={tmp_path / 'other.txt'} (the run's config.yaml) does not hold the text the run trained on "
        f"(from {text}): give the place that text moved to, unchanged, with --data-path")
    (run / "config.yaml").write_text(kept)
    scored = in_process("eval", str(run), "--data-path", str(moved.parent / "*.txt"), "--json", *data)
    assert scored.returncode == 0 and "warning" not in scored.stderr, scored.stderr
    assert json.loads(scored.stdout)["nll"] == pytest.approx(ckpt.load(run / "best.pt").train.tally.last_val)
    point = ckpt.load(run / ckpt.LAST)  # a checkpoint from before corpus digests were kept cannot tell
    ckpt.save([run / ckpt.LAST], dataclasses.replace(point, train=dataclasses.replace(point.train, corpus="")))
    unsure = in_process("train", "--resume", str(run), "train.max_steps=20", f"data.path={moved}", *data, "-q")
    assert unsure.returncode == 2 and unsure.stderr.strip().splitlines()[-1] == (
        f"error: --resume {run}: this checkpoint predates corpus fingerprints, so rnnlm cannot tell whether {moved} "
        f"holds the text it trained on; resume with data.path={text}")
    ckpt.save([run / ckpt.LAST], point)
    shutil.copy(run / "best.pt", tmp_path / "kept.pt")  # its config keeps the old place, as best.pt may after a resume
    resumed = in_process("train", "--resume", str(run), "train.max_steps=20", f"data.path={moved}", *data, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert load_config(run / "config.yaml").data.path == str(moved)
    assert [r["step"] for r in read_metrics(run) if "val_loss" in r] == [10, 20]
    shutil.copy(tmp_path / "kept.pt", run / "kept.pt")  # a checkpoint of the run reads the place its resume wrote
    again = in_process("eval", str(run / "kept.pt"), "--json", *data)
    assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["nll"] == json.loads(scored.stdout)["nll"]


def test_a_resume_reads_the_corpus_from_the_data_root_the_run_trained_from(tmp_path):
    (tmp_path / "mine.txt").write_text("the quick brown fox jumps over the lazy dog. " * 300, encoding="utf-8")
    first = in_process("train", TINY, *COMMON, "data.dataset=text", f"data.path={tmp_path / 'mine.txt'}",
                    "train.max_steps=10", "--data-dir", str(tmp_path / "corpora"), "--out", str(tmp_path), "--name",
                    "run", "-q")
    assert first.returncode == 0, first.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = in_process("train", "--resume", str(tmp_path / "run"), "train.max_steps=15", "-q", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert "preparing" not in again.stderr and not any(elsewhere.iterdir())  # no second store in ./data


def test_fp16_on_a_cpu_is_one_line(tmp_path):
    result = in_process("train", str(REPO / "configs" / "tiny.yaml"), "train.precision=fp16", "train.device=cpu",
                     "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: train.precision=fp16 needs a CUDA device; on a CPU use train.precision=auto, bf16 or fp32"]
    assert not any(tmp_path.iterdir())


def test_a_glob_corpus_whose_folder_moved_is_said_to_have_moved(tmp_path):
    """`data.path='notes/*.txt'` of a notes/ that moved was refused as a pattern to check (the run's own, saved
    absolute), without the command that resumes from the new place."""
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(3):
        (notes / f"{i}.txt").write_text("".join(f"note {i}.{j}: the quick brown fox\n" for j in range(300)))
    data = ["--data-dir", str(tmp_path / "data")]
    assert in_process("train", TINY, *COMMON, "data.dataset=text", f"data.path={notes}/*.txt", "train.max_steps=4",
                      *data, "--out", str(tmp_path), "--name", "run", "-q").returncode == 0
    run = tmp_path / "run"
    notes.rename(tmp_path / "moved")
    lost = in_process("train", "--resume", str(run), "train.max_steps=6", *data, "-q")
    assert lost.returncode == 2 and lost.stderr.strip().splitlines() == [
        f"error: data.path={notes}/*.txt: no such file or directory; if the run's text moved, resume with its new "
        f"place: rnnlm train --resume {run} data.path=WHERE_IT_IS"]
    assert in_process("eval", str(run), *data).stderr.strip().endswith("--data-path WHERE_IT_IS")
    assert in_process("train", "--resume", str(run), "train.max_steps=6", f"data.path={tmp_path}/moved/*.txt", *data,
                      "-q").returncode == 0


def test_only_the_temporary_files_of_dead_writers_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    try:
        (tmp_path / f".last.pt.tmp-{sleeper.pid}").write_bytes(b"being written")
        (tmp_path / f".last.pt.tmp-{done.stdout.strip()}").write_bytes(b"left by a killed writer")
        (tmp_path / ".notes.txt").write_text("not ours")
        removed = remove_stale_temp_files(tmp_path)
        assert [p.name for p in removed] == [f".last.pt.tmp-{done.stdout.strip()}"]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".last.pt.tmp-{sleeper.pid}", ".notes.txt"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_resume_reads_an_edited_config_yaml_and_checks_it_like_an_override(tmp_path):
    run = tmp_path / "run"
    first = in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=10", "-q")
    assert first.returncode == 0, first.stderr
    written = (run / "config.yaml").read_text()

    (run / "config.yaml").write_text(written.replace("hidden_size: 32", "hidden_size: 64"))
    refused = in_process("train", "--resume", str(run), "-q")
    assert refused.returncode == 2 and "model.hidden_size differs from the config the run was trained" in refused.stderr
    assert "hidden_size: 64" in (run / "config.yaml").read_text()  # the user's edit stays, to undo or keep

    (run / "config.yaml").write_text("train: {max_steps: [20\n")
    broken = in_process("train", "--resume", str(run), "-q")
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1
    assert "config.yaml: line 2" in broken.stderr and "YAML syntax error" in broken.stderr

    (run / "config.yaml").write_text(written.replace("max_steps: 10", "max_steps: 15"))
    accepted = in_process("train", "--resume", str(run), "-q")
    assert accepted.returncode == 0 and "resuming at step 10 with train.max_steps: 10 -> 15" in accepted.stderr
    assert ckpt.load(run / ckpt.LAST).step == 15


@pytest.mark.parametrize("budget, more", [("train.max_steps=10", "train.max_steps=20"),
                                          ("train.max_epochs=1", "train.max_epochs=N")])
def test_resuming_a_finished_run_says_so_and_writes_nothing(tmp_path, budget, more):
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=null", budget,
                   "train.seq_len=64", "train.batch_size=64", "-q").returncode == 0
    files = lambda: {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != LOCK}  # noqa: E731
    before, tally = files(), ckpt.load(run / ckpt.LAST).train.tally
    again = in_process("train", "--resume", str(run), "-q")
    assert again.returncode == 0
    assert again.stderr.strip().splitlines() == [
        f"nothing to do: the run is at step {tally.step}: val loss {tally.last_val:.4f} nats/char (best "
        f"{tally.best_val:.4f}) and its {budget[6:].split('=')[0].replace('_', ' ')} is spent; give it more with: "
        f"rnnlm train --resume {run} {more}"]
    assert files() == before and not (run / "resume.log").exists()  # the lock names the pid that took it
    # A trial changed the run's sampling this way and took the silence for its change being kept.
    again = in_process("train", "--resume", str(run), "sample.temperature=0", "-q")
    assert again.returncode == 0 and again.stderr.strip().splitlines()[-1] == (
        "the changes given were not kept either (sample.temperature: 0.5 -> 0.0); rnnlm sample takes its settings as "
        "options (--temp, --length, --prime, --top-k, --top-p)")
    assert files() == before


def test_a_resume_that_moves_a_cosine_budget_says_how_the_learning_rate_changes(tmp_path):
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=10",
                   "train.schedule=cosine", "-q").returncode == 0
    resumed = in_process("train", "--resume", str(run), "train.max_steps=20", "-q")
    assert resumed.returncode == 0
    notes = [line for line in resumed.stderr.splitlines() if line.startswith("note: train.schedule=cosine")]
    assert len(notes) == 1 and "from step 11 on" in notes[0]


def test_a_bf16_run_resumes_where_auto_resolves_to_fp32(tmp_path, monkeypatch):
    """`train.precision: auto` is bf16 on a CPU with native bf16 (or a GPU) and fp32 elsewhere: a run trained in bf16
    carries a bfloat16 state in last.pt, which a resume on another machine (or device) must take up in fp32."""
    from rnnlm import device as dev

    monkeypatch.setattr(dev, "native_bf16", lambda device: True)  # this process plays the bf16 machine
    cfg = load_config(TINY, ["data.dataset=anbn", "model.hidden_size=16", "model.num_layers=1", "train.seq_len=16",
                             "train.batch_size=4", "train.max_steps=3", "train.precision=auto", "train.device=cpu"])
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    assert ckpt.load(run / ckpt.LAST).train.state[0].dtype == torch.bfloat16
    resumed = helpers.run_cli("train", "--resume", str(run), "train.max_steps=6", "-q")  # a fresh process: fp32 here
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load(run / ckpt.LAST).step == 6


def cut_evaluation_at(monkeypatch, at_step: int | None, nll_of_step=None) -> None:
    """Ctrl-C while the evaluation at `at_step` (None: the first) runs; evaluations score `nll_of_step(step)` if
    given."""
    from rnnlm.evaluate import Score
    from rnnlm.train import Trainer

    evaluate, cut = Trainer.evaluate, []

    def slow(self, split):
        if at_step in (None, self.tally.step) and not cut:  # once: a resumed run in this process evaluates
            cut.append(at_step)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
        return Score(nll_of_step(self.tally.step), 100, 0) if nll_of_step else evaluate(self, split)

    monkeypatch.setattr(Trainer, "evaluate", slow)


@pytest.mark.parametrize("steps, every, at_step", [(20, 10, 10), (20, 10, 20), (23, 10, 23), (24, 8, 24)],
                         ids=["mid-run", "final, an evaluation step", "final, between", "final, between records"])
def test_a_stop_signal_during_an_evaluation_saves_and_the_resumed_run_evaluates(tmp_path, monkeypatch, steps, every,
                                                                                at_step):
    """An evaluation can take a minute: Ctrl-C cuts it short and saves last.pt (the run's only checkpoint, when the
    final evaluation is its first), and the resumed run does that evaluation and logs what one run would have, in
    the same order."""
    budget = [f"train.max_steps={steps}", f"train.eval_every={every}"]
    cut_evaluation_at(monkeypatch, at_step)
    result = train(load_config(TINY, [*COMMON, *budget]), tmp_path / "run", progress=False)
    assert (result.stopped, result.step, result.signal) == ("interrupted", at_step, signal.SIGINT)
    assert ckpt.load(result.run_dir / ckpt.LAST).step == at_step
    assert [r["step"] for r in read_metrics(result.run_dir) if "val_loss" in r] == list(range(every, at_step, every))
    monkeypatch.undo()
    resumed = in_process("train", "--resume", str(result.run_dir), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert f"done at step {steps}" in resumed.stderr
    assert strip(result.run_dir) == reference(tmp_path, *budget)


def test_an_evaluation_owed_by_a_resumed_run_counts_for_patience(tmp_path, monkeypatch):
    """The evaluation a cut-short session owes can end the run by train.patience, as it would have unbroken."""
    worse_after_10 = lambda step: 1.0 if step <= 10 else 2.0  # noqa: E731
    overrides = [*COMMON, "train.max_steps=40", "train.eval_every=10", "train.patience=1"]
    cut_evaluation_at(monkeypatch, 20, worse_after_10)
    cut = train(load_config(TINY, overrides), tmp_path / "run", progress=False)
    assert (cut.stopped, cut.step) == ("interrupted", 20)
    resumed = train(load_config(TINY, overrides), cut.run_dir, resume=ckpt.load(cut.run_dir / ckpt.LAST),
                    progress=False)
    assert (resumed.stopped, resumed.step) == ("patience", 20)
    assert [r["step"] for r in read_metrics(cut.run_dir) if "val_loss" in r] == [10, 20]


def test_a_checkpoint_whose_training_state_is_damaged_is_one_line_on_resume(tmp_path):
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=4",
                   "-q").returncode == 0
    point = ckpt.load(run / ckpt.LAST)
    point.train.optimizer = {}  # what a hand edit or another tool might leave
    ckpt.save([run / ckpt.LAST], point)
    resumed = in_process("train", "--resume", str(run), "train.max_steps=8", "-q")
    assert resumed.returncode == 2
    message = resumed.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: {run / ckpt.LAST}: damaged checkpoint (its training state cannot be restored: ")
    assert message.endswith(f"start a new run from its weights: rnnlm train {run / 'config.yaml'} --init-from "
                            f"{run / ckpt.LAST} --out {tmp_path}")
    assert "Traceback" not in resumed.stderr


def test_a_time_budget_cut_in_its_final_evaluation_ends_there_on_resume(tmp_path, monkeypatch):
    """A time budget ends a session with room left for the final evaluation, so short of the budget: resumed with
    the budget as it was, the run does that evaluation and ends at the same step, not a step later."""
    from rnnlm.train import Trainer

    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 1.0)  # the final evaluation's room, as estimated
    cfg = load_config(TINY, [*COMMON, "train.max_steps=null", "train.max_time=1.5", "train.eval_every=100000"])
    cut_evaluation_at(monkeypatch, None)
    first = train(cfg, tmp_path / "run", progress=False)
    assert first.stopped == "interrupted"
    resumed = train(cfg, first.run_dir, resume=ckpt.load(first.run_dir / ckpt.LAST), progress=False)
    assert (resumed.stopped, resumed.step) == ("max_time", first.step)
    records = read_metrics(first.run_dir)
    assert [r["step"] for r in records if "val_loss" in r] == [first.step]
    assert [r["step"] for r in records if "train_loss" in r][-1] == first.step


def test_a_time_budget_spent_at_an_evaluation_step_stays_spent_on_resume(tmp_path, monkeypatch):
    """The step that spends the time budget is also due an evaluation: that evaluation is the run's last, and the
    checkpoint it saved must say the session ended there and hold no record already logged. It did not: the run
    resumed with the same budget trained on, and one with a larger budget logged the last steps' record twice."""
    from rnnlm.train import Trainer

    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 60.0)  # spent at the first step of a 60 s budget
    cfg = load_config(TINY, [*COMMON, "train.max_steps=null", "train.max_time=60", "train.eval_every=1",
                             "train.log_every=5"])
    first = train(cfg, tmp_path / "run", progress=False)
    assert (first.stopped, first.step) == ("max_time", 1)
    # its last record, logged, is not kept again
    assert ckpt.load(first.run_dir / ckpt.LAST).train.tally.gathered.steps == 0
    again = train(cfg, first.run_dir, resume=ckpt.load(first.run_dir / ckpt.LAST), progress=False)
    assert again.nothing_to_do and again.step == 1
    monkeypatch.setattr(Trainer, "_final_eval", lambda self: 0.0)
    more = load_config(TINY, [*COMMON, "train.max_steps=3", "train.max_time=600", "train.eval_every=1",
                              "train.log_every=5"])
    resumed = train(more, first.run_dir, resume=ckpt.load(first.run_dir / ckpt.LAST), progress=False)
    assert resumed.step == 3
    assert [r["step"] for r in read_metrics(first.run_dir) if "train_loss" in r] == [1, 3]


def test_a_resumed_session_logs_the_learning_rate_its_last_step_used(tmp_path, monkeypatch):
    """A session stopped mid-record keeps the record's sums for the next one to log; that record gave the rate
    computed again, with the resumed session's budget and clock, not the one its last step used: resumed with
    max_steps where it stopped, a cosine's floor."""
    from rnnlm import train as train_mod
    from rnnlm.train import Trainer

    used, rate, after = [], train_mod.learning_rate, Trainer.after_step
    monkeypatch.setattr(train_mod, "learning_rate", lambda *args: used.append(rate(*args)) or used[-1])
    monkeypatch.setattr(Trainer, "after_step", lambda self: (self.tally.step != 5 or os.kill(os.getpid(),
                                                             signal.SIGINT) or True) and after(self))
    settings = [*COMMON, "train.eval_every=100000", "train.log_every=100000", "train.schedule=cosine",
                "train.warmup_steps=0", "train.max_steps=null", "train.max_time=600"]
    first = train(load_config(TINY, settings), tmp_path / "run", progress=False)
    assert first.stopped == "interrupted" and read_metrics(first.run_dir) == []  # the record is kept, unlogged
    last_used = used[-1]
    again = load_config(TINY, [*settings, f"train.max_steps={first.step}"])
    train(again, first.run_dir, resume=ckpt.load(first.run_dir / ckpt.LAST), progress=False)
    record = [r for r in read_metrics(first.run_dir) if "train_loss" in r][-1]
    assert record["step"] == first.step and record["lr"] == last_used


def test_resuming_a_run_that_spent_its_time_budget_names_a_budget_that_gives_more(tmp_path):
    """It said train.max_time=SECONDS: a trial gave less than the run had spent (the budget is a total over every
    session), and had nothing to do again."""
    run = tmp_path / "run"
    assert in_process("train", TINY, "--out", str(tmp_path), "--name", "run", *COMMON, "train.max_steps=null",
                      "train.max_time=1", "-q").returncode == 0
    spent = ckpt.load(run / ckpt.LAST).train.tally.elapsed
    again = in_process("train", "--resume", str(run), "-q")
    assert again.returncode == 0 and again.stderr.rstrip().endswith(
        f"give it more with: rnnlm train --resume {run} train.max_time={2 * math.ceil(spent)} (seconds over every "
        f"session: {spent:.0f} spent)"), again.stderr
