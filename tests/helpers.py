"""Helpers the test modules share: where the repository and the data mirror are, the two ways to run the CLI, a
torch.nn reference paired with rnnlm's cells, and checkpoints written without training."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnlm import cells
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.model import CharRNN
from rnnlm.vocab import EOS_ID, Vocab

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"
KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
TIMING = ("elapsed", "chars_per_sec", "train_time")
"""The metrics fields that measure time, which no two runs share."""


# ---- the CLI ---------------------------------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m rnnlm ARGS` the way a user would, in a new process, capturing stdout and stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RNNLM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "rnnlm", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def measured(*args: object, timeout: float = 120) -> tuple[tuple[int, str, str], float]:
    """`rnnlm ARGS` in a new process: ((status, stdout, stderr), its peak resident memory in MB). The peak is the
    process's own (VmHWM): getrusage's ru_maxrss also counts the pages the child shared with this process when it
    was forked, so a test process grown large would inflate it."""
    script = ("import runpy, sys\n"
              "sys.argv = ['rnnlm', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('rnnlm', run_name='__main__')\n"
              "finally:\n    print(next(line.split()[1] for line in open('/proc/self/status') "
              "if line.startswith('VmHWM:')), file=sys.__stdout__)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    *out, peak = done.stdout.splitlines()
    return (done.returncode, "\n".join(out), done.stderr), int(peak) / 1024


def cli(*args: object) -> tuple[int, str, str]:
    """`rnnlm ARGS` through `rnnlm.cli.main` in this process (no torch import to wait for): (exit status, stdout,
    stderr)."""
    from rnnlm.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["rnnlm", *map(str, args)]
    sigpipe = signal.getsignal(signal.SIGPIPE)  # a printing command dies of SIGPIPE as a process: not this one's
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGPIPE, sigpipe)
    return code, out.getvalue(), err.getvalue()


def assert_user_error(result: tuple[int, str, str], *needles: str, max_lines: int = 1) -> str:
    """A mistake's answer: exit status 2, no traceback, at most `max_lines` lines on stderr (a command may have said
    what it was doing first), the last the one starting with `error: `, and every needle in that last line."""
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= max_lines and lines[-1].startswith("error: "), err
    assert not any(line.startswith("error: ") for line in lines[:-1]), err
    for needle in needles:
        assert needle in lines[-1], err
    return err


# ---- cells -----------------------------------------------------------------------------------------------------------


def make_pair(kind: str, input_size: int, hidden: int, layers: int, **kw) -> tuple[nn.Module, nn.Module]:
    """A torch.nn reference and ours with the reference's weights loaded, in float64."""
    torch.manual_seed(0)
    if kind.startswith("rnn"):
        kw["nonlinearity"] = kind.split("_")[1]
        ref_cls, our_cls = nn.RNN, cells.RNN
    else:
        ref_cls, our_cls = (nn.LSTM, cells.LSTM) if kind == "lstm" else (nn.GRU, cells.GRU)
    ref = ref_cls(input_size, hidden, layers, **kw).double()
    ours = our_cls(input_size, hidden, layers, **kw).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def initial_state(kind: str, layers: int, batch: int | None, hidden: int) -> Tensor | tuple[Tensor, Tensor]:
    shape = (layers, hidden) if batch is None else (layers, batch, hidden)
    if kind == "lstm":
        return torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    return torch.randn(shape, dtype=torch.float64)


def flat_state(state: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)



# ---- checkpoints -----------------------------------------------------------------------------------------------------


def make_checkpoint(path, dataset="anbn", chars="ab", cell="lstm", hidden_size=8, records_mode="pack", setup=None,
                    seed=0, encoding="onehot"):
    """A checkpoint written directly (no training): a small random model, or one `setup(model, vocab)` shapes."""
    cfg = load_config(None, [f"data.dataset={dataset}", f"data.records={records_mode}", f"model.cell={cell}",
                             f"model.hidden_size={hidden_size}", "model.num_layers=1", f"model.encoding={encoding}"])
    vocab = Vocab.from_texts([chars])
    torch.manual_seed(seed)
    model = CharRNN(len(vocab), cfg.model)
    if setup is not None:
        with torch.no_grad():
            setup(model, vocab)
    ckpt.save([path], ckpt.Checkpoint(cfg, vocab, dataset in ("anbn", "names"), model.state_dict(), 0, None))
    return path


def constant_logits(**logits):
    """A `setup` whose model ignores its input: every step the same logits, -30 for characters not named
    (`eos=` names <eos>)."""
    def setup(model, vocab):
        model.decoder.weight.zero_()
        model.decoder.bias.fill_(-30.0)
        for char, value in logits.items():
            model.decoder.bias[EOS_ID if char == "eos" else vocab.itos.index(char)] = value
    return setup




def uniform(model, vocab):
    """A `setup` whose model gives every character the same probability."""
    model.decoder.weight.zero_()
    model.decoder.bias.zero_()
