"""Issue 8's rule, case by case: a user's mistake is a short message on stderr naming what is wrong and
how to fix it, exit status 2, no traceback, and nothing written or overwritten.

The CLI runs in-process here (importing torch once), the way `rnnlm` runs it; tests/test_cli.py runs
the same entry point as a real subprocess.
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
import torch

from helpers import REPO, assert_user_error, cli
from rnnlm.atomic import atomic_file
from rnnlm.errors import RnnlmError

TEXT_CFG = str(REPO / "configs" / "text_lstm.yaml")
NAMES_CFG = str(REPO / "configs" / "names_gru.yaml")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "small.txt").write_text("hello world\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "binary.dat").write_bytes(b"\x7fELF\x00\x00\x01" + bytes(range(256)))
    (tmp_path / "nothing").mkdir()
    (tmp_path / "names.txt").write_text("anna\nbob\n\ncarl\n")
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 400)
    return tmp_path


def written(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needles", [
    (["train", "no/such.yaml"], ["config file 'no/such.yaml' not found", f"the shipped configs are in {REPO}/configs"]),
    (["train", TEXT_CFG, "model.hiden_size=64"], ["unknown config key model.hiden_size", "did you mean 'hidden_size'"]),
    (["train", TEXT_CFG, "model.hidden_size=wide"], ["model.hidden_size='wide'", "expected an integer"]),
    (["train", TEXT_CFG, "model.hidden_size=0"], ["model.hidden_size=0 is not allowed"]),
    (["train", TEXT_CFG, "train.lr=-0.1"], ["train.lr=-0.1 is not allowed"]),
    (["train", TEXT_CFG, "model.dropout=1.0"], ["model.dropout=1.0 is not allowed", "[0, 1)"]),
    (["train", TEXT_CFG, "model.cell=lstn"], ["model.cell='lstn'", "did you mean 'lstm'"]),
    (["train", TEXT_CFG, "data.dataset=shakespear"], ["'shakespear' is not a corpus", "did you mean 'shakespeare'"]),
    (["train", TEXT_CFG, "train.optimizer=adamx"], ["train.optimizer='adamx'", "adam, adamw, sgd, rmsprop"]),
    (["train", TEXT_CFG, "train.schedule=linear"], ["train.schedule='linear'", "constant, cosine, char_rnn"]),
    (["train", TEXT_CFG, "train.lr"], ["override 'train.lr' is malformed", "section.key=value"]),
    (["train", TEXT_CFG, "data.dataset=hello", "data.path=null", "data.records=pad"],
     ["data.records=pad batches whole records, but the hello corpus is one stream of text", "give data.records=pack"]),
])
def test_config_mistakes(tmp_path, args, needles):
    assert_user_error(cli(*args, "--out", str(tmp_path / "runs")), *needles)


def test_a_sampling_key_that_can_be_off_says_so_once(tmp_path):
    err = assert_user_error(cli("train", TEXT_CFG, "sample.top_k=0", "--out", str(tmp_path / "runs")))
    assert err.strip().endswith("sample.top_k=0 is not allowed: an integer >= 1, or off (null in a config, 0 as "
                                "--top-k)"), err  # it went on ", or null"


def test_a_file_given_where_a_corpus_name_goes_points_at_the_text_corpus(tmp_path):
    assert_user_error(cli("data", "info", "notes/mine.txt", "--data-dir", tmp_path),
                      "'notes/mine.txt' is not a corpus", "the corpus text, with data.path=notes/mine.txt")
    # said of the name given: it was "data.dataset='nmes' is not a corpus", a key the user never typed
    assert_user_error(cli("data", "fetch", "nmes", "--data-dir", tmp_path),
                      "error: 'nmes' is not a corpus (did you mean 'names'?); choose one of ")
    assert not (tmp_path / "runs").exists()


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  cell: lstm\n  hidden_size: [64\ntrain:\n  lr: 0.1\n")
    assert_user_error(cli("train", str(bad), "--out", str(tmp_path / "runs")), "bad.yaml: line", "YAML syntax error")
    assert not (tmp_path / "runs").exists()


def test_seq_len_longer_than_the_training_split(files):
    err = assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'small.txt'}", "train.seq_len=1000",
                                "train.batch_size=1", "--out", str(files / "runs")),
                            "too few for train.batch_size=1", "train.seq_len=1000")
    assert "lower train.seq_len, or use more text" in err  # batch_size is 1 already
    assert not (files / "runs").exists()


def test_a_text_too_short_for_the_smallest_minibatch_says_so(tmp_path):
    """At train.batch_size=1 and train.seq_len=1 it said to lower one of them, and of "1 characters"."""
    (tmp_path / "one.txt").write_text("a", encoding="utf-8")
    err = assert_user_error(cli("train", TEXT_CFG, f"data.path={tmp_path / 'one.txt'}", "data.splits=[1.0,0.0,0.0]",
                                "train.batch_size=1", "train.seq_len=1", "--out", tmp_path / "runs",
                                "--data-dir", tmp_path / "data"),
                            "the training split has 1 character, too few for train.batch_size=1 streams with "
                            "train.seq_len=1; use more text")
    assert "lower" not in err


def test_batch_larger_than_the_corpus_allows(files):
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "train.batch_size=4096",
                          "--out", str(files / "runs")), "too few for train.batch_size=4096")
    assert not (files / "runs").exists()


# --- data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, needles", [
    ("missing.txt", ["missing.txt", "no such file"]),
    ("empty.txt", ["empty.txt", "empty"]),
    ("latin1.txt", ["latin1.txt", "not UTF-8", "byte offset 3"]),
    ("binary.dat", ["binary.dat", "binary file"]),
    ("nothing", ["nothing", "no text"]),
])
def test_data_mistakes(files, name, needles):
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / name}", "--out", str(files / "runs")), *needles)
    assert not (files / "runs").exists()


def test_a_line_corpus_with_an_empty_line(files):
    assert_user_error(cli("train", NAMES_CFG, f"data.path={files / 'names.txt'}", "--out", str(files / "runs")),
                      "line 3 is empty")
    assert not (files / "runs").exists()


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code, _, err = cli("train", str(REPO / "configs" / "tiny.yaml"), "train.max_steps=5", "train.eval_every=5",
                       "--out", str(out), "--name", "ok", "-q")
    assert code == 0, err
    return out / "ok"


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("damage, needles", [
    ("missing", ["no such checkpoint"]),
    ("empty", ["the file is empty"]),
    ("truncated", ["corrupted, truncated or not a checkpoint"]),
    ("corrupted", ["corrupted"]),  # a damaged member fails its checksum, or the archive does not read
    ("foreign", ["not an rnnlm checkpoint"]),
    ("future", ["checkpoint format 99"]),
    ("text", ["corrupted, truncated or not a checkpoint"]),
])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_damaged_checkpoints(run, tmp_path, damage, needles, command):
    good = (run / "best.pt").read_bytes()
    path = tmp_path / "model.pt"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "corrupted":
        path.write_bytes(good[:200] + bytes(b ^ 0x5A for b in good[200:400]) + good[400:])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    elif damage == "future":
        payload = torch.load(run / "best.pt", weights_only=True)
        torch.save({**payload, "version": 99}, path)
    elif damage == "text":
        path.write_text("I am a README, not a model\n")
    assert_user_error(cli(command, str(path)), *needles)


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_crafted_pickle_never_runs(tmp_path, command):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "rnnlm-checkpoint", "version": 1, "model": Payload(marker)}, path)
    assert_user_error(cli(command, str(path)), "refused to load")
    assert not marker.exists()


# --- environment ----------------------------------------------------------------------------------


def test_output_directory_not_writable(files):
    blocker = files / "a-file"
    blocker.write_text("not a folder")
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "--out", str(blocker / "runs")),
                      "cannot write the run directory", "--out")
    assert blocker.read_text() == "not a folder"


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(files, monkeypatch):
    from rnnlm import checkpoint as ckpt

    real_write = ckpt._write

    def disk_full_after_the_first_last_pt(path: Path, data) -> None:
        """Once a last.pt exists, writes half of the new one to the temporary file, then fails as a full disk does."""
        if path.name != "last.pt" or not path.exists():
            return real_write(path, data)
        with atomic_file(path) as f:
            f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt, "_write", disk_full_after_the_first_last_pt)
    run_dir = files / "runs" / "full"
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "model.hidden_size=8",
                          "train.warmup_steps=0",
                          "model.num_layers=1", "train.seq_len=8", "train.batch_size=4", "train.eval_every=2",
                          "train.max_steps=6", "--out", str(files / "runs"), "--name", "full", "-q"),
                      "No space left on device", "the previous last.pt is intact", max_lines=3)
    assert ckpt.load(run_dir / "last.pt").step == 2  # the checkpoint before the failed write, intact
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]


def test_disk_full_while_a_metrics_record_is_written_is_a_message(files, monkeypatch):
    """It was a traceback, and a second one from closing the file."""
    from rnnlm import metrics

    class FillsUp(io.StringIO):
        def write(self, text: str) -> int:
            if self.getvalue().count("\n") >= 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(text)

        def close(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what it still held

    monkeypatch.setattr(metrics, "open", lambda *a, **k: FillsUp(), raising=False)
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "model.hidden_size=8",
                          "train.warmup_steps=0",
                          "model.num_layers=1", "train.seq_len=8", "train.batch_size=4", "train.log_every=1",
                          "train.max_steps=20", "--out", str(files / "runs"), "--name", "full", "-q"),
                      "metrics.jsonl: could not write a record (No space left on device); make room and resume",
                      max_lines=3)


def test_cuda_on_a_machine_without_it(files):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "train.device=cuda",
                          "--out", str(files / "runs")), "no CUDA device", "train.device=cpu")
    assert not (files / "runs").exists()


# --- sampling and evaluation ------------------------------------------------------------------------


@pytest.mark.parametrize("args, needles", [
    (["--length", "0"], ["--length"]),
    (["--length", "-5"], ["--length"]),
    (["--temp", "-1"], ["--temp", ">= 0"]),
    (["--top-p", "0"], ["--top-p", "(0, 1]"]),
    (["--top-p", "1.5"], ["--top-p", "(0, 1]"]),
])
def test_sampling_mistakes(run, args, needles):
    assert_user_error(cli("sample", str(run), *args), *needles)


def test_eval_file_with_no_characters(run, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_user_error(cli("eval", str(run), "--file", str(empty)), "empty.txt")


def test_a_bug_keeps_its_traceback_and_is_not_taken_for_a_user_mistake(monkeypatch, tmp_path):
    import rnnlm.train

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(rnnlm.train, "train", broken)
    with pytest.raises(ZeroDivisionError):
        cli("train", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path))


@pytest.mark.parametrize("how", ["--debug", "RNNLM_DEBUG=1"])
def test_debug_shows_the_traceback_behind_a_user_mistake(monkeypatch, tmp_path, how):
    monkeypatch.setenv("RNNLM_DEBUG", "")  # off; --debug sets it for the process, and monkeypatch unsets it after
    args = ["train", str(tmp_path / "missing.yaml")]
    assert_user_error(cli(*args), "missing.yaml")  # without: one line, exit 2
    if how == "--debug":
        args.insert(0, "--debug")
    else:
        monkeypatch.setenv("RNNLM_DEBUG", "1")
    with pytest.raises(RnnlmError, match="missing.yaml"):
        cli(*args)


def test_a_run_folder_removed_while_it_trains_stops_the_run_and_stays_gone(files, monkeypatch):
    """The next checkpoint made the folder again, holding checkpoints alone (no config, no metrics, no lock), and a
    second run could resume it beside the first; a second run that took the name had its folder written into, then
    removed as the first run's failed start."""
    import shutil

    from rnnlm.train import Trainer

    real = Trainer.train_one

    run_dir = files / "runs" / "gone"
    for another_run_took_the_name in (False, True):
        def removed_at_step_3(self):
            if self.tally.step == 3:
                shutil.rmtree(self.run_dir)
                if another_run_took_the_name:
                    self.run_dir.mkdir()
                    (self.run_dir / "config.yaml").write_text("another run's")
            return real(self)

        monkeypatch.setattr(Trainer, "train_one", removed_at_step_3)
        assert_user_error(cli("train", TEXT_CFG, f"data.path={files / 'text.txt'}", "model.hidden_size=8",
                              "train.warmup_steps=0", "model.num_layers=1", "train.seq_len=8", "train.batch_size=4", "train.eval_every=5",
                              "train.max_steps=20", "--out", str(files / "runs"), "--name", "gone", "-q"),
                          f"{run_dir} was removed while the run trained; nothing more is saved", max_lines=3)
        if another_run_took_the_name:  # its folder as it made it: neither written into nor removed
            assert [p.name for p in run_dir.iterdir()] == ["config.yaml"]
            shutil.rmtree(run_dir)
        else:
            assert not run_dir.exists()


def test_too_few_for_the_batch_counts_a_packed_records_split_as_training_shows_it(tmp_path):
    """The start line says 21,842 characters of anbn; the refusal said 23,843 "characters", each record's <eos>
    counted in."""
    err = assert_user_error(cli("train", REPO / "configs" / "tiny.yaml", "train.batch_size=100000",
                                "--out", tmp_path / "runs"), "too few for train.batch_size=100000")
    assert "symbols (characters and each record's <eos>), too few" in err, err


def test_a_refused_kernel_tarball_in_the_data_root_says_what_it_stands_before(tmp_path, monkeypatch):
    """A trial's data root held a damaged linux-6.1.tar.xz: the refusal said data.path twice and to install the
    linux-source package, which was installed, and whose tarball the damaged file kept from being read."""
    from rnnlm.data import linux

    installed = tmp_path / "src" / "linux-source-6.1.tar.xz"
    installed.parent.mkdir()
    installed.write_bytes(b"a tarball")
    monkeypatch.setattr(linux, "SYSTEM_TARBALLS", str(tmp_path / "src" / "linux-source-*.tar.xz"))
    pinned = tmp_path / "data" / linux.KERNEL_RELEASE.relpath
    pinned.parent.mkdir(parents=True)
    pinned.write_bytes(b"not the release")
    status, _, err = cli("data", "info", "linux", "--data-dir", tmp_path / "data")
    assert status == 2 and f"{pinned} has sha256 " in err and err.count("data.path") == 1, err
    assert err.rstrip().endswith(f"Without it, the installed {installed} is read."), err
