"""Where training records go: `metrics.jsonl` always, TensorBoard too with `train.tensorboard: true`.

`metrics.jsonl` holds one JSON object per line, flushed as written:

    training record    step, epoch, train_loss, lr, grad_norm, grad_norm_max, chars_per_sec, elapsed, train_time
                       (and skipped_steps, when fp16's loss scaler skipped any)
    evaluation record  step, epoch, val_loss, bpc, perplexity, elapsed, train_time

`train_loss` is the mean loss per character over the steps since the previous training record,
`grad_norm` the mean (and `grad_norm_max` the largest) gradient norm of those steps, before clipping;
`train.log_every: 1` records every step. `elapsed` counts wall-clock seconds over every session of a
resumed run, `train_time` the seconds of training steps alone. A resumed run first drops the records written after
its checkpoint (`truncate_metrics`), so the file reads as if the run had never stopped. Scripts and tests read it
back with `read_metrics`.

The trainer writes through the `MetricLogger` interface; `Loggers` sends each record to several.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Protocol

from rnnlm.atomic import atomic_file
from rnnlm.errors import RnnlmError

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


class MetricLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def finite_or_null(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON can hold it: a NaN or infinite number (a diverged loss) as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


class JsonlLogger:
    def __init__(self, path: Path):
        self.path, self.file = path, open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(finite_or_null(record)) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: the run stops there, its last checkpoint intact (a resume drops half lines)
            raise RnnlmError(f"{self.path}: could not write a record ({e.strerror or e}); make room and resume the run "
                             "from its last checkpoint") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # what could not be written was said when it failed
            self.file.close()


def check_tensorboard() -> None:
    """Fail before training, not after it, when TensorBoard logging cannot work."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise RnnlmError("train.tensorboard=true needs the tensorboard package: pip install 'rnnlm[tensorboard]' "
                         "(or pip install tensorboard), or set train.tensorboard=false") from None


class TensorBoardLogger:
    """Scalars under `train/...` and `val/...`, one point per record at its step. A resumed run hides
    the points after its checkpoint (`purge_step`), as `truncate_metrics` drops those records."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, record: dict[str, Any]) -> None:
        group = "val" if "val_loss" in record else "train"
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{group}/{key}", value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Loggers:
    """One record to every logger."""

    def __init__(self, loggers: list[MetricLogger]):
        self.loggers = loggers

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics file: a line cut off by a crash, or anything else that is not a JSON object,
    is skipped."""
    records = []
    if path.is_dir():
        path = path / METRICS
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_metrics(path: Path, last_step: int, evaluated: bool = True) -> None:
    """Drop records after `last_step` (written after the checkpoint a run resumes from), an evaluation record at
    `last_step` when the checkpoint was saved unevaluated (the resumed run evaluates there again), and any line cut
    off by a crash, atomically (`rnnlm.atomic`)."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r.get("step", 0) < last_step
            or (r.get("step", 0) == last_step and (evaluated or "val_loss" not in r))]
    with atomic_file(path, encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in keep))
