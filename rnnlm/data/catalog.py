"""What the `rnnlm data` commands do: list the corpora, fetch one, describe one.

Each returns plain values (and a `format_*` function renders them), so the CLI only parses and prints.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnlm.config import Config, DataConfig, load_config
from rnnlm.data import LOADERS, DataRoot, corpus_names, get_loader, not_a_corpus, open_corpus
from rnnlm.data.store import Store
from rnnlm.data.download import Remote, fetch, sha256_file
from rnnlm.data.linux import KERNEL_RELEASE, locate_source, system_tarballs
from rnnlm.errors import RnnlmError
from rnnlm.data.names import NAMES
from rnnlm.data.shakespeare import SHAKESPEARE

SHOWN_CHARACTERS = 600  # data info's vocabulary: the most frequent (a CJK corpus's 60,000 would be 10,000 lines)

DESCRIPTIONS = {
    "shakespeare": "tiny Shakespeare: 1.1 MB of plays, one stream (char-rnn)",
    "names": "32,033 US baby names, one record per line (makemore)",
    "linux": "Linux kernel C source, .c and .h files in path order (char-rnn)",
    "text": "your own UTF-8 files: data.path=FILE, FOLDER or GLOB",
    "genesis": "the Book of Genesis (King James Version), 205 KB, built in: the demo",
    "hello": "'hello' repeated, to prove a model learns",
    "anbn": "records a^n b^n, to prove a model counts",
}

DOWNLOADS: dict[str, Remote] = {"shakespeare": SHAKESPEARE, "names": NAMES}


@dataclass(frozen=True)
class CorpusEntry:
    """One line of `rnnlm data list`."""

    name: str
    description: str
    status: str
    """`present`; `in mirror` or `download` (where it comes from on first use); `changed` (the file here or in the
    mirror is not the published one, which a run refuses) or `unreadable`; `built in`; `your files`."""

    location: str
    """Where its bytes are, or where they would come from; empty when there is no file to fetch."""

    size: int | None
    """Bytes on disk (the source file, or the tarball for linux), when there is a file."""


def config_for(name: str, overrides: Sequence[str] = ()) -> Config:
    """The config `rnnlm data fetch|info NAME` means: a corpus name (`names`) or a YAML config
    (`configs/linux_lstm.yaml`), then `section.key=value` overrides such as `data.subdirs=[kernel]`."""
    if name.endswith((".yaml", ".yml")):
        return load_config(name, overrides)
    if name not in corpus_names():  # said of the name given, not of a data.dataset key nobody typed
        raise RnnlmError(not_a_corpus(name))
    return load_config(None, [f"data.dataset={name}", *overrides])


def list_corpora(root: DataRoot) -> list[CorpusEntry]:
    get_loader("text")  # registers every loader
    return [_entry(name, root) for name in sorted(LOADERS, key=lambda n: (n not in DOWNLOADS and n != "linux", n))]


def _entry(name: str, root: DataRoot) -> CorpusEntry:
    description = DESCRIPTIONS.get(name, "")
    if name in DOWNLOADS:
        return _file_entry(name, description, DOWNLOADS[name], root)
    if name == "linux":
        return _linux_entry(description, root)
    if name == "text":
        return CorpusEntry(name, description, "your files", "", None)
    return CorpusEntry(name, description, "built in", "", None)


def _file_entry(name: str, description: str, remote: Remote, root: DataRoot) -> CorpusEntry:
    here = root.path / remote.relpath
    if here.is_file():
        return CorpusEntry(name, description, _checked(remote, here, "present"), str(here), here.stat().st_size)
    mirrored = root.mirror / remote.relpath if root.mirror is not None else None
    if mirrored is not None and mirrored.is_file():
        return CorpusEntry(name, description, _checked(remote, mirrored, "in mirror"), str(mirrored), remote.size)
    return CorpusEntry(name, description, "download", remote.url, remote.size)


def _checked(remote: Remote, path: Path, status: str) -> str:
    """`status`, or `changed` when the file is not the published one (a run would refuse it), `unreadable` when it
    cannot be read."""
    try:
        return status if sha256_file(path) == remote.sha256 else "changed"
    except RnnlmError:
        return "unreadable"


def _linux_entry(description: str, root: DataRoot) -> CorpusEntry:
    """In the order `locate_source` takes them: the pinned release here, in the mirror, an installed tarball."""
    pinned = root.path / KERNEL_RELEASE.relpath
    mirrored = root.mirror / KERNEL_RELEASE.relpath if root.mirror is not None else None
    installed = system_tarballs()
    if pinned.is_file():
        return CorpusEntry("linux", description, _checked(KERNEL_RELEASE, pinned, "present"), str(pinned),
                           pinned.stat().st_size)
    if mirrored is not None and mirrored.is_file():
        return CorpusEntry("linux", description, _checked(KERNEL_RELEASE, mirrored, "in mirror"), str(mirrored),
                           mirrored.stat().st_size)
    if installed:
        return CorpusEntry("linux", description, "present", str(installed[-1]), installed[-1].stat().st_size)
    return CorpusEntry("linux", description, "download", KERNEL_RELEASE.url, None)


def format_listing(entries: list[CorpusEntry]) -> str:
    width = max(len(e.name) for e in entries)
    lines = []
    for e in entries:
        size = size_text(e.size) if e.size is not None else ""
        lines.append(f"{e.name:<{width}}  {e.status:<10}  {size:>8}  {e.description}")
        if e.location:
            lines.append(f"{'':<{width}}  {e.location}")
    return "\n".join(lines)


def size_text(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def fetch_corpus(cfg: DataConfig, root: DataRoot) -> tuple[Path | None, str]:
    """Put the corpus's source in place (copied from the mirror or downloaded, checked): where it is, and how it got
    there; (None, why) for corpora with nothing to fetch (built in, or your own files)."""
    get_loader(cfg.dataset)  # an unknown name is an error with the list of corpora
    if cfg.path:  # your own files instead of the published ones: nothing to fetch, read when a run uses them
        if not (Path(cfg.path).expanduser().exists() or glob.glob(os.path.expanduser(cfg.path))):
            raise RnnlmError(f"data.path={cfg.path}: no such file or directory")
        return None, f"nothing to fetch: data.path={cfg.path} is yours (`rnnlm data info` reads and checks it)"
    if cfg.dataset in DOWNLOADS:
        remote = DOWNLOADS[cfg.dataset]
        present = (root.path / remote.relpath).is_file()
        where = fetch(remote, root)
        return where, "already present, checksum ok" if present else "fetched, checksum ok"
    if cfg.dataset == "linux":
        return locate_source(cfg, root), "kernel source"
    return None, "nothing to fetch (built in, or your own files)"


@dataclass(frozen=True)
class CorpusInfo:
    """What `rnnlm data info` shows."""

    name: str
    records: bool
    characters: int
    """Characters in all three splits (for a line corpus, without the `<eos>` ending each record)."""

    vocabulary: list[tuple[str, int]]
    """Every character with its count over the whole corpus, the most frequent first."""

    split_characters: dict[str, int]
    split_records: dict[str, int] | None
    """Records per split, for a line corpus."""

    unseen_in_train: list[str]
    """Characters of val or test that train lacks: the model reads them as `<unk>`."""

    store: Path
    """Where the prepared store is."""

    store_bytes: int
    """Its size on disk."""


def corpus_info(cfg: DataConfig, seed: int, root: DataRoot) -> CorpusInfo:
    """From the corpus's store (prepared first if needed): its counts, not its text."""
    return describe(open_corpus(cfg, seed, root))


def describe(store: Store) -> CorpusInfo:
    counts = {name: Counter(store.counts[name]) for name in ("train", "val", "test")}
    total = counts["train"] + counts["val"] + counts["test"]
    splits = store.manifest["splits"]
    return CorpusInfo(
        name=store.name,
        records=store.records,
        characters=sum(total.values()),
        vocabulary=sorted(total.items(), key=lambda kv: (-kv[1], kv[0])),
        split_characters={name: sum(c.values()) for name, c in counts.items()},
        split_records={name: splits[name]["records"] for name in counts} if store.records else None,
        unseen_in_train=sorted(set(total) - {c for c, n in counts["train"].items() if n}),
        store=store.folder,
        store_bytes=sum(f["bytes"] for f in store.manifest["files"].values()),
    )


def format_info(info: CorpusInfo) -> str:
    kind = "records, one per line" if info.records else "one stream"
    chars = " · ".join(f"{name} {n:,}" for name, n in info.split_characters.items())
    lines = [f"corpus      {info.name} ({kind})",
             f"characters  {info.characters:,} ({chars})"]
    if info.split_records is not None:
        records = " · ".join(f"{name} {n:,}" for name, n in info.split_records.items())
        lines.append(f"records     {sum(info.split_records.values()):,} ({records}), each ended by <eos>")
    lines.append(f"vocabulary  {len(info.vocabulary)} character{'s' * (len(info.vocabulary) != 1)}"
                 + (" + <eos>" if info.records else "") + ", by count:")
    shown = info.vocabulary[:SHOWN_CHARACTERS]
    names = [repr(ch) for ch, _ in shown]
    counts = [f"{n:,}" for _, n in shown]
    name_width, count_width = max(map(len, names), default=0), max(map(len, counts), default=0)
    cells = [f"{name:>{name_width}} {count:<{count_width}}  " for name, count in zip(names, counts)]
    lines += ["  " + "".join(cells[i:i + 6]).rstrip() for i in range(0, len(cells), 6)]
    if len(info.vocabulary) > len(shown):
        lines.append(f"  ... and {len(info.vocabulary) - len(shown):,} rarer characters")
    if info.unseen_in_train:
        unseen = info.unseen_in_train
        lines.append(f"not in train (read as <unk>): {' '.join(map(repr, unseen[:SHOWN_CHARACTERS]))}"
                     + (f" ... and {len(unseen) - SHOWN_CHARACTERS:,} more" if len(unseen) > SHOWN_CHARACTERS else ""))
    lines.append(f"store       {info.store} ({size_text(info.store_bytes)})")
    return "\n".join(lines)

