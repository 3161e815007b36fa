"""Run directories: where a new run goes, where a resume starts, and what a resume may change.

    checkpoints/<run>/
        config.yaml      the fully resolved config
        metrics.jsonl    training and evaluation records (rnnlm.metrics)
        last.pt          the newest checkpoint: everything needed to resume exactly
        best.pt          the checkpoint with the lowest validation loss so far
        step-000400.pt   with train.keep_last: the newest numbered checkpoints, one per evaluation
        resume.log       one line per resume, with the config keys it changed
        tensorboard/     with train.tensorboard: the same metrics as TensorBoard event files
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rnnlm import checkpoint as ckpt
from rnnlm.atomic import remove_stale_temp_files
from rnnlm.config import Config, ConfigError
from rnnlm.console import say
from rnnlm.distributed import Dist
from rnnlm.errors import RnnlmError
from rnnlm.metrics import METRICS, truncate_metrics

SAFE_TO_CHANGE = {"train.max_steps", "train.max_epochs", "train.max_time", "train.patience", "train.eval_every",
                  "train.log_every", "train.sample_every", "train.keep_last", "train.tensorboard", "train.device",
                  "train.compile"}
"""Keys a resumed run may change, besides every `sample.*` key: budgets, intervals, what is kept and
where or how fast it runs, never what is learned or from what."""

RESUME_LOG = "resume.log"


def new_run_dir(out: Path, stem: str, name: str | None, dist: Dist) -> Path:
    """Where a new run goes: `out/name`, or `out/<stem>-<date>-<time>`; never a folder that exists.
    Under torchrun rank 0 decides, so that every process agrees on the name."""
    run_dir = out / (name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir, exists = dist.broadcast((run_dir, run_dir.exists()))
    if exists:
        raise RnnlmError(f"{run_dir} already exists; continue it with --resume {run_dir} or choose another --name")
    return run_dir


def resume_point(run_dir: Path) -> ckpt.Checkpoint | None:
    """The checkpoint a resume of `run_dir` starts from; None if the run was stopped before its first
    checkpoint (it then starts over from its config.yaml)."""
    if not run_dir.is_dir():
        raise RnnlmError(f"--resume {run_dir}: not a run directory")
    if (run_dir / ckpt.LAST).exists() or not (run_dir / "config.yaml").is_file():
        return ckpt.load(run_dir / ckpt.LAST)
    return None


def check_resume_config(old: Config, new: Config) -> list[str]:
    """The changes a resume accepts, as `key: old -> new`; any other change is an error listing the keys."""
    a, b = old.to_dict(), new.to_dict()
    changed = [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
    refused = [k for k in changed if k not in SAFE_TO_CHANGE and not k.startswith("sample.")]
    if refused:
        raise ConfigError(f"cannot resume with a changed config: {', '.join(refused)} differ from the run's "
                          f"config.yaml; only {', '.join(sorted(SAFE_TO_CHANGE))} and sample.* may change on resume")
    return [f"{k}: {_get(a, k)!r} -> {_get(b, k)!r}" for k in changed]


def _get(d: dict[str, dict[str, Any]], key: str) -> Any:
    section, name = key.split(".")
    return d[section][name]


def open_run(run_dir: Path, cfg: Config, step: int, changes: list[str] | None) -> None:
    """Make `run_dir` ready for a run at `step`: created and writable, cleared of what a killed writer left and of
    what was written after the checkpoint (a future this run will write again), with its config.yaml; a resume
    (`changes` not None) is logged with the keys it changed."""
    over = changes is None and (run_dir / "config.yaml").exists()
    _make_run_dir(run_dir)
    say(f"run directory: {run_dir}" + (" (stopped before its first checkpoint: starting it over)" if over else ""))
    for stale in remove_stale_temp_files(run_dir):
        say(f"removed {stale.name}, left by a process killed while writing it")
    truncate_metrics(run_dir / METRICS, step)
    for numbered_step, path in ckpt.numbered_checkpoints(run_dir):
        if numbered_step > step:
            path.unlink()
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    if changes is not None:
        line = f"resumed at step {step}" + (f" with {'; '.join(changes)}" if changes else "")
        with open(run_dir / RESUME_LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        say(line.replace("resumed", "resuming", 1))


def _make_run_dir(run_dir: Path) -> None:
    """Create the run directory and prove it takes files, before any training time is spent."""
    probe = run_dir / f".write-test-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RnnlmError(f"cannot write the run directory {run_dir}: {e.strerror or e}; "
                         "choose another folder with --out (or --name)") from None
