"""Corpora: every `data.dataset` is a loader that returns a `Corpus` of plain strings.

A corpus is either a *stream* (one long text per split, e.g. Shakespeare) or a set of *records*
(one string per record, e.g. names; each record ends with `<eos>` once encoded). Loaders only read and
split text; the vocabulary and the encoding into ids happen later (`rnnlm.vocab`, `rnnlm.batching`).

One module per corpus, each registering its loader: `shakespeare`, `names`, `linux`, `text` (which also
holds the file readers the others share) and `builtin` (`hello`, `anbn`). Around them: `download`
(checked downloads and the mirror), `cache` (the preparation cache), `atomic` (all-or-nothing file
writes) and `catalog` (what `rnnlm data list|fetch|info` shows).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from rnnlm.config import DataConfig
from rnnlm.errors import RnnlmError

Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class Corpus:
    name: str
    train: list[str]
    val: list[str]
    test: list[str]
    records: bool = False
    """True for line-per-record corpora: each string is one record, ended by `<eos>` when encoded."""

    def split(self, which: Split) -> list[str]:
        return {"train": self.train, "val": self.val, "test": self.test}[which]


@dataclass(frozen=True)
class DataRoot:
    """Where corpora live (`data/`, `--data-dir`, `RNNLM_DATA_DIR`) and where to look before the network."""

    path: Path
    mirror: Path | None = None

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None, mirror: str | Path | None = None) -> "DataRoot":
        path = data_dir or os.environ.get("RNNLM_DATA_DIR") or "data"
        mirror = mirror or os.environ.get("RNNLM_DATA_MIRROR") or None
        return cls(Path(path), Path(mirror) if mirror else None)


Loader = Callable[[DataConfig, int, DataRoot], Corpus]
LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        LOADERS[name] = loader
        return loader
    return add


def split_stream(name: str, text: str, fractions: tuple[float, float, float]) -> Corpus:
    """Contiguous spans: the first `train` fraction, then val, then test."""
    n = len(text)
    a = round(n * fractions[0])
    b = a + round(n * fractions[1])
    return Corpus(name, [text[:a]], [text[a:b]], [text[b:]])


def split_records(name: str, records: list[str], fractions: tuple[float, float, float], seed: int) -> Corpus:
    """Records shuffled with `seed`, then cut by the fractions, so no record straddles two splits."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    a = round(n * fractions[0])
    b = a + round(n * fractions[1])
    return Corpus(name, shuffled[:a], shuffled[a:b], shuffled[b:], records=True)


def get_loader(name: str) -> Loader:
    """The loader registered as `name`; an unknown name is an error listing the corpora."""
    from rnnlm.data import builtin, linux, names, shakespeare, text  # noqa: F401  (register their loaders)

    if name not in LOADERS:
        import difflib

        close = difflib.get_close_matches(name, LOADERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RnnlmError(f"data.dataset={name!r} is not a corpus{hint}; choose one of {', '.join(sorted(LOADERS))}")
    return LOADERS[name]


def load_corpus(cfg: DataConfig, seed: int, root: DataRoot | None = None) -> Corpus:
    """Read and split the corpus named by `cfg.dataset`."""
    corpus = get_loader(cfg.dataset)(cfg, seed, root or DataRoot.resolve())
    if not "".join(corpus.train):
        raise RnnlmError(f"corpus {corpus.name!r} has an empty training split; give it more text or a larger data.splits[0]")
    return corpus
