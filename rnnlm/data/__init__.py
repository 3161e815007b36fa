"""Corpora: every `data.dataset` is a loader that says where a corpus's text comes from (a `Source`); the store
(`rnnlm.data.store`) prepares it once into memory-mapped ids, and every run after that maps them.

A corpus is either a *stream* (one long text, e.g. Shakespeare, split into contiguous spans) or a set of
*records* (one per line, e.g. names; each ends with `<eos>`, shuffled into splits by the seed).

One module per corpus, each registering its loader: `shakespeare`, `names`, `linux`, `text` (which also
holds the file readers the others share) and `builtin` (`hello`, `anbn`). Around them: `download`
(checked downloads and the mirror), `store` (the prepared token store) and `catalog` (what
`rnnlm data list|fetch|info` shows).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from rnnlm.config import DataConfig
from rnnlm.data.store import Source, Store, open_store
from rnnlm.errors import RnnlmError, shell_word

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
    offline: bool = False
    """Never download or copy a corpus file in: read what the data root or the mirror already holds (sampling and
    evaluating a run read its data, they do not fetch it)."""

    MARK = ".rnnlm-data-root"
    """An empty file that says a folder is a data root, so that a `data.path` over a whole project leaves out the
    corpus folders in it (`rnnlm.data.text.text_files`)."""

    def mark(self) -> None:
        """Create the data root, with its MARK, before the first thing is written into it."""
        with contextlib.suppress(OSError):  # a read-only root: whatever fails to be written says so itself
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / self.MARK).touch(exist_ok=True)

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None, mirror: str | Path | None = None,
                offline: bool = False) -> "DataRoot":
        path = data_dir or os.environ.get("RNNLM_DATA_DIR") or "data"
        mirror = mirror or os.environ.get("RNNLM_DATA_MIRROR") or None
        if mirror is not None and re.match(r"[A-Za-z][\w+.-]+:/", str(mirror)):  # a Path made of one reads http:/
            raise RnnlmError(f"the data mirror {mirror} (--mirror, RNNLM_DATA_MIRROR) is a URL; a mirror is a local "
                             "folder holding the corpora's files as a data root does (shakespeare/input.txt, ...)")
        return cls(Path(path), Path(mirror) if mirror else None, offline)


Loader = Callable[[DataConfig, int, DataRoot], Source]
LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        LOADERS[name] = loader
        return loader
    return add


def corpus_names() -> set[str]:
    """Every corpus's name (each loader module registered)."""
    from rnnlm.data import builtin, linux, names, shakespeare, text  # noqa: F401  (register their loaders)

    return set(LOADERS)


def get_loader(name: str) -> Loader:
    """The loader registered as `name`; an unknown name is an error listing the corpora."""
    if name not in corpus_names():
        raise RnnlmError(f"data.dataset={not_a_corpus(name)}")
    return LOADERS[name]


def not_a_corpus(name: str) -> str:
    """What to say of a name that is no corpus: the corpus it was likely meant to be, and every corpus's name."""
    import difflib

    close = difflib.get_close_matches(name, corpus_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if not close and ("/" in name or "." in name):  # a file given where a corpus name goes
        hint = f" (a file of your own is the corpus text, with data.path={name})"
    return f"{name!r} is not a corpus{hint}; choose one of {', '.join(sorted(LOADERS))}"


def source_for(cfg: DataConfig, seed: int, root: DataRoot | None = None) -> Source:
    """Where the corpus named by `cfg.dataset` comes from, under these settings (nothing is read yet)."""
    return get_loader(cfg.dataset)(cfg, seed, root or DataRoot.resolve())


def open_corpus(cfg: DataConfig, seed: int, root: DataRoot | None = None, progress: bool = True) -> Store:
    """The corpus's prepared store, prepared first when it is missing, stale or damaged (`rnnlm.data.store`)."""
    root = root or DataRoot.resolve()
    source = source_for(cfg, seed, root)
    root.mark()
    store = open_store(source, root.path / source.name, progress, say=_say)
    if not store.manifest["splits"]["train"]["characters"]:
        raise RnnlmError(f"corpus {store.name!r} has an empty training split; give it more text or a larger "
                         "data.splits[0]")
    return store


def missing_path(cfg: DataConfig) -> str | None:
    """`cfg.path` when it names a file or folder that is not there, or a glob whose folder is not (`notes/*.txt`
    of a `notes/` that moved), else None (a glob that matches nothing in its folder is left to its reader)."""
    from rnnlm.data.text import glob_folder, is_glob

    spec = cfg.path
    if spec is None:
        return None
    path = Path(spec).expanduser()
    return None if (glob_folder(path) if is_glob(spec) else path).exists() else spec


def check_relative_path(cfg: DataConfig, config: Path) -> None:
    """A relative data.path is taken from the working folder (as nanoGPT's are), not the config file's: one missing
    here but found beside `config` is refused with both fixes."""
    from rnnlm.data.text import is_glob

    if cfg.path is None or os.path.isabs(os.path.expanduser(cfg.path)) or is_glob(cfg.path):
        return
    beside = config.parent / cfg.path
    if not os.path.exists(cfg.path) and beside.exists():
        raise RnnlmError(f"data.path={cfg.path}: no such file or directory in {os.getcwd()}; a relative path is "
                         f"taken from the folder the command runs in, not the config's: run it from "
                         f"{shell_word(config.parent)}, or give data.path={shell_word(beside.resolve())}")


def load_corpus(cfg: DataConfig, seed: int, root: DataRoot | None = None) -> Corpus:
    """The corpus's splits as text, read back from its store: for small corpora and tests (a big corpus is read
    through the store's memory maps instead)."""
    store = open_corpus(cfg, seed, root, progress=False)
    if store.records:
        return Corpus(store.name, *(store.record_texts(s) for s in ("train", "val", "test")), records=True)
    return Corpus(store.name, *([store.text(s)] for s in ("train", "val", "test")))


def _say(text: str) -> None:
    import sys

    print(text, file=sys.stderr)
