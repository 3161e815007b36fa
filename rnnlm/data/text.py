"""`text`: any UTF-8 text a user brings, as one stream split into contiguous spans; and the readers
every file-based corpus shares.

`data.path` may name a file, a directory, or a glob (`notes/**/*.md`). A directory is walked
recursively; its files and a glob's matches are read in sorted path order and concatenated as `cat`
would. Hidden files and folders (names starting with `.`) are left out, and so are binary files (a
NUL byte) found in a directory or glob, with a warning: a folder of papers often holds a PDF or two.
A binary file named on its own is an error, and so is a file that is not UTF-8, wherever it was found
(naming the file and the byte offset of the first bad byte).

`data.max_bytes` stops reading once that many bytes are read in total; a character the limit cuts in
half is dropped.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnlm.config import SEVERAL_FILES, DataConfig
from rnnlm.data import DataRoot, corpus_names, register
from rnnlm.data.store import Records, Source, left_out, line_ends
from rnnlm.errors import RnnlmError, shell_word

log = logging.getLogger(__name__)

PIECE_BYTES = 1 << 22


class UnreadableText(RnnlmError):
    """A file whose content no corpus reads as it is (binary, not UTF-8, empty; a records file's empty lines or lone
    carriage returns): `what` is what is wrong with it, the message adds how to mend it. A command given the file as
    the run's text moved elsewhere says it was the wrong file instead (`rnnlm.texts.open_run_corpus`)."""

    def __init__(self, name: str | Path, what: str, fix: str, sep: str = "; ") -> None:
        super().__init__(f"{name}: {what}{sep}{fix}")
        self.what = what


def is_binary(raw: bytes) -> bool:
    """Text files never hold a NUL byte; executables, images, archives and PDFs almost always do."""
    return b"\0" in raw


def _binary_file_error(name: str | Path, offset: int) -> RnnlmError:
    """The error for a file given as text with a NUL byte at `offset`."""
    return UnreadableText(name, f"a binary file, not text (NUL byte at offset {offset})", "give a UTF-8 text file")


def decode_utf8(raw: bytes, name: str | Path, truncated: bool = False) -> str:
    """`raw` as text. `truncated` means a byte limit cut it, so a character cut in half at the end is dropped."""
    if is_binary(raw):
        raise _binary_file_error(name, raw.index(b"\0"))
    try:
        # The incremental decoder with final=False holds back (drops) an incomplete character at the end.
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated)
        return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark: see _without_bom
    except UnicodeDecodeError as e:
        raise _not_utf8(name, raw, e, 0) from None


def typed_text(text: str, option: str, instead: str) -> str:
    """`text` given on the command line, checked: bytes the terminal's UTF-8 decoding could not read arrive as lone
    surrogates, which no encoder takes; `instead` says where else the text can come from."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RnnlmError(f"{option}: not UTF-8 text (character {e.start + 1} is not); set the terminal to UTF-8, or "
                         f"give {instead}") from None
    return text


def _open_binary(path: Path) -> BinaryIO:
    """A text file opened for reading bytes; a missing file, a folder or one we may not read is an error naming it."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise RnnlmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RnnlmError(f"{path}: is a directory, expected a text file") from None
    except PermissionError:
        raise RnnlmError(f"{path}: permission denied") from None


def shown(path: str | Path) -> str:
    """A file as messages name it: `-` (for --file -, --prime-file -) is standard input."""
    return "standard input" if str(path) == "-" else str(path)


def open_input(path: Path) -> contextlib.AbstractContextManager[BinaryIO]:
    """A file opened for reading bytes, or for `-` standard input (left open when the block ends)."""
    return contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-" else _open_binary(path)


def read_prefix(path: Path, max_bytes: int | None = None) -> tuple[bytes, bool]:
    """A file's bytes, at most `max_bytes` of them, and whether there were more; `-` is standard input."""
    with open_input(path) as f:
        if max_bytes is None:
            return f.read(), False
        raw = f.read(max_bytes)
        return raw, f.read(1) != b""


READING = {"byte_order_mark": "dropped"}
"""How files are read, in the settings of the stores made from them: a store written before a change here is made
again, not read as it was (stores of text with a byte-order mark kept it as a character)."""


def _without_bom(start: bytes) -> bytes:
    """A file's first bytes without the UTF-8 byte-order mark some Windows editors write first: it says how the file
    is encoded, it is not a character of its text (as Python's utf-8-sig reads it)."""
    return start[len(codecs.BOM_UTF8):] if start.startswith(codecs.BOM_UTF8) else start


def read_utf8(path: Path, max_bytes: int | None = None) -> str:
    """A file's text (`-`: standard input's); a binary or non-UTF-8 file is an error naming the file (and the first
    bad byte)."""
    raw, truncated = read_prefix(path, max_bytes)
    return decode_utf8(raw, shown(path), truncated)


def text_files(spec: str, leave_out: Path | None = None, setting: str = "data.path") -> list[Path]:
    """The files `data.path` (or another `setting`, which messages name) names: the file itself, a directory's files,
    or a glob's matches, sorted as path
    strings (the order `linux` uses too: `a.txt` before `a/z.txt`). Hidden files and folders are left out (unless a
    pattern names them, `notes/.*.md`), and so are the folders rnnlm writes (`_ours`) below the one named, which a
    folder or glob over a whole project (`data.path=.`) would otherwise read: its own stores and runs, different
    again after every run. In a data root (marked, or `leave_out`, the one in use, before it is marked) only its
    corpus folders are rnnlm's: the user's own text beside them (`data/input.txt`, char-rnn's layout) is read, the
    downloads and stores in `data/shakespeare/` are not. Symlinked folders are not
    followed (a link back up the tree would never end; a warning names them), and a file reached again through a
    symlink is read once."""
    path, links = Path(spec).expanduser(), []
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _once(_walk(path, leave_out, _not_hidden, _not_hidden, links, setting))
    elif is_glob(spec):
        base = glob_folder(path)
        pattern, folders_only = path.relative_to(base).parts, spec.endswith("/")  # `notes/*/`: folders
        matched = (lambda parts: _not_hidden(parts) and _matches(pattern, parts[:-1])) if folders_only else (
            lambda parts: _matches(pattern, parts))
        files = _once(_walk(base, leave_out, lambda parts: _may_match(pattern, parts), matched, links, setting)
                      if base.is_dir() else [])
    elif path.exists():  # a FIFO, a device, a socket: a corpus is read more than once
        raise RnnlmError(f"{spec}: not a regular file; {setting} takes a file, a directory or a glob")
    else:
        raise RnnlmError(f"{spec}: no such file or directory; {setting} takes a file, a directory or a glob")
    unfollowed = (f"{len(links)} symlinked folder(s) under {spec} left out: "
                  f"{', '.join(map(str, links[:3]))}{', ...' if len(links) > 3 else ''} (symlinked folders are not "
                  f"followed; name them in {setting} to read them)")
    if not files and is_glob(spec):
        listed = "[" in spec and "," in spec and spec.endswith("]")  # data.path=[a.txt,b.txt] on a command line
        advice = (f"a list is read as a pattern here: {SEVERAL_FILES}" if listed
                  else "check the pattern (** needs a folder: notes/**/*.txt)")
        given = f"data.path={spec!r}" if setting == "data.path" else f"{setting} {spec}"
        raise RnnlmError(f"{given} matches no file; {advice}" + (f"; {unfollowed}" if links else ""))
    if links:
        log.warning("%s", unfollowed)
    return files


def _walk(folder: Path, leave_out: Path | None, descend: Callable[[tuple[str, ...]], bool],
          take: Callable[[tuple[str, ...]], bool], links: list[Path], setting: str) -> Iterator[Path]:
    """The regular files below `folder` (a symlink to one included) that `take` accepts, in the folders `descend`
    accepts (each given its parts below `folder`); symlinked folders it would descend into go to `links`. A folder
    that cannot be listed is an error naming it."""
    ours, skip = functools.cache(_ours), leave_out.resolve() if leave_out is not None else None
    corpora = corpus_names()  # the folders rnnlm writes in a data root, one per corpus (its downloads and stores)
    a_root = functools.cache(lambda here: (here / DataRoot.MARK).exists() or here.resolve() == skip)

    def cannot_read(e: OSError) -> None:
        raise RnnlmError(f"{e.filename}: cannot read this folder ({e.strerror}); give {setting} folders you may read")

    for top, dirs, files in os.walk(folder, onerror=cannot_read):
        here = Path(top)
        dirs[:] = [d for d in dirs if descend((here / d).relative_to(folder).parts) and not ours(here / d)
                   and not (d in corpora and a_root(here))]
        links += [here / d for d in dirs if (here / d).is_symlink()]  # listed, never descended into
        yield from (here / f for f in files if take((here / f).relative_to(folder).parts) and (here / f).is_file())


def would_read(spec: str, path: Path) -> bool:
    """Whether `data.path` reads a file at `path` (there or not yet): below the folder it names (not hidden, not in
    a folder rnnlm writes) or matched by its glob. A file written there joins the corpus, which a resume then finds
    changed."""
    named, target = Path(os.path.realpath(Path(spec).expanduser())), Path(os.path.realpath(path))
    if Path(spec).expanduser().is_dir():
        base, pattern, folders_only = named, ("**", "*"), False
    elif is_glob(spec):
        base = glob_folder(Path(spec).expanduser())
        pattern, folders_only = Path(spec).expanduser().relative_to(base).parts, spec.endswith("/")
        base = Path(os.path.realpath(base))
    else:
        return False
    if not target.is_relative_to(base):
        return False
    parts = target.relative_to(base).parts
    matched = _not_hidden(parts) and _matches(pattern, parts[:-1]) if folders_only else _matches(pattern, parts)
    return matched and not any(_ours(folder) for folder in target.parents if folder.is_relative_to(base))


def _not_hidden(parts: tuple[str, ...]) -> bool:
    return not parts[-1].startswith(".")


def _once(files: Iterable[Path]) -> list[Path]:
    """`files` sorted as path strings, each real file once (the first of the names a symlink gives it)."""
    seen: set[str] = set()
    kept = []
    for f in sorted(files, key=str):
        real = os.path.realpath(f)
        if real not in seen:
            seen.add(real)
            kept.append(f)
    return kept


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether a path (its parts) matches a glob pattern (its parts), as glob matches: `**` stands for any number of
    folders, other parts match one name each as fnmatch does, and a wildcard matches no leading dot; a path below a
    folder that matches matches too (read as a folder is, without hidden ones)."""
    if not pattern:
        return not any(part.startswith(".") for part in parts)
    if pattern[0] == "**":
        return _matches(pattern[1:], parts) or (bool(parts) and not parts[0].startswith(".")
                                                and _matches(pattern, parts[1:]))
    return bool(parts) and _name_matches(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])


def _may_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether a folder (its parts) may hold a path that matches `pattern`: the walk does not descend elsewhere."""
    if not pattern:
        return not any(part.startswith(".") for part in parts)
    if not parts:
        return True
    if pattern[0] == "**":
        return _may_match(pattern[1:], parts) or (not parts[0].startswith(".") and _may_match(pattern, parts[1:]))
    return _name_matches(parts[0], pattern[0]) and _may_match(pattern[1:], parts[1:])


def _name_matches(name: str, pattern: str) -> bool:
    return (not name.startswith(".") or pattern.startswith(".")) and fnmatch.fnmatchcase(name, pattern)


def file_pieces(path: Path, budget: list[int | None], named: bool) -> Iterator[bytes]:
    """A file's text in pieces of whole UTF-8 characters, at most PIECE_BYTES each, checked as they are read; stops
    when `budget[0]` bytes (shared by every file of a corpus) are spent, dropping a character the limit cuts in
    half. A NUL byte makes the file binary: an error if it was `named` on its own, else (a file found in a folder or
    a glob) it is skipped, costing nothing of the budget, with the warning the caller gives."""
    carry, offset = b"", 0
    with _open_binary(path) as f:
        # looked for first in all that will be read (its text cannot be taken back once given), and in a whole
        # first piece however little of the budget is left: a binary file's NUL rarely comes in its first bytes
        if not named and _holds_nul(f, None if budget[0] is None else max(budget[0], PIECE_BYTES)):
            raise _Binary(path)
        while budget[0] is None or budget[0] > 0:
            block = f.read(PIECE_BYTES if budget[0] is None else min(PIECE_BYTES, budget[0]))
            if not block:
                break
            if budget[0] is not None:
                budget[0] -= len(block)
            if is_binary(block):
                raise _binary_file_error(path, offset + block.index(0))
            if offset == 0:
                offset, block = len(block) - len(_without_bom(block)), _without_bom(block)
            data, start = carry + block, offset - len(carry)
            cut = len(data) if data.isascii() else _whole_characters(data)
            piece, carry = data[:cut], data[cut:]
            _check_utf8(path, piece, start)
            offset += len(block)
            yield piece
    if carry and (budget[0] is None or budget[0] > 0):  # the file ends inside a character: not a cut, an error
        _check_utf8(path, carry, offset - len(carry))


def _holds_nul(f: BinaryIO, limit: int | None) -> bool:
    """Whether the file's first `limit` bytes (all of it: None) hold a NUL byte; read a piece at a time, then from
    its start again."""
    found, left = False, limit
    while not found and (left is None or left > 0):
        block = f.read(PIECE_BYTES if left is None else min(PIECE_BYTES, left))
        if not block:
            break
        found = is_binary(block)
        left = None if left is None else left - len(block)
    f.seek(0)
    return found


def _check_utf8(path: Path, data: bytes, start: int) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e, start) from None


def _not_utf8(name: str | Path, data: bytes, e: UnicodeDecodeError, start: int) -> RnnlmError:
    """The error for bytes that are not UTF-8 (`data` from byte `start` of the file): another encoding, or, at the
    end, perhaps UTF-8 cut short inside its last character (a copy interrupted), which converting would not mend."""
    if e.reason == "unexpected end of data":
        return UnreadableText(name, f"ends inside a UTF-8 character (byte offset {start + e.start})", "a copy cut "
                              f"short (copy it again), or another encoding (convert it: {_iconv(name)})", sep=": ")
    return UnreadableText(name, f"not UTF-8 text (byte offset {start + e.start}: {data[e.start:e.start + 1]!r})",
                          f"convert it: {_iconv(name)}")


def _iconv(name: str | Path) -> str:
    """The command that converts a file to UTF-8 in place (a converted copy beside it would join a folder's corpus
    with the original). iconv needs the encoding it is in (-f): without it, it takes the locale's, UTF-8, and stops
    at the same byte."""
    file = shell_word(name) if isinstance(name, Path) else "FILE"
    new = shell_word(f"{name}.utf8") if isinstance(name, Path) else "FILE.utf8"
    return (f"iconv -f LATIN1 -t UTF-8 {file} > {new} && mv {new} {file} (LATIN1, CP1252...: the encoding it is "
            "in; iconv -l lists them)")


class _Binary(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


def _whole_characters(data: bytes) -> int:
    """The length of the longest prefix of `data` that ends on a character boundary (at most 3 bytes short)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a character starts here: is it complete?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def glob_folder(pattern: Path) -> Path:
    """The folder a glob pattern starts in: its last parent without a wildcard (`notes` of `notes/**/*.txt`)."""
    return next(p for p in pattern.parents if not is_glob(str(p)))


def is_glob(path: str) -> bool:
    """Whether data.path is a pattern (its matches are read) rather than a file or folder."""
    return any(c in path for c in "*?[")


def _ours(folder: Path) -> bool:
    """Whether rnnlm wrote `folder`: a corpus folder or a store in one (in any data root, marked or not), or a run
    directory (config.yaml beside the CLI's `.lock`, or the status.json every run writes; a config beside metrics is
    as likely another tool's)."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    return (any(n.startswith(".store-") and n.endswith(".lock") for n in names)
            or (folder.name.startswith("store-") and "manifest.json" in names)
            or ("config.yaml" in names and bool(names & {".lock", "status.json"})))


def text_pieces(spec: str, files: list[Path], max_bytes: int | None,
                warnings: list[str] | None = None, setting: str = "data.path") -> Iterator[bytes]:
    """The text of `files` (what `data.path` names: a file, a folder or a glob; `text_files`), in that order, at most
    `max_bytes` bytes of it, in pieces of whole characters. Binary files found in a folder or a glob are skipped with
    a warning (added to `warnings` too, with absolute paths: a store is shared by every spelling of its path), and
    cost nothing of `max_bytes`."""
    named = Path(spec).expanduser().is_file()
    budget: list[int | None] = [max_bytes]
    skipped: list[Path] = []
    seen = False
    for path in files:
        try:
            for piece in file_pieces(path, budget, named):
                seen = seen or bool(piece)
                yield piece
        except _Binary as binary:
            skipped.append(binary.path)
        if budget[0] is not None and budget[0] <= 0:
            break
    if skipped:
        left_out(f"skipped {len(skipped)} binary file(s) under {_absolute(spec)}",
                 [os.path.abspath(p) for p in skipped], warnings)
    if not seen:
        if budget[0] is not None and budget[0] <= 0:  # the limit ran out inside the first character
            raise RnnlmError(f"data.max_bytes={max_bytes} ends inside the first character of {spec}; give a larger "
                             "data.max_bytes")
        if named:
            raise UnreadableText(spec, "the file is empty", f"give {setting} a file with some text")
        found = f"{len(files)} file(s), none with text" if files else "no files"
        raise UnreadableText(spec, f"no text to read ({found})", f"give {setting} a folder or glob of UTF-8 text files")


def read_text(spec: str, max_bytes: int | None = None) -> str:
    """All text under `data.path` as one string (for small texts; the store reads `text_pieces` chunk by chunk)."""
    return b"".join(text_pieces(spec, text_files(spec), max_bytes)).decode("utf-8")


def files_identity(files: list[Path]) -> list[list[object]]:
    """What a store made from `files` depends on: each file's absolute path, size and modification time."""
    out: list[list[object]] = []
    for path in files:
        st = path.stat()
        out.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    return out


def stream_source(name: str, spec: str, cfg: DataConfig, files: list[Path]) -> Source:
    """A stream corpus read from `files` (what `spec` names), split by `data.splits`."""
    warnings: list[str] = []
    return Source(name, {"files": files_identity(files)}, {"path": _absolute(spec), "max_bytes": cfg.max_bytes,
                                                           **READING}, cfg.splits,
                  pieces=lambda: text_pieces(spec, files, cfg.max_bytes, warnings), warnings=warnings)


def _absolute(spec: str) -> str:
    """`spec` as `config.with_absolute_paths` makes it, so that `data info` and training share one store."""
    return os.path.abspath(os.path.expanduser(spec))


def line_records(path: Path, max_bytes: int | None = None) -> Records:
    """A line-per-record file: one record per line, without its line ending (a CR before the LF goes too).

    An empty line is an error naming it rather than something skipped: in a line corpus it is either a
    mistake (a blank line pasted in) or a record the user meant, and guessing would silently change
    the data. The final newline ends the last line; it does not start an empty one. With a byte limit,
    a last line the limit cut short is dropped, so no record is cut.
    """
    # Read, not memory-mapped: a map of a file cut short meanwhile (a generator writing it again) kills the reader
    # with SIGBUS; a copy is checked against the file once the store is written (`store._check_unchanged`).
    data, truncated = read_prefix(path, max_bytes)
    nul = data.find(b"\0")
    if nul >= 0:
        raise _binary_file_error(path, nul)
    mark = len(data) - len(_without_bom(data))  # bytes before the text: its offsets in messages are the file's
    data = data[mark:]
    text = np.frombuffer(data, dtype=np.uint8)
    lines = line_ends(text)
    whole = data[:-1] if truncated and data.endswith(b"\r") else data  # the limit may cut a CR LF in half
    if whole.count(b"\r") - whole.count(b"\r\n") > len(lines) - 2:  # more lines end in CR alone than in a newline
        raise UnreadableText(path, "its lines end in a carriage return alone (classic Mac OS line endings), which a "
                             "line corpus does not read as line ends", "make them newlines, e.g. "
                             f"tr '\\r' '\\n' < {shell_word(path)} > records.txt")
    _check_lines_utf8(path, data, lines, truncated, mark)
    if truncated or lines[-2] + 1 == len(data):  # the last line: cut short by the limit, or after the final newline
        lines = lines[:-1]
    if len(lines) == 1:
        if truncated:
            raise RnnlmError(f"data.max_bytes={max_bytes} ends inside the first line of {path}; give a larger "
                             "data.max_bytes")
        empty = "holds a byte-order mark alone" if mark else "is empty"
        raise UnreadableText(path, f"no records (the file {empty})", "a line corpus holds one record per line")
    cr = (lines[1:] - lines[:-1] > 1) & (text[lines[1:] - 1] == 13)
    empty = np.flatnonzero(lines[1:] - lines[:-1] - cr == 1)
    if len(empty):
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise UnreadableText(path, f"line {empty[0] + 1} is empty{more}", "a line corpus holds one record per line: "
                             f"remove the empty lines, e.g. sed -i '/^\\r\\?$/d' {shell_word(path)}")  # CR LF too
    return Records(data, lines, cr)


def read_records(path: Path, max_bytes: int | None = None) -> list[str]:
    """A line-per-record file's records as strings (`line_records`): for small files."""
    return line_records(path, max_bytes).texts()


def _check_lines_utf8(path: Path, data: bytes, lines: np.ndarray, truncated: bool, base: int = 0) -> None:
    """Checks that `data` (the file's from byte `base`) is UTF-8, about PIECE_BYTES at a time cut after newlines
    (`lines`: their positions, -1 first); a character cut in half at the end is dropped, not an error, when a byte
    limit cut it (`truncated`)."""
    cuts = (lines[np.searchsorted(lines, np.arange(PIECE_BYTES, len(data), PIECE_BYTES))] + 1).tolist()
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        if a >= b:
            continue
        if b < len(data) or not truncated:
            _check_utf8(path, data[a:b], base + a)
            continue
        try:
            codecs.getincrementaldecoder("utf-8")().decode(data[a:b], final=False)
        except UnicodeDecodeError as e:
            _check_utf8(path, data[a:a + e.start + 1], base + a)  # the same message, at the same offset


@register("text")
def text(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    if not cfg.path:
        raise RnnlmError("data.dataset=text needs data.path: add data.path=FILE to the command line or the config")
    return stream_source("text", cfg.path, cfg, text_files(cfg.path, leave_out=root.path))
