"""`rnnlm data clean`: the prepared stores no run can use again, removed.

A store's key hashes the files it was read from and its settings (see `store`), so a corpus file renamed, moved or
deleted, or read once with other splits or another byte limit, leaves its old store behind for good: a kernel's is
2.3 GB. Those whose text is gone (every file their manifest names) are what `clean` removes; with `everything`, every
store goes (each is prepared again the next time a run uses it). What stopped builds and downloads left (temporary
folders and files, a kernel tarball's spill, lock files of stores that are gone and of downloads that are over) goes
too. A store being prepared, or a file being downloaded (its lock held), is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnnlm.atomic import stale_temp_files
from rnnlm.data.store import remove_leftovers


@dataclass(frozen=True)
class Removal:
    path: Path
    bytes: int
    why: str


def clean_stores(root: Path, everything: bool = False, dry_run: bool = False) -> list[Removal]:
    """What is (or with `dry_run`, would be) removed from the data root `root`, store by store."""
    removed = []
    corpora = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    for folder in corpora:
        removed += _stopped_builds(folder, dry_run)
        for store in sorted(folder.glob("store-*")):
            why = "every store was asked for" if everything else _gone(store)
            if why is None:
                continue
            freed = _remove(folder, store.name.removeprefix("store-"), store, dry_run)
            if freed is not None:
                removed.append(Removal(store, freed, why))
        for lock in sorted(folder.glob(".store-*.lock")):  # a lock, and what builds left, without their store
            key = lock.name.removeprefix(".store-").removesuffix(".lock")
            if not (folder / f"store-{key}").exists():
                _remove(folder, key, None, dry_run)
    for folder in ([root] if root.is_dir() else []) + corpora:
        removed += _stale_files(folder, dry_run)
    return removed


def _stopped_builds(folder: Path, dry_run: bool) -> list[Removal]:
    """The temporary folders of store builds that were stopped (a kill while a corpus was prepared): tens of MB each
    for a large text, removed otherwise only if that text is prepared again. A build under way holds its lock."""
    found = []
    for tmp in sorted(p for p in folder.glob(".store-*.tmp-*") if p.is_dir()):
        key = tmp.name.removeprefix(".store-").rsplit(".tmp-", 1)[0]
        with _free(folder / f".store-{key}.lock") as free:
            if free:
                found.append(Removal(tmp, _size(tmp), "left by a preparation that was stopped"))
                if not dry_run:
                    shutil.rmtree(tmp, ignore_errors=True)
    return found


def _stale_files(folder: Path, dry_run: bool) -> list[Removal]:
    """The temporary files of downloads and preparations whose process is gone, and downloads' lock files that no
    download holds (a store's goes with its store)."""
    found = []
    for lock in sorted(p for p in folder.glob(".*.lock") if not p.name.startswith(".store-")):
        with _free(lock) as free:
            if free:
                found.append(Removal(lock, 0, "the lock of a download that is over"))
                if not dry_run:
                    lock.unlink(missing_ok=True)
    for path in stale_temp_files(folder):
        with contextlib.suppress(FileNotFoundError):
            found.append(Removal(path, path.stat().st_size, "left by a download or preparation that was stopped"))
            if not dry_run:
                path.unlink()
    return found


def _gone(store: Path) -> str | None:
    """Why no run can use `store` again (None if one can): every file its text came from is gone, or it has no
    manifest to say (a build stopped before it was renamed into place leaves none; such a store is never read)."""
    try:
        files = json.loads((store / "manifest.json").read_text(encoding="utf-8"))["identity"].get("files", [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "it has no readable manifest"
    paths = [Path(f[0]) for f in files if isinstance(f, list) and f and isinstance(f[0], str)]
    if not paths or any(p.exists() for p in paths):
        return None
    more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
    return f"its text is gone ({paths[0]}{more})"


def _remove(folder: Path, key: str, store: Path | None, dry_run: bool) -> int | None:
    """`store` (if any), its build's leftovers and its lock file: the bytes that frees, or None when a build holds
    the lock (and nothing is removed)."""
    lock = folder / f".store-{key}.lock"
    with _free(lock) as free:
        if not free:
            return None
        size = _size(store) if store is not None else 0
        if not dry_run:
            if store is not None:
                shutil.rmtree(store, ignore_errors=True)
            remove_leftovers(folder, key)
            lock.unlink(missing_ok=True)
    return size


@contextlib.contextmanager
def _free(lock: Path) -> Iterator[bool]:
    """Whether no process is preparing the store that `lock` guards, held so for the block (a store without a lock
    file has no build under way: none is made for it)."""
    try:
        f = open(lock)
    except FileNotFoundError:
        yield True
        return
    except OSError:
        yield False
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
