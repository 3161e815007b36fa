"""What a training run shows on stderr: the progress bar, and messages printed above it.

Only the process that writes (rank 0) shows anything; the others get a disabled bar.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from rnnlm.checkpoint import Tally
from rnnlm.config import TrainConfig


def say(text: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


class Progress:
    """step/total, the mean training loss, the latest validation loss, the learning rate, characters per second and
    the time left to the nearest budget. With only a time budget the total is the step the run will reach at its
    current pace."""

    def __init__(self, t: TrainConfig, tally: Tally, enabled: bool) -> None:
        from tqdm import tqdm

        self.t, self.start_step, self.start_elapsed = t, tally.step, tally.elapsed
        self.bar = tqdm(total=t.max_steps, initial=tally.step, disable=not enabled, unit="step", dynamic_ncols=True,
                        file=sys.stderr, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def step(self) -> None:
        self.bar.update(1)

    def show(self, tally: Tally, record: dict[str, Any], final: bool = False) -> None:
        """The fields of a training record; `final`: the run has ended, so no time is left."""
        val = f"{tally.last_val:.4f}" if math.isfinite(tally.last_val) else "-"  # "-" until the first evaluation
        text = (f"loss {record['train_loss']:.4f} val {val} lr {record['lr']:.2e} "
                f"{record['chars_per_sec']:,.0f} chars/s")
        if self.t.max_epochs is not None:
            text += f" epoch {tally.epoch + 1}/{self.t.max_epochs}"
        left = None if final else self._time_left(tally)
        if left is not None:
            text += f" {clock(left)} left"
        if not final:
            self.bar.total = self._expected_steps(tally)
        self.bar.set_postfix_str(text, refresh=False)

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def finish(self, tally: Tally) -> None:
        if self.t.max_steps is None:
            self.bar.total = tally.step  # a time or epoch budget: the bar ends full where the run ended

    def close(self) -> None:
        self.bar.close()

    def _expected_steps(self, tally: Tally) -> int | None:
        if self.t.max_steps is not None:
            return self.t.max_steps
        if self.t.max_time is None or tally.step <= self.start_step or tally.elapsed <= self.start_elapsed:
            return None
        pace = (tally.step - self.start_step) / (tally.elapsed - self.start_elapsed)
        return tally.step + max(0, round((self.t.max_time - tally.elapsed) * pace))

    def _time_left(self, tally: Tally) -> float | None:
        """Seconds until the first of the step and time budgets, at this session's pace."""
        left = []
        if self.t.max_steps is not None and tally.step > self.start_step:
            pace = (tally.elapsed - self.start_elapsed) / (tally.step - self.start_step)
            left.append((self.t.max_steps - tally.step) * pace)
        if self.t.max_time is not None:
            left.append(self.t.max_time - tally.elapsed)
        return max(0.0, min(left)) if left else None


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
