"""Writing a file so that readers see the old one or the complete new one, never a half-written one.

Every file rnnlm writes over an old one goes through `atomic_file`: checkpoints, metrics rewrites, prepared corpora,
downloads and `--out` files. The new bytes go to a temporary file beside the target, `.NAME.tmp-PID`, which is
flushed to disk and renamed over the target only when the block completes; on an error or Ctrl-C it is removed and
the target is left as it was. A process killed mid-write leaves its temporary file behind; `remove_stale_temp_files`
deletes those whose process is gone. The rename stays on one file system (where it is atomic), and the dot keeps
corpus readers from picking the temporary file up.

Two processes that would write the same thing (torchrun's ranks each open the corpus) take turns by `exclusive`, a
lock file beside it: the first writes, the next finds it written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")
LOCK_ATTEMPTS = 5  # times a lock is taken again when its file was removed meanwhile


class CannotLock(OSError):
    """The lock file could not be opened: a folder this user may not write in, which holds none yet."""


@contextmanager
def atomic_file(target: Path, encoding: str | None = None) -> Iterator[IO[Any]]:
    """A temporary file beside `target` that replaces it, synced to disk, when the block completes, and is removed
    if the block raises. Binary, or text in `encoding` when one is given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    f = tmp.open("w" if encoding else "wb", encoding=encoding)
    try:
        held(f)
        with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its permissions (a private one stays so)
            os.fchmod(f.fileno(), stat.S_IMODE(target.stat().st_mode))
        yield f
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, target)  # still open, so still held while it is renamed
        f.close()
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes what is buffered: on a full disk a second error, which
            f.close()                       # would hide the first
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def held(f: IO[Any]) -> None:
    """Locks a temporary file while it is written: in a data root shared by several machines (or containers, each
    with its own process ids) its PID says nothing of a writer elsewhere, the lock does."""
    for _ in range(100):  # a cleaner's look (`_held_elsewhere`) holds it a moment
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:  # a file system without locks: the PID alone is the sign
            return


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` for the block: a second process asking for it waits here. A lock file
    removed while this process waited for it (`rnnlm data clean` removes those of stores that are gone; `fetch`
    its own when done) guards nothing: the lock is taken again on the file now at `path`."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            f = open(path, "a+")
        except OSError as e:
            try:  # flock needs no write access: another user's lock file in a shared data root still guards a read
                f = open(path)
            except OSError:
                raise CannotLock(e.errno, e.strerror, str(path)) from None
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if not _still_at(f, path) and attempt < LOCK_ATTEMPTS - 1:  # (a file system whose inode numbers
                continue                                                 # change at each look: held as it is)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
            return


def _still_at(f: Any, path: Path) -> bool:
    """Whether the open file `f` is still the one at `path` (not removed, nor replaced)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files (`.NAME.tmp-PID`) that writers killed mid-write left in `folder`: those whose
    process is gone (or is this one, which is not writing yet). Returns what was removed."""
    removed = stale_temp_files(folder)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def stale_temp_files(folder: Path) -> list[Path]:
    """The temporary files in `folder` that no running process will finish (see `remove_stale_temp_files`): their
    process is gone and no process holds them (`held`); folders named so (a corpus store being built) are their
    writer's to remove."""
    found = []
    for p in sorted(folder.glob(".*.tmp-*")):
        match = _TEMP.match(p.name)
        if (match and p.is_file() and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1))))
                and not _held_elsewhere(p)):
            found.append(p)
    return found


def _held_elsewhere(path: Path) -> bool:
    try:
        with open(path, "rb") as f:  # shared: NFS locks a file open for reading only so (flock(2))
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # gone meanwhile, or a file system without locks
        return False
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot sync a directory, where the rename is still atomic."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
