"""What a run directory is, whether a folder is one, and who trains in it: the names of the files training writes
beside its config (see `rnnlm.runs` for all of them). Torch-free, so that `rnnlm.checkpoint`, `rnnlm.plot` and the
CLI's option defaults read it without importing what the rest of `rnnlm.runs` needs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from rnnlm.metrics import METRICS

OUT = Path("checkpoints")
"""Where `rnnlm train` makes runs unless --out says."""
RESUME_LOG = "resume.log"
LOCK = ".lock"
STATUS = "status.json"
"""How the run's last session ended: {"stopped": "max_steps" | "max_epochs" | "max_time" | "patience" |
"interrupted", "step": N}; written when a session ends (one killed, or failed, leaves the previous one's)."""


def is_run(folder: Path) -> bool:
    """A run directory: its config.yaml beside what training writes (the lock, the status, the metrics, a
    checkpoint); a project folder with a config.yaml of its own is not one."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    return "config.yaml" in names and bool(names & {LOCK, STATUS, METRICS} or any(n.endswith(".pt") for n in names))


def holder(run_dir: Path) -> int | None:
    """The process training in `run_dir` now, or None."""
    try:
        with open(run_dir / LOCK) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def run_meant(path: Path) -> Path | None:
    """The run a path that is none meant: the run holding a file of it (`RUN/last.pt`), or a run of that name in
    OUT (`rnnlm sample names-gru`, run from where the run was trained)."""
    for folder in (path.parent if path.is_file() else None, None if path.exists() else OUT / path):
        if folder is not None and folder.is_dir() and is_run(folder):
            return folder
    return None
