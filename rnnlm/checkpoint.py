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
flushed to disk, then renamed over the old one; a crash at any moment leaves the previous file intact.
"""

from __future__ import annotations

import os
import pickle
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": CHECKPOINT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{p}: refused to load: the file holds Python objects other than plain data "
                                  "and tensors, which could run code; rnnlm checkpoints never do") from None
        raise CheckpointError(f"{p}: corrupted or not a checkpoint ({_first_line(e)})") from None
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
