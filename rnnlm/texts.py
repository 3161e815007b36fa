"""The texts `rnnlm eval` scores: a file given with --file, or a split of the run's corpus.

A file is prepared into a temporary store as a corpus is (a few bytes a character, however big), then read through
the model's vocabulary; a split is read from the run's own store, found where the run trained (or where its files
moved, `--data-path`). Either way the scorer (`rnnlm.evaluate`) gets ids it reads a chunk at a time, the characters
the vocabulary lacks, and the text itself only if the compressors are asked for.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rnnlm.batching import Records, Tokens
from rnnlm.checkpoint import Checkpoint
from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, missing_path, open_corpus
from rnnlm.data.store import Source, Store, open_store
from rnnlm.data.text import (UnreadableText, file_pieces, files_identity, is_glob, line_records, open_input,
                             shown, text_files, text_pieces)
from rnnlm.errors import RnnlmError, shell_word
from rnnlm.inference import start_ids


@dataclass
class Text:
    """What `rnnlm eval` scores: a file, or a split of the run's corpus."""

    name: str
    ids: Tokens | Records
    """A stream, scored from its second id on, or records (`data.records: pad`), each scored whole."""
    characters: Callable[[], Iterator[str]]
    """The characters the model scores, in pieces, as the compressors see them (a record's <eos> is a newline);
    read only when the compressors are asked for."""
    unknown: list[str]
    """Distinct characters the vocabulary lacks."""


def file_source(path: Path, point: Checkpoint) -> Text:
    """A UTF-8 file: one record per line for a records model, else one stream read from its start (after the start
    id sampling reads first, a newline or <eos>, so that its first character is scored too). The file is prepared
    into a temporary store as a corpus is, so that a big one costs a few bytes a character, not a string and an
    int64 each."""
    store, offsets = _file_store(path, point.records)
    if point.records:
        return _store_text(str(path), store, "train", point, offsets)
    counts = dict(store.counts["train"])
    counts["\n"] -= 1  # the newline put before the text, read as the start id
    start = int(start_ids(point.vocab, "", records=False)[0])
    return _store_text(str(path), store, "train", point, None, start, counts)


def _file_store(path: Path, records: bool) -> tuple[Store, np.ndarray | None]:
    """`path` prepared as the training split of a store (and a records store's offsets) in a temporary folder,
    removed at once: the store's memory maps keep its files' pages. A stream is stored after a newline, the place
    of the start id; a pipe or other file that cannot be read twice is copied in first, a file that changes while
    it is read is refused. A folder or a glob is read as data.path reads it."""
    with tempfile.TemporaryDirectory(prefix="rnnlm-eval-") as folder:
        several = str(path) != "-" and (path.is_dir() or (not path.exists() and is_glob(str(path))))
        if several and records:
            raise RnnlmError(f"--file {path}: a folder or pattern; this model reads one record per line of one file "
                             "(as its corpus does): give a file, or one --file for each")
        in_place = str(path) != "-" and (path.is_file() or not path.exists() or several)
        readable = path if in_place else _copy(path, Path(folder))  # as --prime-file - reads standard input
        if readable.is_file() and readable.stat().st_size == 0:
            raise RnnlmError(f"{shown(path)}: no characters to score (the file is empty)")
        try:
            store = open_store(_file_source(readable, records, several), Path(folder), progress=False)
            if not records and store.manifest["splits"]["train"]["characters"] < 2:  # the newline put before it
                raise RnnlmError(f"{readable}: no characters to score (the file holds a byte-order mark alone)")
        except RnnlmError as e:
            message = str(e).replace(str(readable), shown(path))  # a copy's errors name what was given
            raise RnnlmError(message if folder not in message else f"--file {path}: cannot be prepared in the "
                             f"temporary folder {folder} ({message}); set TMPDIR to a folder with room") from None
        # its files were mapped when it was opened: the maps outlive the folder
        return store, store.offsets("train") if records else None


def _file_source(readable: Path, records: bool, several: bool) -> Source:
    """What the store reads: a file's records, or its text after a newline; a folder's or glob's files in order,
    binary ones left out (each said once, though every pass finds them)."""
    if several:
        files, said = text_files(str(readable), setting="--file"), []
        return Source("file", {"files": files_identity(files)}, {}, (1.0, 0.0, 0.0), warnings=said,
                      pieces=lambda: itertools.chain([b"\n"], text_pieces(str(readable), files, None, said, "--file")))
    identity = {"files": files_identity([readable]) if readable.is_file() else []}
    if records:
        lines = line_records(readable)
        return Source("file", identity, {}, (1.0, 0.0, 0.0), records=lambda: lines, sizes=(len(lines), 0, 0))
    return Source("file", identity, {}, (1.0, 0.0, 0.0),
                  pieces=lambda: itertools.chain([b"\n"], file_pieces(readable, [None], True)))


def _copy(path: Path, folder: Path) -> Path:
    """A pipe's (or a FIFO's, a device's, standard input's for `-`) bytes, copied into `folder` as they come: they
    can be read only once."""
    copy = folder / "input"
    with open_input(path) as source, open(copy, "wb") as target:
        shutil.copyfileobj(source, target, 1 << 20)
    return copy


def run_data_config(point: Checkpoint, moved_to: Path | None, command: str) -> DataConfig:
    """The data config the run trained from (its folder's config.yaml), read at `moved_to` (--data-path) when its
    files moved; a data.path that is gone is refused, naming `rnnlm COMMAND RUN --data-path`."""
    data = point.data_config()
    if moved_to is not None:
        if not is_glob(str(moved_to)) and not moved_to.exists():
            raise RnnlmError(f"--data-path {moved_to}: no such file or directory")
        return replace(data, path=os.path.abspath(moved_to))
    if missing_path(data) is not None:
        raise RnnlmError(f"data.path={data.path}: no such file or directory; if the run's text moved, give its new "
                         f"place: rnnlm {command} {shell_word(point.path or 'RUN')} --data-path WHERE_IT_IS")
    return data


def open_run_corpus(point: Checkpoint, moved_to: Path | None, command: str, root: DataRoot | None = None,
                    progress: bool = False) -> tuple[DataConfig, Store]:
    """The run's data config (`run_data_config`) and its corpus's store. Text at `moved_to` that cannot be the run's
    corpus (a records corpus refuses empty lines, say) is refused as the wrong place, not as a file to mend; any other
    error (a data root that cannot be written, say) as it is."""
    data = run_data_config(point, moved_to, command)
    try:
        return data, open_corpus(data, point.config.train.seed, root, progress)
    except UnreadableText as e:
        if moved_to is None:
            raise
        raise RnnlmError(f"--data-path {moved_to} does not hold the text the run trained on (as the run's "
                         f"{point.config.data.dataset} corpus: {e.what}); give the place that text moved to, "
                         "unchanged") from None


def split_source(point: Checkpoint, split: str, root: DataRoot | None = None, progress: bool = False,
                 moved_to: Path | None = None) -> Text:
    """A split of the run's corpus (train, val or test), read from its store as training read it: a stream's first
    character is context only, as in training's validation, so `--split val` reproduces the logged val_loss. A corpus
    whose files moved since training is read from `moved_to`."""
    if split not in ("train", "val", "test"):
        raise RnnlmError(f"--split {split!r}: choose train, val or test")
    data, store = open_run_corpus(point, moved_to, "eval", root, progress)
    if point.other_text_at(data, store.fingerprint):
        where = f"--data-path {moved_to}" if moved_to is not None else f"data.path={data.path} (the run's config.yaml)"
        raise RnnlmError(f"{where} does not hold the text the run trained on (from {point.config.data.path}): give "
                         "the place that text moved to, unchanged, with --data-path")
    if point.corpus_changed(store.fingerprint):
        warnings.warn(f"the {store.name} corpus has changed since this checkpoint was written: the {split} split "
                      "scored is the text as it is now, not the one training logged")
    info = store.manifest["splits"][split]
    if info.get("records", 0) == 0 if store.records else info["characters"] < 2:
        raise RnnlmError(f"the {split} split of {store.name} has nothing to score; score a file with --file, "
                         f"or train with a larger data.splits share for {split}")
    if store.records:
        return _store_text(f"{store.name} {split} split", store, split, point, store.offsets(split))
    counts = dict(store.counts[split])
    counts[store.symbols[int(store.ids(split)[0])]] -= 1  # the first character is context, never scored
    return _store_text(f"{store.name} {split} split", store, split, point, None, counts=counts)


def _store_text(name: str, store: Store, split: str, point: Checkpoint, offsets: np.ndarray | None,
                first: int | None = None, counts: dict[str, int] | None = None) -> Text:
    """A store's split as `rnnlm eval` scores it: its ids through the model's vocabulary (a record each for
    `data.records: pad`, from `offsets`), a stream's characters after its first (context, or the start id `first`),
    and the characters the vocabulary lacks (of `counts`, by default the split's)."""
    tokens = Tokens(store.ids(split), store.lut(point.vocab), first)
    ids: Tokens | Records = tokens
    if store.records and point.config.data.records == "pad":
        ids = Records(tokens, offsets)  # type: ignore[arg-type]
    counts = store.counts[split] if counts is None else counts
    unknown = sorted(point.vocab.lacking(counts))
    return Text(name, ids, lambda: store.pieces(split, 1), unknown)  # after the leading <eos>, or a stream's first
