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
be path order, so the last member may sort first. It is streamed once, never unpacked: each source file's
bytes are appended to a spill file beside the store being prepared, with an index of where each one is, and
the store's passes then read the spill in path order (`TarballPieces`). Memory holds the index, not the text.
A folder needs no such care: its file names are listed and sorted first, and reading stops as soon as
`max_bytes` are read.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import glob
import gzip
import io
import logging
import lzma
import os
import posixpath
import tempfile
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from rnnlm import bars
from rnnlm.atomic import held, remove_stale_temp_files
from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, register
from rnnlm.data.download import Remote, fetch
from rnnlm.data.store import Source, left_out
from rnnlm.data.text import files_identity, is_binary
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
    """`kernel/`, `./kernel` and `kernel` alike: paths relative to the tree's top, as its files are named; `.` is
    the whole tree (no filter)."""
    named = {posixpath.normpath(d).strip("/") for d in subdirs}
    return () if "." in named else tuple(sorted(named))


def holders(rel: str, subdirs: tuple[str, ...]) -> list[str]:
    """The entries of `subdirs` that hold `rel` (both of `kernel` and `kernel/sched`), [""] when there is no filter,
    [] when none does."""
    if not subdirs:
        return [""]
    return [d for d in subdirs if rel.startswith(d + "/")]


def is_source(rel: str, subdirs: tuple[str, ...]) -> bool:
    return (rel.endswith(EXTENSIONS) and bool(holders(rel, subdirs))
            and not any(part.startswith(".") for part in rel.split("/")))


def is_utf8(raw: bytes) -> bool:
    if raw.isascii():  # most source files: no decoding needed
        return not is_binary(raw)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not is_binary(raw)


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
    scan = Scan(top_level={p.name for p in tree.iterdir() if p.is_dir() and not p.name.startswith(".")}, matched=set(),
                skipped=[])
    found: list[tuple[str, Path]] = []
    def cannot_read(e: OSError) -> None:
        raise RnnlmError(f"{e.filename}: cannot read this folder of the kernel tree ({e.strerror})")

    for folder, dirs, names in os.walk(tree, onerror=cannot_read):
        rel_folder = Path(folder).relative_to(tree).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        # Prune folders that cannot hold a wanted file, so `subdirs=[kernel]` does not walk drivers/.
        dirs[:] = [d for d in dirs if not d.startswith(".") and _may_hold(prefix + d, subdirs)]
        for name in names:
            rel = prefix + name
            entry = Path(folder) / name
            if is_source(rel, subdirs) and entry.is_file() and not entry.is_symlink():  # not a FIFO: it would block
                found.append((rel, entry))
                scan.matched.update(holders(rel, subdirs))
    return sorted(found), scan


def _may_hold(rel_dir: str, subdirs: tuple[str, ...]) -> bool:
    return not subdirs or any(d == rel_dir or d.startswith(rel_dir + "/") or rel_dir.startswith(d + "/")
                              for d in subdirs)


def tree_pieces(files: list[tuple[str, Path]], max_bytes: int | None, scan: Scan) -> Iterator[bytes]:
    """The files' bytes in the given order, the last cut after `max_bytes` bytes (a character cut in half is
    dropped); files that are not UTF-8 text are left out (noted in `scan`)."""
    return _limited(_utf8_files(files, scan), max_bytes)


def _utf8_files(files: list[tuple[str, Path]], scan: Scan) -> Iterator[bytes]:
    for rel, path in files:
        try:
            raw = path.read_bytes()
        except OSError as e:  # a reading error, not the data root's (which the store's writing errors name)
            raise RnnlmError(f"{path}: cannot read it ({e.strerror})") from None
        if is_utf8(raw):
            yield raw
        else:
            scan.skipped.append(rel)


def _limited(files: Iterable[bytes], max_bytes: int | None) -> Iterator[bytes]:
    """Whole files' bytes in order, the last cut after `max_bytes` bytes in all (a character cut in half dropped);
    no file after it is read."""
    used = 0
    for raw in files:
        if max_bytes is not None and used + len(raw) >= max_bytes:
            yield _whole(raw[: max_bytes - used])
            return
        used += len(raw)
        yield raw


def _whole(raw: bytes) -> bytes:
    """`raw` without a character cut in half at its end."""
    return codecs.getincrementaldecoder("utf-8")().decode(raw, final=False).encode("utf-8")


def read_tree(tree: Path, subdirs: tuple[str, ...], max_bytes: int | None) -> tuple[str, Scan]:
    """A kernel folder's text (for small trees and tests; the store reads through `tree_pieces`)."""
    files, scan = tree_files(tree, subdirs)
    return b"".join(tree_pieces(files, max_bytes, scan)).decode("utf-8"), scan


class _ProgressReader:
    """A file whose reads advance a tqdm bar: streaming a tarball shows how much of it is done."""

    def __init__(self, f: BinaryIO, bar: Any) -> None:
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


class TarballPieces:
    """A tarball's source files in path order, for every pass of the store: the first call streams the tarball
    once (tarfile mode 'r|': never seeking, never unpacking), appending each file to a spill file in `folder` and
    indexing it; every call then reads the spill in path order. `close` removes the spill."""

    def __init__(self, path: Path, subdirs: tuple[str, ...], max_bytes: int | None, folder: Path) -> None:
        self.path, self.subdirs, self.max_bytes, self.folder = path, subdirs, max_bytes, folder
        self.spill: Path | None = None
        self._held: IO[bytes] | None = None
        self.index: dict[str, tuple[int, int]] = {}
        self.scan = Scan(top_level=set(), matched=set(), skipped=[])
        self.warnings: list[str] = []  # the store keeps them (Source.warnings)

    def __call__(self) -> Iterator[bytes]:
        if self.spill is None:
            self._stream()
            _report(self.path, self.subdirs, self.scan, self.warnings)
        return self._pieces()

    def _pieces(self) -> Iterator[bytes]:
        with open(self.spill, "rb") as f:  # type: ignore[arg-type]
            yield from _limited((self._spilled(f, rel) for rel in sorted(self.index)), self.max_bytes)

    def _spilled(self, f: BinaryIO, rel: str) -> bytes:
        offset, size = self.index[rel]
        f.seek(offset)
        return f.read(size)

    def _stream(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.folder)  # the spills of preparations killed outright (1.2 GB for the kernel)
        self.spill = self.folder / f".spill.tmp-{os.getpid()}"
        out = self._held = open(self.spill, "wb")  # held open until `close`: the spill is in use while it is
        held(out)
        for rel, raw in _tar_sources(self.path, self.subdirs, self.scan):
            self.index[rel] = (out.tell(), len(raw))  # a tarball may repeat a path: as with tar -x, the later wins
            out.write(raw)
        out.flush()

    def close(self) -> None:
        try:
            if self._held is not None:
                with contextlib.suppress(OSError):  # a write that failed (a full disk) fails again as it is flushed
                    self._held.close()
                self._held = None
        finally:
            if self.spill is not None:
                self.spill.unlink(missing_ok=True)


def _tar_sources(path: Path, subdirs: tuple[str, ...], scan: Scan) -> Iterator[tuple[str, bytes]]:
    """(path in the tree, bytes) of each UTF-8 source file of the tarball, in the tarball's order."""
    root: str | None = None
    try:
        f = path.open("rb")
    except OSError as e:  # a reading error, not the data root's (which the store's writing errors name)
        raise RnnlmError(f"{path}: cannot read it ({e.strerror})") from None
    with f, bars.bar(path.stat().st_size, f"reading {path.name}", unit="B") as bar:
        head = f.read(tarfile.BLOCKSIZE)
        compressed = any(head.startswith(magic) for magic in COMPRESSIONS)
        if not compressed and not _tar_header(head):  # a C file, a zip: nothing a tar reader takes
            raise RnnlmError(f"{path}: not a tarball; the linux corpus reads a kernel source folder or a .tar.xz/"
                             f".tar.gz tarball (for files of your own: data.dataset=text data.path={path})")
        if not compressed:  # a plain tar: no decompressor sees a cut
            f.seek(max(0, path.stat().st_size - 1024))
            if f.read() != bytes(1024):  # a tar file ends in two blocks of zeros
                raise RnnlmError(f"{path}: not a readable tarball, or a damaged one (it does not end as a tar file "
                                 "does: cut short?); data.path takes a kernel source folder or a .tar.xz/.tar.gz "
                                 "tarball")
        f.seek(0)
        try:
            with tarfile.open(fileobj=_decompressed(_ProgressReader(f, bar), head), mode="r|") as tar:
                for member in tar:
                    name = _member_path(member.name)
                    if name == ".":  # made inside the tree (tar cJf ../k.tar.xz .): its files have no top folder
                        raise RnnlmError(f"{path}: this tarball holds a tree's files at its top, not in one folder "
                                         "(like linux-6.1/); make it from the folder above the tree (tar cJf "
                                         "k.tar.xz linux-6.1), or give data.path the folder")
                    if not name:
                        continue
                    top, _, rel = name.partition("/")
                    root = root or top
                    if top != root:
                        raise RnnlmError(f"{path}: {root!r} and {top!r} are both at the top of this tarball; a "
                                         "kernel tarball holds one folder (like linux-6.1/). Unpack it and give "
                                         "data.path the folder")
                    if "/" in rel and not rel.startswith("."):  # hidden folders are never read
                        scan.top_level.add(rel.split("/", 1)[0])
                    if not (member.isfile() and is_source(rel, subdirs)):
                        continue
                    scan.matched.update(holders(rel, subdirs))
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if is_utf8(raw):
                        yield rel, raw
                    else:
                        scan.skipped.append(rel)
        except (tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError) as e:
            # OSError covers gzip's and bz2's "not a gzip file" / "invalid data stream".
            raise RnnlmError(f"{path}: not a readable tarball, or a damaged one ({e}); data.path takes a kernel "
                             "source folder or a .tar.xz/.tar.gz tarball") from None


def _tar_header(block: bytes) -> bool:
    """Whether a file's first block is a tar header: its checksum holds (as for every format, v7 to pax)."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def read_tarball(path: Path, subdirs: tuple[str, ...], max_bytes: int | None) -> tuple[str, Scan]:
    """A tarball's text in path order (for small tarballs and tests; the store reads through `TarballPieces`)."""
    with tempfile.TemporaryDirectory() as tmp:
        pieces = TarballPieces(path, subdirs, max_bytes, Path(tmp))
        text = b"".join(pieces()).decode("utf-8")
        pieces.close()
    return text, pieces.scan


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
        if installed:  # the pinned file here, refused, stands before the machine's own tarball
            more = f"Without it, the installed {installed[-1]} is read."
        elif pinned_here:  # refused by its check, which said data.path
            more = ("Or install Debian's linux-source package (apt-get install linux-source-6.1), read once the "
                    "file above is gone.")
        else:
            more = ("Or give data.path a kernel source folder or tarball, or install Debian's linux-source package "
                    "(apt-get install linux-source-6.1).")
        raise RnnlmError(f"{e}\n  {more}") from None


def _report(source: Path, subdirs: tuple[str, ...], scan: Scan, warnings: list[str] | None = None) -> None:
    """A subdir that holds no source is an error; the files a pass left out are said (once: see `left_out`)."""
    missing = [d for d in subdirs if d not in scan.matched]
    if missing:
        raise RnnlmError(f"data.subdirs: {', '.join(missing)} holds no .c or .h files in {source}; "
                         f"its top-level folders are: {', '.join(sorted(scan.top_level)) or 'none'}")
    skipped = sorted(set(scan.skipped))  # a folder is read once per pass of the store
    if skipped:
        left_out(f"left out {len(skipped)} source file(s) of {source.resolve()} that are not UTF-8 text", skipped,
                 warnings)
        scan.skipped.clear()


@register("linux")
def linux(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    source = locate_source(cfg, root)
    subdirs = normalise_subdirs(cfg.subdirs)
    settings = {"path": str(source.resolve()), "subdirs": list(subdirs), "max_bytes": cfg.max_bytes}
    if source.is_dir():
        files, scan = tree_files(source, subdirs)
        _report(source, subdirs, scan)
        warnings: list[str] = []

        def pieces() -> Iterator[bytes]:  # one pass over the folder; then what it left out, said once and kept
            yield from _nonempty(source, tree_pieces(files, cfg.max_bytes, scan))
            _report(source, subdirs, scan, warnings)
        return Source("linux", {"files": files_identity([p for _, p in files])}, settings, cfg.splits,
                      pieces=pieces, warnings=warnings)
    tarball = TarballPieces(source, subdirs, cfg.max_bytes, root.path / "linux")
    return Source("linux", {"files": files_identity([source])}, settings, cfg.splits,
                  pieces=lambda: _nonempty(source, tarball()), close=tarball.close, warnings=tarball.warnings)


def _nonempty(source: Path, pieces: Iterator[bytes]) -> Iterator[bytes]:
    seen = False
    for piece in pieces:
        seen = seen or bool(piece)
        yield piece
    if not seen:
        raise RnnlmError(f"{source}: no .c or .h files to read; give data.path a Linux kernel source folder or tarball")
