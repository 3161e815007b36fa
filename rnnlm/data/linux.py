"""`linux`: the Linux kernel's C source, every `.c` and `.h` file concatenated in sorted path order,
as in char-rnn's original experiment.

Where the source comes from, first match wins:
1. `data.path`: a kernel source folder, or a release tarball (`.tar.xz`, `.tar.gz`, `.tar.bz2`);
2. the pinned release already in the data root (`<data root>/linux/linux-6.1.tar.xz`) or in the mirror;
3. a kernel source tarball already on the machine: Debian's `linux-source-X.Y` package installs
   `/usr/src/linux-source-X.Y.tar.xz` (the newest version is taken when there are several);
4. a download of the pinned kernel.org release, checked against its published sha256.

Which files: regular files (not symlinks) ending in `.c` or `.h`, outside hidden folders; with
`data.subdirs`, only those under the named folders (`kernel`, `mm`, `drivers/net`). Paths are taken
relative to the tree, or, in a tarball, to its one top-level folder (`linux-6.1/`). A file that is not
UTF-8 is left out with a warning (kernel 6.1 has none; older kernels have a few Latin-1 files).

Sorted order from a tarball. A tarball is a stream in whatever order it was written, which need not
be path order, so the last member may sort first: without unpacking, the only way to know the first
`max_bytes` of the sorted concatenation is to read the stream to its end. It is read once, holding
only what can still be part of that prefix (see `SortedPrefix`), so memory stays near `max_bytes`
however big the tarball is; the result goes to the preparation cache (`rnnlm.data.cache`), and later
runs read that instead (Debian's 6.1 tarball, about 140 MB, takes about 12 s to stream on a 2-core
machine). A folder needs no such care: its file names are listed and sorted first, and reading stops
as soon as `max_bytes` are read, so folders are read directly, uncached.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import heapq
import io
import logging
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from tqdm import tqdm

from rnnlm.config import DataConfig
from rnnlm.data import Corpus, DataRoot, register, split_stream
from rnnlm.data.cache import cached_text
from rnnlm.data.download import Remote, fetch
from rnnlm.data.text import is_binary
from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

# The sha256 below is kernel.org's published digest of linux-6.1.tar.xz (its v6.x/sha256sums.asc). It
# could not be checked against the file here (kernel.org is out of reach of this project's machines);
# it was taken from independent public build recipes that download this exact URL and pin its digest
# (OpenEmbedded's linux-libc-headers 6.1 and several Arch Linux kernel PKGBUILDs citing sha256sums.asc),
# which all agree. Should it ever be wrong, the download fails closed: the digest mismatch is reported
# and nothing is kept. Verify it against kernel.org's signed sha256sums.asc when bumping the release.
KERNEL_RELEASE = Remote(
    relpath="linux/linux-6.1.tar.xz",
    url="https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.tar.xz",
    sha256="2ca1f17051a430f6fed1196e4952717507171acfd97d96577212502703b25deb",
)

SYSTEM_TARBALLS = "/usr/src/linux-source-*.tar.xz"
"""Where Debian's (and Ubuntu's) linux-source packages put the kernel tree."""

EXTENSIONS = (".c", ".h")


# -- which files ------------------------------------------------------------------------------------

def normalise_subdirs(subdirs: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({d.strip("/") for d in subdirs}))


def subdir_of(rel: str, subdirs: tuple[str, ...]) -> str | None:
    """The entry of `subdirs` that holds `rel` ("" when there is no filter), or None when none does."""
    if not subdirs:
        return ""
    return next((d for d in subdirs if rel.startswith(d + "/")), None)


def is_source(rel: str, subdirs: tuple[str, ...]) -> bool:
    return (rel.endswith(EXTENSIONS) and subdir_of(rel, subdirs) is not None
            and not any(part.startswith(".") for part in rel.split("/")))


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not is_binary(raw)


# -- the first max_bytes in path order, from files arriving in any order -----------------------------

@dataclass(frozen=True)
class _Latest:
    """A heap entry that puts the path that sorts last on top of Python's min-heap."""

    rel: str

    def __lt__(self, other: "_Latest") -> bool:
        return self.rel > other.rel


class SortedPrefix:
    """Collects files that arrive in any order and keeps those that can be in the first `limit` bytes
    of their concatenation in path order.

    A file is dropped once the files held with smaller paths fill `limit` by themselves: files seen
    later can only add to what sorts before it, never take away, so it can never come back in. After
    each drop check, everything held but the last-sorting file is under `limit`, so memory stays
    below `limit` plus one file.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.held: dict[str, bytes] = {}
        self.heap: list[_Latest] = []
        self.total = 0

    def wants(self, rel: str) -> bool:
        """False when `rel` would be dropped at once, so its bytes need not even be read."""
        return self.limit is None or self.total < self.limit or not self.heap or rel < self.heap[0].rel

    def add(self, rel: str, raw: bytes) -> None:
        if rel in self.held:  # a tarball may repeat a path; as with tar -x, the later copy wins
            self.total -= len(self.held[rel])
        else:
            heapq.heappush(self.heap, _Latest(rel))
        self.held[rel] = raw
        self.total += len(raw)
        while self.limit is not None and self.heap and self.total - len(self.held[self.heap[0].rel]) >= self.limit:
            self.total -= len(self.held.pop(heapq.heappop(self.heap).rel))

    def items(self) -> list[tuple[str, bytes]]:
        return sorted(self.held.items())


def concatenate(files: Iterable[tuple[str, bytes]], max_bytes: int | None) -> str:
    """The files' text in the given order, cut after `max_bytes` bytes (a character cut in half is dropped)."""
    pieces: list[str] = []
    used = 0
    for _, raw in files:
        if max_bytes is not None and used + len(raw) > max_bytes:
            pieces.append(codecs.getincrementaldecoder("utf-8")().decode(raw[: max_bytes - used], final=False))
            break
        pieces.append(raw.decode("utf-8"))
        used += len(raw)
    return "".join(pieces)


# -- reading a folder and a tarball ------------------------------------------------------------------

@dataclass
class Scan:
    """What a read found, for the messages about it."""

    top_level: set[str]
    """Names at the top of the tree, to suggest when a subdir has no sources."""

    matched: set[str]
    """The `subdirs` entries that held at least one source file."""

    skipped: list[str]
    """Source files left out because they are not UTF-8 text."""


def tree_files(tree: Path, subdirs: tuple[str, ...]) -> tuple[list[tuple[str, Path]], Scan]:
    """The source files under `tree`, sorted by path relative to it."""
    scan = Scan(top_level={p.name for p in tree.iterdir() if p.is_dir()}, matched=set(), skipped=[])
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(tree):
        rel_folder = Path(folder).relative_to(tree).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        # Prune folders that cannot hold a wanted file, so `subdirs=[kernel]` does not walk drivers/.
        dirs[:] = [d for d in dirs if not d.startswith(".") and _may_hold(prefix + d, subdirs)]
        for name in names:
            rel = prefix + name
            if is_source(rel, subdirs) and not (Path(folder) / name).is_symlink():
                found.append((rel, Path(folder) / name))
                scan.matched.add(subdir_of(rel, subdirs) or "")
    return sorted(found), scan


def _may_hold(rel_dir: str, subdirs: tuple[str, ...]) -> bool:
    return not subdirs or any(d == rel_dir or d.startswith(rel_dir + "/") or rel_dir.startswith(d + "/")
                              for d in subdirs)


def read_tree(tree: Path, subdirs: tuple[str, ...], max_bytes: int | None) -> tuple[str, Scan]:
    files, scan = tree_files(tree, subdirs)

    def texts() -> Iterator[tuple[str, bytes]]:
        for rel, path in files:  # lazily, so reading stops at the byte limit
            raw = path.read_bytes()
            if is_utf8(raw):
                yield rel, raw
            else:
                scan.skipped.append(rel)

    return concatenate(texts(), max_bytes), scan


class _ProgressReader:
    """A file whose reads advance a tqdm bar: streaming a tarball shows how much of it is done."""

    def __init__(self, f: BinaryIO, bar: tqdm) -> None:
        self.f, self.bar = f, bar

    def read(self, size: int = -1) -> bytes:
        chunk = self.f.read(size)
        self.bar.update(len(chunk))
        return chunk


def _member_path(name: str) -> str:
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


# Magic numbers of the compressions a kernel tarball comes in, and how to open each as a stream.
COMPRESSIONS: dict[bytes, Callable[[Any], io.BufferedIOBase]] = {
    b"\xfd7zXZ\x00": lambda f: lzma.LZMAFile(f),
    b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f),
    b"BZh": lambda f: bz2.BZ2File(f),
}


def _decompressed(f: _ProgressReader, head: bytes) -> IO[bytes]:
    """The tar stream inside `f`. Decompressing here rather than in tarfile makes a truncated file an
    error (EOFError), where tarfile's own stream decompression ends quietly with the members read so far."""
    for magic, opener in COMPRESSIONS.items():
        if head.startswith(magic):
            return cast(IO[bytes], opener(f))
    return cast(IO[bytes], f)


def read_tarball(path: Path, subdirs: tuple[str, ...], max_bytes: int | None) -> tuple[str, Scan]:
    """Stream the tarball once (tarfile mode 'r|': never seeking, never unpacking to disk)."""
    prefix = SortedPrefix(max_bytes)
    scan = Scan(top_level=set(), matched=set(), skipped=[])
    root: str | None = None
    with path.open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=None,
                                    desc=f"reading {path.name}", leave=False) as bar:
        head = f.read(8)
        f.seek(0)
        try:
            with tarfile.open(fileobj=_decompressed(_ProgressReader(f, bar), head), mode="r|") as tar:
                for member in tar:
                    name = _member_path(member.name)
                    if not name:
                        continue
                    top, _, rel = name.partition("/")
                    if root is None:
                        root = top
                    elif top != root:
                        raise RnnlmError(f"{path}: {root!r} and {top!r} are both at the top of this tarball; a "
                                         "kernel tarball holds one folder (like linux-6.1/). Unpack it and give "
                                         "data.path the folder")
                    if "/" in rel:
                        scan.top_level.add(rel.split("/", 1)[0])
                    if not (member.isfile() and is_source(rel, subdirs)):
                        continue
                    scan.matched.add(subdir_of(rel, subdirs) or "")
                    if not prefix.wants(rel):
                        continue
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if is_utf8(raw):
                        prefix.add(rel, raw)
                    else:
                        scan.skipped.append(rel)
        except (tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError) as e:
            # OSError covers gzip's and bz2's "not a gzip file" / "invalid data stream".
            raise RnnlmError(f"{path}: not a readable tarball, or a damaged one ({e}); data.path takes a kernel "
                             "source folder or a .tar.xz/.tar.gz tarball") from None
    return concatenate(prefix.items(), max_bytes), scan


# -- where the source is -----------------------------------------------------------------------------

def _version_key(path: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def system_tarballs() -> list[Path]:
    """Kernel source tarballs installed on this machine, oldest version first."""
    return [Path(p) for p in sorted(glob.glob(SYSTEM_TARBALLS), key=_version_key)]


def locate_source(cfg: DataConfig, root: DataRoot) -> Path:
    """The kernel tree or tarball to read (see the module docstring for the order)."""
    if cfg.path:
        source = Path(cfg.path).expanduser()
        if not source.exists():
            raise RnnlmError(f"data.path={cfg.path}: no such file or directory; give the linux corpus a kernel "
                             "source folder or a .tar.xz/.tar.gz tarball")
        return source
    pinned_here = (root.path / KERNEL_RELEASE.relpath).is_file() or (
        root.mirror is not None and (root.mirror / KERNEL_RELEASE.relpath).is_file())
    installed = system_tarballs()
    if installed and not pinned_here:
        return installed[-1]
    try:
        return fetch(KERNEL_RELEASE, root)
    except RnnlmError as e:
        raise RnnlmError(f"{e}\n  Or give data.path a kernel source folder or tarball, or install Debian's "
                         f"linux-source package (apt-get install linux-source-6.1).") from None


def read_kernel(source: Path, subdirs: tuple[str, ...], max_bytes: int | None, cache: Path | None) -> str:
    """The corpus text from a kernel folder, or from a tarball through the preparation cache in `cache`."""
    def read() -> str:
        reader = read_tree if source.is_dir() else read_tarball
        text, scan = reader(source, subdirs, max_bytes)
        _report(source, subdirs, scan)
        return text

    if source.is_dir() or cache is None:
        return read()
    stat = source.stat()
    identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    settings = {"subdirs": list(subdirs), "max_bytes": max_bytes}
    return cached_text(cache, str(source.resolve()), identity, settings, read)


def _report(source: Path, subdirs: tuple[str, ...], scan: Scan) -> None:
    missing = [d for d in subdirs if d not in scan.matched]
    if missing:
        raise RnnlmError(f"data.subdirs: {', '.join(missing)} holds no .c or .h files in {source}; "
                         f"its top-level folders are: {', '.join(sorted(scan.top_level)) or 'none'}")
    if scan.skipped:
        log.warning("left out %d source file(s) of %s that are not UTF-8 text: %s", len(scan.skipped), source,
                    ", ".join(scan.skipped[:3]) + (", ..." if len(scan.skipped) > 3 else ""))


@register("linux")
def linux(cfg: DataConfig, seed: int, root: DataRoot) -> Corpus:
    source = locate_source(cfg, root)
    text = read_kernel(source, normalise_subdirs(cfg.subdirs), cfg.max_bytes, cache=root.path / "linux")
    if not text:
        raise RnnlmError(f"{source}: no .c or .h files to read; give data.path a Linux kernel source folder or tarball")
    return split_stream("linux", text, cfg.splits)
