"""Issue 22's matrix, tried as a hostile or careless user would: every case is exit status 2 and a one-line message
(or works), nothing that existed before the command is lost or replaced, and a refused case stays under 500 MB.

Cases that belong to one module live beside it: crafted checkpoint files in test_checkpoint.py, one writer per run
in test_runs.py, an edited config.yaml on resume in test_resume.py, trickling and stalled servers in
data/test_download.py, SIGKILL during checkpoint writes in test_resume.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import REPO, assert_user_error, cli, make_checkpoint, measured
from rnnlm import checkpoint as ckpt

TINY = str(REPO / "configs" / "tiny.yaml")
PEAK_MB = 500


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "hello.pt", dataset="hello", chars="helo", seed=1)


# ---- configs ---------------------------------------------------------------------------------------------------------


def test_an_alias_bomb_in_a_value_costs_a_line(tmp_path):
    """Nine levels of nine aliases: 387 million strings if anything expanded the value to print it."""
    levels = ["    - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("train:\n  seq_len:\n" + "\n".join(levels) + "\n", encoding="utf-8")
    result, peak = measured("train", bomb, "--out", tmp_path / "runs")
    err = assert_user_error(result, "train.seq_len=", "wrong type")
    assert len(err) < 400 and peak < PEAK_MB and not (tmp_path / "runs").exists()


def test_a_key_given_twice_names_both_lines(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  lr: 0.01\n  batch_size: 4\n  lr: 0.1\n", encoding="utf-8")
    assert_user_error(cli("train", config), "'lr' is given twice (lines 2 and 4); keep one")
    assert_user_error(cli("config", config), "given twice")


def test_a_config_that_is_a_fifo_is_named_as_one(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert_user_error(cli("train", fifo, "--out", tmp_path / "runs"), "cannot be read (it is not a regular file)")


@pytest.mark.parametrize("override, needle", [
    ("train.seed=18446744073709551616", "train.seed=18446744073709551616 is not allowed: an integer in [0, 2**63)"),
    ("train.seed=-1", "train.seed=-1 is not allowed"),
])
def test_seeds_out_of_range_are_named(tmp_path, override, needle):
    assert_user_error(cli("train", TINY, override, "--out", tmp_path / "runs"), needle)


@pytest.mark.parametrize("override, needle", [
    ("model.num_layers=10000000", "model.num_layers=10000000 needs about"),  # terabytes: too big for any machine
    ("model.hidden_size=1000000000", "model.hidden_size=1000000000 with model.num_layers=1 needs about"),
    ("train.seq_len=100000000000", "to train on train.batch_size=16 x train.seq_len=100000000000, and"),
])
def test_a_model_too_big_for_the_machine_is_refused_before_allocating(tmp_path, override, needle):
    result, peak = measured("train", TINY, override, "--out", tmp_path / "runs")
    assert_user_error(result, needle, "GB free; choose a smaller model, train.batch_size or train.seq_len")
    assert peak < PEAK_MB and not (tmp_path / "runs").exists()


# ---- checkpoints through the commands --------------------------------------------------------------------------------


def damaged(folder: Path, model: Path, change) -> Path:
    point = ckpt.load(model)
    change(point.model)
    ckpt.save([folder / "last.pt"], point)
    return folder


@pytest.mark.parametrize("command", [["sample"], ["eval"], ["train", "--resume"]])
def test_weights_that_do_not_fit_are_a_message_in_every_command(tmp_path, model, command):
    run = damaged(tmp_path, model, lambda m: m.update({"decoder.bias": torch.zeros(99)}))
    before = (run / "last.pt").read_bytes()
    assert_user_error(cli(*command, run), "decoder.bias is (99,), the config makes it (6,)")
    assert (run / "last.pt").read_bytes() == before


def test_a_plain_pickle_is_refused_without_a_torch_warning(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"model": [1, 2, 3]}))
    assert_user_error(cli("sample", path), "refused to load: a plain pickle")  # one line: no UserWarning either


def test_non_finite_weights_are_refused_unless_forced(tmp_path, model):
    run = damaged(tmp_path, model, lambda m: m["rnn.weight_hh_l0"].view(-1)[3:5].fill_(math.nan))
    refused = cli("sample", run, "--prime", "he")
    assert_user_error(refused, "rnn.weight_hh_l0 hold NaN or infinite", "--force")
    assert refused[1] == ""  # nothing on stdout, not even the prime
    assert_user_error(cli("eval", run), "rnn.weight_hh_l0 hold NaN or infinite", "--force")
    status, out, err = cli("sample", run, "--force", "--length", "5", "--seed", "1")
    assert status == 0 and err.startswith("warning: ") and "NaN or infinite" in err
    status, out, err = cli("eval", run, "--force")
    assert status == 0 and "perplexity nan" in out, out  # not inf: the loss is no number at all
    status, out, err = cli("eval", run, "--force", "--json")
    score = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert status == 0 and score["nll"] is None and score["perplexity"] is None and score["parts"][0]["bpc"] is None


# ---- numbers ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, needle", [
    (["--temp", "nan"], "--temp nan"),
    (["--temp", "inf"], "--temp inf"),
    (["--top-p", "nan"], "--top-p nan"),
    (["--seed", str(2**64)], f"--seed {2**64}: must be in [0, 2**63)"),
    (["--seed", "-3"], "--seed -3"),
])
def test_numbers_that_are_not_usable_are_named(model, flags, needle):
    assert_user_error(cli("sample", model, *flags), needle)


def test_a_huge_context_reads_like_the_whole_text(tmp_path, model):
    text = tmp_path / "t.txt"
    text.write_text("hello " * 300, encoding="utf-8")
    (status, out, err), peak = measured("eval", model, "--file", text, "--context", 10**9, "--json")
    whole = json.loads(cli("eval", model, "--file", text, "--context", 1800, "--json")[1])
    assert status == 0 and json.loads(out)["nll"] == whole["nll"] and peak < PEAK_MB


# ---- outputs ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def special(kind: str, path: Path):
    """A folder, a FIFO or a listening socket at `path`."""
    if kind == "folder":
        path.mkdir()
        yield
    elif kind == "FIFO":
        os.mkfifo(path)
        yield
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
            yield


def out_commands(model: Path, tmp_path: Path) -> dict[str, list[object]]:
    from test_viz import fake_run  # noqa: PLC0415 (a fixture builder of the plot tests)

    return {"sample": ["sample", model, "--length", "5"],
            "viz": ["viz", model, "--text", "hellohello"],
            "plot": ["plot", fake_run(tmp_path / "run", 1.0)]}


@pytest.mark.parametrize("kind", ["folder", "FIFO", "socket"])
@pytest.mark.parametrize("command", ["sample", "viz", "plot"])
def test_an_out_that_is_not_a_file_is_refused_and_left_alone(tmp_path, model, kind, command):
    args = out_commands(model, tmp_path)[command]
    target = tmp_path / "target"
    with special(kind, target):
        mode = target.stat().st_mode
        assert_user_error(cli(*args, "--out", target), f"--out {target} is a {kind}, not a file")
        assert target.stat().st_mode == mode


@pytest.mark.parametrize("command", ["sample", "viz", "plot"])
def test_an_out_that_is_a_symlink_is_written_through(tmp_path, model, command):
    pytest.importorskip("matplotlib") if command == "plot" else None
    args = out_commands(model, tmp_path)[command]
    real, link = tmp_path / "real.png", tmp_path / "link.png"  # plot draws the format its suffix names
    real.write_text("old", encoding="utf-8")
    link.symlink_to(real)
    status, out, err = cli(*args, "--out", link)
    assert status == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real) and real.read_bytes() not in (b"", b"old")


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 KB tmpfs: a real full disk. Needs the right to mount (root in CI's container); skipped without it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("command", ["sample", "viz", "plot"])
def test_a_full_disk_is_a_message_and_the_old_file_is_kept(tmp_path, model, small_disk, command):
    pytest.importorskip("matplotlib") if command == "plot" else None
    args = out_commands(model, tmp_path)[command]
    old = small_disk / "old.png"
    old.write_bytes(b"yesterday" * 5000)  # 45 KB of 64: what a new file needs does not fit beside it
    big = {"sample": ["--length", "60000", "--seed", "1"], "viz": [], "plot": []}[command]
    if command == "viz":
        args = ["viz", model, "--text", "hello" * 6000, "--chars", "30000"]
    assert_user_error(cli(*args, *big, "--out", old), f"--out {old}", "No space left on device",
                      "nothing was replaced", max_lines=2)
    assert old.read_bytes() == b"yesterday" * 5000 and [p.name for p in small_disk.iterdir()] == ["old.png"]


@pytest.mark.parametrize("ylim", ["nan,2", "inf,", "1,-inf", "5,1", "2,2", "a,b", "1,2,3"])
def test_a_loss_axis_that_cannot_be_drawn_is_refused(tmp_path, ylim):
    from test_viz import fake_run  # noqa: PLC0415 (a fixture builder of the plot tests)

    assert_user_error(cli("plot", fake_run(tmp_path / "run", 1.0), "--ylim", ylim, "--out", tmp_path / "p.png"),
                      f"--ylim {ylim}: give LOW,HIGH")
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("ylim, message", [("5,", "--ylim 5,: above every loss plotted (0.2121-0.9487 nats/char); "
                                                  "give a LOW below 0.9487"),
                                            (",0.1", "--ylim ,0.1: below every loss plotted (0.2121-0.9487 nats/char); "
                                                     "give a HIGH above 0.2121")])
def test_a_loss_axis_with_one_end_past_every_curve_is_refused(tmp_path, ylim, message):
    """With the other end drawn from the curves, matplotlib would draw the axis upside down, and nothing on it."""
    from test_viz import fake_run  # noqa: PLC0415

    assert_user_error(cli("plot", fake_run(tmp_path / "run", 1.0), "--ylim", ylim, "--out", tmp_path / "p.png"),
                      message)
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("ylim", ["0,2", "-1,", ",0"])
def test_a_log_axis_that_would_start_at_or_below_zero_is_refused(tmp_path, ylim):
    """Matplotlib would warn and draw the axis on its own range: the user asked for one it cannot draw."""
    from test_viz import fake_run  # noqa: PLC0415

    assert_user_error(cli("plot", fake_run(tmp_path / "run", 1.0), "--log-y", "--ylim", ylim, "--out",
                          tmp_path / "p.png"), f"--ylim {ylim}: a logarithmic axis")
    assert not (tmp_path / "p.png").exists()
