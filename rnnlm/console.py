"""What a training run shows on stderr: a progress line on a terminal, plain log lines anywhere else.

On a terminal, one line redrawn in place: a bar of the nearest budget (steps, or seconds when time is the only
budget, so that it never jumps), then the fields people read first, as many as fit the terminal's width: time
left, mean training loss, latest validation loss, characters per second, learning rate, epoch. During an
evaluation it says so, and the validation loss is shown as soon as it is known. Sent to a file or a pipe, the same
records are written as one plain line each (every `train.log_every` steps and every evaluation), which reads well
in a log. Only the process that writes (rank 0) shows anything.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from rnnlm.bars import measure, width
from rnnlm.checkpoint import Tally
from rnnlm.config import TrainConfig


@contextlib.contextmanager
def outliving_the_reader() -> Iterator[None]:
    """Training's stdout and stderr outlive their reader: `rnnlm train ... 2>&1 | head` closed the pipe after ten
    lines, and the next progress line killed the run, losing its work since the last checkpoint. A stream whose
    reader has gone is pointed at /dev/null and training goes on unseen (metrics.jsonl and the checkpoints keep
    everything), as it would under nohup."""
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _outliving(sys.stdout), _outliving(sys.stderr)
    try:
        yield
    finally:
        try:
            for stream, was in zip((sys.stdout, sys.stderr), before):
                if was is None:
                    stream.close()
                else:
                    stream.flush()
        finally:
            sys.stdout, sys.stderr = before


class _ReaderMayLeave(io.RawIOBase):
    """Writes to a file descriptor; once its reader has gone (a closed pipe or terminal), to /dev/null through the
    same descriptor, so that every stream writing there (click's, tqdm's, Python's own at exit) goes on too."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data: Any) -> int:
        try:
            return os.write(self.fd, data)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.EIO):  # EIO: a terminal that has hung up (closed, SIGHUP)
                raise
            nowhere = os.open(os.devnull, os.O_WRONLY)
            os.dup2(nowhere, self.fd)
            os.close(nowhere)
            return len(data)


def _outliving(stream: TextIO | None) -> TextIO:
    """`stream` writing through `_ReaderMayLeave`; a stream without a descriptor (a test's StringIO) as it is, and
    none (the process started with it closed, `2>&-`) as /dev/null."""
    if stream is None:
        return open(os.devnull, "w", encoding="utf-8")
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream
    stream.flush()
    return io.TextIOWrapper(io.BufferedWriter(_ReaderMayLeave(fd)), encoding=stream.encoding, errors=stream.errors,
                            line_buffering=True)


def say(text: str) -> None:
    """A line on stderr that does not break the progress line."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


class Progress:
    def __init__(self, t: TrainConfig, tally: Tally, enabled: bool, stream: TextIO | None = None,
                 epochs: Callable[[], float] | None = None) -> None:
        self.t, self.start_step, self.start_elapsed = t, tally.step, tally.elapsed
        self.epochs = epochs  # epochs read so far, the current one's share included
        self.start_epochs = epochs() if epochs is not None else 0.0
        self.stream = stream or sys.stderr
        self.by_time = t.max_steps is None and t.max_time is not None  # the bar counts seconds, not steps
        self.lines = enabled and not self.stream.isatty()
        self.bar: Any = None
        if enabled and not self.lines:
            from tqdm import tqdm

            total = t.max_time if self.by_time else t.max_steps
            if self.by_time and float(total).is_integer():  # a budget of 120 s, not 120.0
                total = int(total)
            self.bar = tqdm(total=total, initial=round(tally.elapsed) if self.by_time else tally.step,
                            unit="s" if self.by_time else "step", ncols=width(self.stream), nrows=24,
                            file=self.stream, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}")
            measure(self.bar)
        self.fields: dict[str, str] = {}
        self.left_before = ""  # the time left shown before an evaluation, shown again after it

    def step(self, tally: Tally) -> None:
        if self.bar is not None:
            self.bar.update(round(tally.elapsed) - self.bar.n if self.by_time else 1)

    def show(self, tally: Tally, record: dict[str, Any], final: bool = False) -> None:
        """A training record: its fields on the progress line, or one log line."""
        t = self.t
        left = None if final else self._time_left(tally)
        self.fields.update({"left": f"{clock(left)} left" if left is not None else "",
                            "loss": f"loss {record['train_loss']:.4f}",
                            "val": f"val {tally.last_val:.4f}" if math.isfinite(tally.last_val) else "",
                            "speed": f"{record['chars_per_sec']:,.0f} chars/s", "lr": f"lr {record['lr']:.2e}",
                            "epoch": f"epoch {tally.epoch + 1}" + (f"/{t.max_epochs}" if t.max_epochs else "")})
        if self.lines:
            total = f"/{t.max_steps}" if t.max_steps else ""
            self._line(f"step {tally.step}{total}", "loss", "val", "speed", "lr", "epoch", "left")
        self._refresh(tally)

    def evaluating(self, tally: Tally) -> None:
        self.left_before = self.fields.get("left", "")
        self.fields["left"] = "evaluating"
        self._refresh(tally)

    def evaluated(self, tally: Tally, nll: float, bpc: float, seconds: float) -> None:
        empty = math.isnan(nll)  # an empty validation split scores nothing
        self.fields["val"] = "val -" if empty else f"val {nll:.4f}"
        self.fields["left"] = self.left_before  # until the next record says it anew
        score = "no validation loss (nothing to score)" if empty else f"val {nll:.4f} nats/char · {bpc:.4f} bpc"
        if self.lines or self.bar is not None:  # above the bar on a terminal: the evaluations' history stays in view
            self.write(f"step {tally.step} · {score} · evaluated in {seconds:.1f} s")
        self._refresh(tally)

    def write(self, text: str) -> None:
        """A block of text (a sample) above the progress line, or on its own lines (with or without progress)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self, tally: Tally) -> None:
        if self.bar is not None and not self.by_time and self.t.max_steps is None:
            self.bar.total = tally.step  # an epoch budget: the bar ends full where the run ended
        if self.bar is not None and self.by_time:
            self.bar.total = max(self.bar.n, 1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _line(self, head: str, *names: str) -> None:
        parts = [head, *(self.fields[n] for n in names if self.fields.get(n))]
        self.stream.write(" · ".join(parts) + "\n")
        self.stream.flush()

    def _refresh(self, tally: Tally) -> None:
        """The fields in the order people read them, as many as fit beside a bar of at least 10 columns."""
        if self.bar is None:
            return
        room = width(self.stream) - len(f"100%|{'#' * 10}| {self.bar.total or 0}/{self.bar.total or 0}") - 4
        if self.by_time:
            room -= len(f" step {tally.step}")
        shown: list[str] = [f"step {tally.step}"] if self.by_time else []
        for name in ("left", "loss", "val", "speed", "lr", "epoch"):
            text = self.fields.get(name, "")
            if text and len(" · ".join([*shown, text])) <= room:
                shown.append(text)
        self.bar.set_postfix_str(" · ".join(shown), refresh=True)

    def _time_left(self, tally: Tally) -> float | None:
        """Seconds until the first of the step, epoch and time budgets, at this session's pace."""
        left, spent = [], tally.elapsed - self.start_elapsed
        if self.t.max_steps is not None and tally.step > self.start_step:
            left.append((self.t.max_steps - tally.step) * spent / (tally.step - self.start_step))
        read = self.epochs() - self.start_epochs if self.epochs is not None else 0.0
        if self.t.max_epochs is not None and read > 0:
            left.append((self.t.max_epochs - self.start_epochs - read) * spent / read)
        if self.t.max_time is not None:
            left.append(self.t.max_time - tally.elapsed)
        return max(0.0, min(left)) if left else None


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
