"""Checkpoints: self-contained, plain-data files that load without running anyone's code.

A checkpoint is a `torch.save`d dict of tensors, numbers, strings, lists and dicts only:

    format      "rnnlm-checkpoint"
    version     CHECKPOINT_VERSION
    config      the resolved config as plain data (Config.to_dict())
    vocab       the vocabulary as a list of strings
    records     whether the corpus is line-per-record (each sample then ends at <eos>)
    model       the model's state dict
    step        optimizer steps taken
    train       everything needed to resume (optimizer, batcher, RNG and carried hidden state, ...)

It is read back with `torch.load(weights_only=True)`, whose unpickler only rebuilds those types, so a
crafted file cannot run code when loaded. Writes are atomic: a temporary file in the same folder,
`.NAME.tmp-PID`, flushed to disk, then renamed over the old one; a crash at any moment leaves the
previous file intact. A process killed mid-write leaves its temporary file behind; the next run in the
folder removes it (`remove_stale_temp_files`), knowing it is stale because process PID is gone.

A run folder holds `last.pt` (the newest: where a resume starts), `best.pt` (lowest validation loss)
and, with `train.keep_last`, numbered checkpoints `step-000400.pt`.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlm.config import Config, ConfigError, from_dict
from rnnlm.errors import RnnlmError
from rnnlm.vocab import Vocab

FORMAT = "rnnlm-checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST = "best.pt", "last.pt"


class CheckpointError(RnnlmError):
    """A checkpoint that is missing, damaged, foreign or unsafe."""


@dataclass
class Checkpoint:
    config: Config
    vocab: Vocab
    records: bool
    model: dict[str, torch.Tensor]
    step: int
    train: dict[str, Any]
    path: Path


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temp file, fsync, rename)."""
    save_all([path], payload)


def save_all(paths: list[Path], payload: dict[str, Any]) -> None:
    """Write the same checkpoint under several names (serialized once), each atomically, in order."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": CHECKPOINT_VERSION, **payload}, buffer)
    for path in paths:
        _write_atomic(path, buffer.getbuffer())


def _write_atomic(path: Path, data: memoryview) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise CheckpointError(f"{path}: could not write the checkpoint ({e.strerror or e}); {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files (`.NAME.tmp-PID`) that writers killed mid-write left in `folder`:
    those whose process is gone (or is this one, which is not writing yet). Returns what was removed."""
    removed = []
    for p in folder.glob(".*.tmp-*"):
        match = _TEMP.match(p.name)
        if match and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def numbered(step: int) -> str:
    """The name of the checkpoint `train.keep_last` keeps for `step`."""
    return f"step-{step:06d}.pt"


def numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The numbered checkpoints in `folder`, oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))]
    return sorted(found)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def resolve(path: str | Path) -> Path:
    """A run directory means its best checkpoint (or its last, if no evaluation has happened yet)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no checkpoint in this folder (expected {BEST} or {LAST}); "
                              "train first with `rnnlm train CONFIG`")
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run directory")
    return p


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and check a checkpoint file or run directory."""
    p = resolve(path)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty, not a checkpoint")
    try:
        raw = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # the file names a Python object to rebuild: code, not data
            raise CheckpointError(f"{p}: refused to load: the file holds Python objects other than plain data "
                                  "and tensors, which could run code; rnnlm checkpoints never do") from None
        raise CheckpointError(f"{p}: corrupted, truncated or not a checkpoint (its pickle is unreadable)") from None
    except Exception as e:  # torch.load fails in many ways on damaged bytes (RuntimeError, KeyError, EOFError, ...)
        raise CheckpointError(f"{p}: corrupted, truncated or not a checkpoint ({_first_line(e)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an rnnlm checkpoint (it has no '{FORMAT}' header)")
    if raw.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: written by an rnnlm with checkpoint format {raw.get('version')}; "
                              f"this rnnlm reads format {CHECKPOINT_VERSION}")
    try:
        config = from_dict(raw["config"])
        vocab = Vocab.from_list(raw["vocab"])
        return Checkpoint(config, vocab, bool(raw["records"]), raw["model"], int(raw["step"]), raw.get("train") or {}, p)
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{p}: damaged checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
