"""Run directories: claimed atomically, one writer at a time (an OS lock that dies with its process), listed by
`rnnlm runs`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, assert_user_error, cli, run_cli
from rnnlm import checkpoint as ckpt
from rnnlm.metrics import read_metrics
from rnnlm.rundir import holder
from rnnlm.runs import list_runs

TINY = str(REPO / "configs" / "tiny.yaml")
FAST = ["model.hidden_size=8", "model.num_layers=1", "train.eval_every=5", "train.log_every=1"]


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rnnlm", "train", *args, "-q"], env=env, stderr=subprocess.PIPE,
                            text=True)


def wait_for_checkpoint(run, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (run / ckpt.LAST).exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)


def test_a_run_has_one_writer_and_a_killed_one_leaves_no_lock(tmp_path):
    run = tmp_path / "run"
    first = start(TINY, *FAST, "train.max_steps=1000000", "--out", str(tmp_path), "--name", "run")
    try:
        wait_for_checkpoint(run, first)
        assert holder(run) == first.pid
        code, _, err = cli("train", "--resume", str(run), "-q")
        assert code == 2
        assert err.strip() == (f"error: {run} is being trained by process {first.pid}; wait for it to end, "
                                         f"or stop it (kill {first.pid}) and then resume")
        # not "continue it with --resume", which the lock then refuses
        assert_user_error(cli("train", TINY, *FAST, "--out", str(tmp_path), "--name", "run", "-q"),
                          f"{run} is a run being trained by process {first.pid}; choose another --name")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert holder(run) is None  # the lock died with its process
    code, _, err = cli("train", "--resume", str(run), "train.max_steps=null", "train.max_epochs=1", "-q")
    assert code == 0, err


def test_a_start_killed_before_it_wrote_anything_leaves_its_name_free(tmp_path):
    """SIGKILL (or SIGTERM while the corpus is prepared) before a run writes its config leaves only the run's lock,
    which nobody holds: the name can be used again; a folder with anything else in it, or a held lock, cannot."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999999\n")
    assert_user_error(cli("train", "--resume", run, "-q"), "a start killed before it wrote anything", "start the "
                      "run again (its --name may be used again)")  # it was called "not a run directory"
    assert cli("train", TINY, *FAST, "train.max_steps=2", "--out", tmp_path, "--name", "run", "-q")[0] == 0
    assert (run / ckpt.LAST).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_user_error(cli("train", TINY, *FAST, "--out", tmp_path, "--name", "other", "-q"), "already exists")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_a_run_name_is_one_folder_name(tmp_path):
    for name in ("../escape", str(tmp_path / "abs"), "a/b", ".."):
        assert_user_error(cli("train", TINY, "--out", tmp_path / "runs", "--name", name), "--name",
                          "one folder name")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "abs").exists()
    assert_user_error(cli("train", TINY, "--out", tmp_path / "runs", "--name", ""), "--name '': a run's name is one "
                      "folder name, not blank; leave --name out")  # it said "without '/'"
    assert_user_error(cli("train", TINY, "--out", tmp_path / "runs", "--name", " "), "--name ' ': a run's name is one "
                      "folder name, not blank; leave --name out")  # a folder named by a space, blank in `rnnlm runs`
    assert_user_error(cli("train", TINY, "--out", tmp_path / "runs", "--name", "."), "--name '.': a run's name is one "
                      "folder name, not '.', which names a folder already there")  # it said "without '/'" too


def test_out_must_be_a_folder_and_a_name_not_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert_user_error(cli("train", TINY, "--out", afile), f"--out {afile}: a file, not a folder")
    assert_user_error(cli("train", TINY, "--out", tmp_path, "--name", "afile"),
                      f"{afile} is a file, not a run folder; choose another --name")
    assert afile.read_text() == "mine"


def test_out_at_a_run_is_refused_naming_resume_and_name(tmp_path, monkeypatch):
    """`--out checkpoints/book` meant as --name book trained a whole run inside the run book, where `rnnlm runs`
    did not list it (--name book is refused: it exists)."""
    code, _, err = cli("train", TINY, *FAST, "train.max_steps=2", "--out", tmp_path, "--name", "book", "-q")
    assert code == 0, err
    before = sorted(p.name for p in (tmp_path / "book").iterdir())
    assert_user_error(cli("train", TINY, *FAST, "--out", tmp_path / "book"),
                      f"--out {tmp_path / 'book'} is a run, and --out is the folder new runs are made in; continue it "
                      f"with rnnlm train --resume {tmp_path / 'book'}, or name a new run beside it with --out "
                      f"{tmp_path} --name NAME")
    assert sorted(p.name for p in (tmp_path / "book").iterdir()) == before
    # from inside the run, `--out .`: the folder beside it by name (`--out .` again was refused the same way)
    monkeypatch.chdir(tmp_path / "book")
    err = assert_user_error(cli("train", TINY, *FAST, "--out", "."), "--out . is a run")
    assert f"--out {tmp_path} --name NAME" in err


def test_runs_started_in_the_same_second_without_a_name_each_get_a_folder(tmp_path, monkeypatch):
    """A sweep started with & names its runs by the second they start: the later ones take -2, -3, ..."""
    import rnnlm.runs
    from rnnlm.distributed import Dist

    monkeypatch.setattr(rnnlm.runs.time, "strftime", lambda fmt: "20261207-081104")
    made = [rnnlm.runs.new_run_dir(tmp_path, "tiny", None, Dist()) for _ in range(3)]
    assert [p.name for p in made] == ["tiny-20261207-081104", "tiny-20261207-081104-2", "tiny-20261207-081104-3"]
    assert all(p.is_dir() for p in made)
    assert_user_error(cli("train", TINY, "--out", tmp_path, "--name", "tiny-20261207-081104"),
                      f"{made[0]} is an empty folder (a start that never began, or one beginning now); remove it or "
                      "choose another --name")
    (made[0] / "config.yaml").write_text("{}")  # a run's
    assert_user_error(cli("train", TINY, "--out", tmp_path, "--name", "tiny-20261207-081104"),
                      f"{made[0]} already exists; continue it with --resume {made[0]}")


def test_runs_are_listed_newest_first_with_their_status(tmp_path):
    code, _, err = cli("train", TINY, *FAST, "train.max_steps=10", "--out", str(tmp_path), "--name", "done", "-q")
    assert code == 0, err
    proc = start(TINY, *FAST, "train.max_steps=1000000", "--out", str(tmp_path), "--name", "later")
    try:
        wait_for_checkpoint(tmp_path / "later", proc)
        listed = {r.name: r for r in list_runs(tmp_path)}
        assert listed["later"].status == "running"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["later", "done"]  # the most recently active first
    assert [r.status for r in runs] == ["stopped", "finished"]
    assert runs[0].steps == ckpt.load(tmp_path / "later" / ckpt.LAST).step  # saved at Ctrl-C, after the last record
    assert runs[1].steps == 10 and runs[1].model == "lstm 1x8" and runs[1].dataset == "anbn"
    status, out, err = cli("runs", tmp_path)
    lines = out.splitlines()
    assert lines[0].split() == ["run", "model", "corpus", "steps", "best", "val", "bpc", "time", "status"]
    assert lines[2].split()[:4] == ["done", "lstm", "1x8", "anbn"] and lines[2].split()[-1] == "finished"
    parsed = [json.loads(line) for line in cli("runs", tmp_path, "--json")[1].splitlines()]
    assert [p["name"] for p in parsed] == ["later", "done"] and parsed[1]["best_val"] == runs[1].best_val


def test_a_file_gone_between_listing_and_reading_does_not_stop_the_listing(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("model: {cell: lstm, num_layers: 1, hidden_size: 8}\n", encoding="utf-8")
    (run / ".lock").write_text("")  # a run's, beside its config
    # listed but gone when read, as a running run's temporary checkpoint is once renamed
    (run / ".last.pt.tmp-1").symlink_to(tmp_path / "gone")
    assert [r.name for r in list_runs(tmp_path)] == ["r"]


def test_runs_names_a_missing_folder_lists_a_run_given_itself_and_counts_only_saved_steps(tmp_path):
    assert_user_error(cli("runs", tmp_path / "nope"), "no such folder")
    (tmp_path / "file").write_text("x")
    assert_user_error(cli("runs", tmp_path / "file"), "not a folder")
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.yaml").write_text("model: {cell: gru, num_layers: 1, hidden_size: 8}\n", encoding="utf-8")
    (run / "metrics.jsonl").write_text('{"step": 180, "train_loss": 2.0}\n', encoding="utf-8")
    (run / "status.json").write_text('{"stopped": "interrupted", "step": 0}', encoding="utf-8")
    [info] = list_runs(run)  # a run folder itself
    assert (info.name, info.steps, info.status) == ("killed", 0, "stopped")  # nothing saved: a resume starts over
    (tmp_path / "config.yaml").write_text("model: {cell: lstm}\n", encoding="utf-8")  # a project's own config
    assert [r.name for r in list_runs(tmp_path)] == ["killed"]  # the folder is not a run: its runs are listed
    (run / "last.pt").write_bytes(b"")
    (run / "status.json").write_text("[1, 2]", encoding="utf-8")  # not what a run writes: listed, as stopped
    assert [(r.steps, r.status) for r in list_runs(run)] == [(180, "stopped")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_kill_while_the_corpus_is_prepared_leaves_no_run_and_no_half_store(tmp_path, sig):
    """SIGTERM, or SIGHUP (the terminal closed), before training starts unwinds (training's own stop takes over
    later): the run folder it made is removed, so its name stays free, and the store being written goes too."""
    text = tmp_path / "big.txt"
    text.write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 1_000_000)  # 44 MB: a while to prepare
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "rnnlm", "train", TINY, "data.dataset=text", f"data.path={text}",
                             "--data-dir", str(data), "--out", str(tmp_path / "runs"), "--name", "big", "-q"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (data / "text").is_dir() or not any(p.name.startswith(".store-") and ".tmp-" in p.name
                                                   for p in (data / "text").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.001)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig and "Traceback" not in err, err
    assert not (tmp_path / "runs" / "big").exists()
    # it said nothing, as a run that ended well says nothing with -q
    assert err.splitlines()[-1] == f"stopped before the run saved anything ({tmp_path / 'runs' / 'big'} removed)", err
    assert [p.name for p in (data / "text").iterdir() if ".tmp-" in p.name] == []


def test_a_run_killed_outright_counts_the_steps_its_last_checkpoint_holds(tmp_path):
    """SIGKILL leaves records logged after the last checkpoint (and no status of its own): a resume redoes them."""
    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "train.eval_every=10", "train.log_every=2", "--out",
                   str(tmp_path), "--name", "killed", "-q")
    assert done.returncode == 0, done.stderr
    run = tmp_path / "killed"
    saved = ckpt.load(run / ckpt.LAST)
    [before] = list_runs(run)
    # the final evaluation's time: its record is stamped before it runs, the checkpoint after
    assert before.seconds == saved.train.tally.elapsed > max(r["elapsed"] for r in read_metrics(run / "metrics.jsonl"))
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 12, "epoch": 0, "train_loss": 2.0}\n{"step": 14, "epoch": 0, "train_loss": 2.0}\n'
                '{"step": 14, "epoch": 0, "val_loss": 0.001, "bpc": 0.002, "elapsed": 999.0}\n')
    (run / "status.json").unlink()  # the killed session wrote none
    [info] = list_runs(run)
    # what a resume drops is not shown: its steps, its evaluation (best.pt never held it), its time
    assert (info.steps, info.status, info.best_val, info.seconds) == (10, "stopped", before.best_val, before.seconds)


def test_resume_of_a_folder_that_is_not_a_run_says_what_it_is(tmp_path):
    assert_user_error(cli("train", "--resume", tmp_path / "e2"), "--resume", "e2: not a run directory (no such folder)")
    (tmp_path / "f").write_text("x")
    assert_user_error(cli("train", "--resume", tmp_path / "f"), "f: not a run directory (a file)")
    assert_user_error(cli("train", "--resume", tmp_path), "not a run directory (it has no config.yaml or last.pt)")
    project = tmp_path / "proj"  # a project's own config: it was taken for a run stopped early, rewritten and trained
    project.mkdir()
    (project / "config.yaml").write_text("# mine, with comments\ntrain: {max_steps: 2}\n")
    assert_user_error(cli("train", "--resume", project), f"--resume {project}: not a run directory (its config.yaml "
                      f"has nothing training writes beside it); for a new run with that config: rnnlm train "
                      f"{project / 'config.yaml'}")
    assert os.listdir(project) == ["config.yaml"]
    assert (project / "config.yaml").read_text() == "# mine, with comments\ntrain: {max_steps: 2}\n"


def test_a_new_run_from_a_runs_config_is_named_after_that_run(tmp_path, monkeypatch):
    """`rnnlm train RUN/config.yaml --init-from RUN` made config-<time>; a config.yaml that is no run's keeps its name."""
    from rnnlm.cli import _stem

    run = tmp_path / "lt-20261207-093502-2"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    (run / "last.pt").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert (_stem(run / "config.yaml"), _stem(Path("config.yaml")), _stem(Path("tiny.yaml"))) == ("lt", "config", "tiny")


def test_a_resumed_session_killed_before_its_first_checkpoint_is_not_listed_as_finished(tmp_path, monkeypatch):
    """The status the session before wrote (finished at max_steps) stood for a resume with a larger budget that was
    killed before it saved: `rnnlm runs` said finished, and nobody would resume it."""
    from rnnlm.train import Trainer

    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "train.eval_every=10", "--out", str(tmp_path),
                   "--name", "grown", "-q")
    assert done.returncode == 0, done.stderr
    assert [r.status for r in list_runs(tmp_path / "grown")] == ["finished"]

    class Killed(BaseException):
        """What SIGKILL leaves: nothing run after it."""

    def killed(self):
        raise Killed

    monkeypatch.setattr(Trainer, "train_one", killed)
    with pytest.raises(Killed):
        cli("train", "--resume", tmp_path / "grown", "train.max_steps=40", "-q")
    assert [(r.steps, r.status) for r in list_runs(tmp_path / "grown")] == [(10, "stopped")]


def test_a_resume_into_a_folder_it_cannot_write_is_told_how_to_go_on(tmp_path, monkeypatch):
    """The advice was to choose --out or --name, which a resume refuses."""
    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "--out", str(tmp_path), "--name", "ro", "-q")
    assert done.returncode == 0, done.stderr
    real = Path.write_bytes

    def read_only(self: Path, data: bytes) -> int:  # as a folder root may not write to (tests run as root)
        if self.name.startswith(".write-test-"):
            raise PermissionError(13, "Permission denied")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    err = assert_user_error(cli("train", "--resume", tmp_path / "ro", "train.max_steps=20", "-q"),
                            "cannot write the run directory", "Permission denied; make it writable, or start a new "
                            f"run from its weights elsewhere: rnnlm train {tmp_path / 'ro' / 'config.yaml'} "
                            f"--init-from {tmp_path / 'ro'} --out FOLDER", max_lines=3)
    assert "--name" not in err


def test_runs_lists_a_run_whose_config_is_broken_and_not_a_project_folder_with_a_config(tmp_path):
    """A config.yaml edited into bad YAML hid its run; a folder of configs beside the runs was listed as a run."""
    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "--out", str(tmp_path), "--name", "edited", "-q")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "edited" / "config.yaml", "a", encoding="utf-8") as f:
        f.write("model: [\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.yaml").write_text(Path(TINY).read_text())
    assert [(r.name, r.model, r.steps, r.status) for r in list_runs(tmp_path)] == [("edited", "?", 10, "finished")]


def test_runs_lists_every_run_whatever_a_hand_edit_left_in_it(tmp_path):
    """An empty `data:` section, a step written as a string, an evaluation without its bpc: each raised a traceback
    that hid every other run of the folder. A run stopped before its first checkpoint showed the time and the loss
    a resume throws away (it starts over)."""
    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "--out", str(tmp_path), "--name", "a", "-q")
    assert done.returncode == 0, done.stderr
    for name in ("b", "lost", "removed", "nolast"):
        shutil.copytree(tmp_path / "a", tmp_path / name)
    config = (tmp_path / "a" / "config.yaml").read_text(encoding="utf-8")
    (tmp_path / "a" / "config.yaml").write_text(re.sub(r"(?m)^data:\n(  .*\n)+", "data:\n", config), encoding="utf-8")
    with open(tmp_path / "b" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": "300", "val_loss": 0.5}\n{"step": 10, "val_loss": 0.25}\n')
    for checkpoint in [*(tmp_path / "lost").glob("*.pt"), *(tmp_path / "removed").glob("*.pt")]:
        checkpoint.unlink()
    # as if killed while its first checkpoint was written: the evaluation's record is logged just before
    (tmp_path / "lost" / "status.json").unlink()
    first_eval = next(r["step"] for r in read_metrics(tmp_path / "lost") if "val_loss" in r)
    upto = [r for r in read_metrics(tmp_path / "lost") if r["step"] <= first_eval]
    (tmp_path / "lost" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in upto))
    (tmp_path / "nolast" / "last.pt").unlink()
    status, out, err = cli("runs", tmp_path)
    assert status == 0 and "Traceback" not in err, err
    listed = {r.name: r for r in list_runs(tmp_path)}
    assert listed["a"].model == "lstm 1x8" and listed["a"].corpus == "?"
    assert listed["b"].steps == 10 and listed["b"].best_val == 0.25 and listed["b"].best_bpc is None
    assert (listed["lost"].steps, listed["lost"].seconds, listed["lost"].best_val, listed["lost"].status) == (
        0, 0.0, None, "stopped")
    # what a resume needs was removed: said so (a resume is refused), with the steps the run trained
    assert (listed["removed"].steps, listed["removed"].status) == (10, "no checkpoints")
    assert (listed["nolast"].steps, listed["nolast"].status) == (10, "no last.pt")


def test_a_stop_that_cannot_wait_for_the_step_says_what_it_lost(tmp_path, monkeypatch):
    """A second Ctrl-C stops at once: the run ended silently, as if it had finished."""
    from rnnlm.train import Trainer

    done = run_cli("train", TINY, *FAST, "train.max_steps=10", "--out", str(tmp_path), "--name", "r", "-q")
    assert done.returncode == 0, done.stderr

    def second_ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_one", second_ctrl_c)
    status, _, err = cli("train", "--resume", tmp_path / "r", "train.max_steps=20", "-q")
    assert status == 130 and err.splitlines()[-1] == ("stopped at once: the steps since the last checkpoint are lost; "
                                                      f"resume with: rnnlm train --resume {tmp_path / 'r'}"), err


def test_runs_tells_a_padded_records_run_from_a_packed_one():
    """Both showed `names`, though their validation losses are not alike (each record alone, or the state carried
    from record to record): a makemore user compared them as one (a user trial)."""
    from rnnlm.runs import _corpus

    assert _corpus({"dataset": "names", "records": "pad"}) == "names (pad)"
    assert _corpus({"dataset": "names", "records": "pack", "path": "/x/mine.txt"}) == "names mine.txt"
    assert _corpus({"dataset": "names", "records": "pad", "path": "/x/mine.txt"}) == "names mine.txt (pad)"


def test_a_run_named_without_its_folder_or_by_a_file_in_it_is_pointed_at(tmp_path, monkeypatch):
    """A user trial: `rnnlm sample names-gru` (the run is checkpoints/names-gru) and `--resume RUN/last.pt` were told
    only that nothing of that name is a checkpoint or a run directory."""
    run = tmp_path / "checkpoints" / "names-gru"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: {cell: gru}\n", encoding="utf-8")
    (run / "last.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("sample", "names-gru"), "error: names-gru: no such checkpoint or run directory (did you mean "
                      "checkpoints/names-gru?)")
    assert_user_error(cli("train", "--resume", "names-gru"), "--resume names-gru: not a run directory (no such "
                      "folder); did you mean --resume checkpoints/names-gru?")
    assert_user_error(cli("train", "--resume", run / "last.pt"), f"--resume {run / 'last.pt'}: not a run directory "
                      f"(a file); did you mean --resume {run}?")
    assert_user_error(cli("sample", "other"), "error: other: no such checkpoint or run directory")
