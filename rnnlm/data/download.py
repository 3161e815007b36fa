"""Getting a corpus file into the data root: already there, else from the mirror, else from the network.

Whatever the source, the bytes go to a temporary file in the target folder while their sha256 is
computed, and only a file whose digest matches is moved into place (an atomic rename on one file
system). An interrupted or corrupted transfer therefore never leaves a file that looks valid, and a
failed one leaves nothing at all.

    data root (data/, --data-dir, RNNLM_DATA_DIR)      mirror (--mirror, RNNLM_DATA_MIRROR)
    ├── shakespeare/input.txt   <── copy, checked ───  ├── shakespeare/input.txt
    └── names/names.txt                                └── names/names.txt
            ^
            └── download, checked, when neither has it
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rnnlm import __version__, bars
from rnnlm.data import DataRoot
from rnnlm.atomic import atomic_file, exclusive
from rnnlm.errors import RnnlmError

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection and for each read, so a server that never answers fails in bounded time."""

MIN_SPEED = 20_000
"""Bytes a second a download must average over its whole length (with DEFAULT_TIMEOUT of slack), so that a server
trickling a byte at a time cannot hold a run for hours either."""

CHUNK = 1 << 16

WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                errno.ENOTDIR, errno.EEXIST, errno.EISDIR}  # the last three: a file where a folder goes, or the reverse


@dataclass(frozen=True)
class Remote:
    """One file a corpus needs, where it lives under the data root, and what its bytes must hash to."""

    relpath: str
    """Location under the data root and under the mirror, e.g. `shakespeare/input.txt`."""

    url: str
    """Where to download it from."""

    sha256: str
    """Published digest; a file that does not match is never moved into place."""

    size: int | None = None
    """Expected size in bytes when known (for messages and progress bars only; the digest decides)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with _readable(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: Remote, root: DataRoot, timeout: float = DEFAULT_TIMEOUT, progress: bool = True) -> Path:
    """The checked local copy of `remote` under `root`: the one already there, else from the mirror, else downloaded."""
    target = root.path / remote.relpath
    if target.is_file():
        check_existing(remote, target)
        return target
    mirrored = root.mirror / remote.relpath if root.mirror is not None else None
    if root.offline:  # read where it is, copy nothing in
        if mirrored is not None and mirrored.is_file():
            check_existing(remote, mirrored)
            return mirrored
        raise RnnlmError(f"{remote.relpath} is not in {root.path} (this command reads a corpus, it does not download "
                         "one); fetch it with rnnlm data fetch, or say where it is with --data-dir")
    with _alone(target):
        if target.is_file():  # brought in by the process this one waited for
            return target
        if mirrored is not None and mirrored.is_file():
            with _readable(mirrored) as f:
                _store(remote, target, _chunks(f), total=mirrored.stat().st_size, origin=str(mirrored), progress=False)
        else:
            mirror_note = "" if root.mirror is None else (f" (the mirror {root.mirror} has none)"
                                                          if root.mirror.is_dir()
                                                          else f" (the mirror {root.mirror} is no folder here)")
            _download(remote, target, timeout, progress, mirror_note)
    root.mark()  # after: a failed download leaves nothing behind
    return target


@contextlib.contextmanager
def _alone(target: Path) -> Iterator[None]:
    """The block run by one process at a time among those bringing `target` in (torchrun's ranks each open the
    corpus: one downloads it, the others wait and find it there). The process that tried to bring it removes the
    lock file (a waiter then takes the lock once more, on a new file, which stays for `rnnlm data clean`). A data
    root this user cannot write in gets none (the write itself then fails and says why)."""
    lock = target.with_name(f".{target.name}.lock")

    def remove() -> None:
        with contextlib.suppress(OSError):
            lock.unlink()

    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(exclusive(lock))
            if not target.is_file():  # this process brings it in (or fails to): removed while still held
                stack.callback(remove)
        yield


def check_existing(remote: Remote, target: Path) -> None:
    """A file already in the data root must still be the published one (it may have been edited or damaged)."""
    actual = sha256_file(target)
    if actual != remote.sha256:
        own = {"names": "give your own list with data.path=FILE (one record per line)",
               "linux": "give your own kernel tree or tarball with data.path=PATH"}.get(
                   remote.relpath.split("/")[0], "use data.dataset=text data.path=FILE for your own text")
        raise RnnlmError(f"{target} has sha256 {actual}, expected {remote.sha256}: it is not the published file.\n"
                         f"  Delete it and fetch it again (rnnlm data fetch), or {own}.")


def _readable(path: Path) -> BinaryIO:
    """`path` opened for reading; one we may not read is an error naming it."""
    try:
        return path.open("rb")
    except OSError as e:
        raise RnnlmError(f"{path}: cannot read it ({e.strerror}); let this user read it, or fetch the corpus into "
                         "another data root with --data-dir") from None


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    """What arrives, as it arrives (read1: one read of the socket), so that a trickle is seen by `_deadline`."""
    read = getattr(f, "read1", f.read)
    return iter(lambda: read(CHUNK), b"")


def _store(remote: Remote, target: Path, chunks: Iterator[bytes], total: int | None, origin: str, progress: bool) -> None:
    """Write `chunks` to a temporary file beside `target`, check size and digest, then rename it into place.

    Any failure, including KeyboardInterrupt, removes the temporary file before it propagates.
    """
    try:
        with atomic_file(target) as out, bars.bar(total, remote.relpath, unit="B", shown=progress, delay=0) as bar:
            digest = hashlib.sha256()
            received = 0
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            if total is not None and received != total:
                # http.client returns a short body without complaint when the server closes early.
                raise RnnlmError(f"the connection to {origin} dropped after {received} of {total} bytes; "
                                 f"nothing was saved. Run the command again to retry.")
            actual = digest.hexdigest()
            if actual != remote.sha256:
                raise RnnlmError(f"{origin} has sha256 {actual}, expected {remote.sha256}; nothing was saved.\n"
                                 f"  The file there is damaged or has changed; rnnlm only keeps the published "
                                 f"{remote.relpath}.")
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise  # a network error while reading the chunks: the caller names it
        raise RnnlmError(f"cannot write {e.filename or target} ({e.strerror}); choose a writable data root "
                         f"with --data-dir or RNNLM_DATA_DIR") from None


def _download(remote: Remote, target: Path, timeout: float, progress: bool, mirror_note: str) -> None:
    request = urllib.request.Request(remote.url, headers={"User-Agent": f"rnnlm/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            size = total or remote.size or 10**9
            chunks = _deadline(_chunks(response), timeout + size / MIN_SPEED, remote, size)
            _store(remote, target, chunks, total=total, origin=remote.url, progress=progress)
    except urllib.error.HTTPError as e:
        raise missing_file_error(remote, target, mirror_note, f"the server answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = "it timed out" if isinstance(e.reason, (TimeoutError, socket.timeout)) else str(e.reason)
        raise missing_file_error(remote, target, mirror_note, f"no connection: {reason}") from None
    except (TimeoutError, socket.timeout):
        raise missing_file_error(remote, target, mirror_note, f"the server sent nothing for {timeout:g} s") from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise RnnlmError(f"the download of {remote.url} broke off ({type(e).__name__}: {e}); nothing was saved. "
                         f"Run the command again to retry.") from None


def _deadline(chunks: Iterator[bytes], allowed: float, remote: Remote, size: int) -> Iterator[bytes]:
    """The chunks, until `allowed` seconds have passed: then an error, so that no download runs unbounded."""
    deadline, received = time.monotonic() + allowed, 0
    for chunk in chunks:
        received += len(chunk)
        if time.monotonic() > deadline:
            raise RnnlmError(f"the download of {remote.url} is too slow ({received:,} of {size:,} bytes after "
                             f"{allowed:.0f} s); nothing was saved. Run the command again later, or fetch the file "
                             "yourself (see rnnlm data fetch)")
        yield chunk


def missing_file_error(remote: Remote, target: Path, mirror_note: str, why: str) -> RnnlmError:
    """The few lines a person needs when a corpus file is missing and cannot be downloaded."""
    return RnnlmError(
        f"{remote.relpath} is missing and could not be downloaded ({why}).\n"
        f"  Fetch it from {remote.url}\n"
        f"  and put it at {target} (sha256 {remote.sha256}),\n"
        f"  or point RNNLM_DATA_MIRROR (or --mirror) at a folder holding {remote.relpath}{mirror_note}.")
