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
import glob
import logging
import os
from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import Corpus, DataRoot, register, split_stream
from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)


def is_binary(raw: bytes) -> bool:
    """Text files never hold a NUL byte; executables, images, archives and PDFs almost always do."""
    return b"\0" in raw


def decode_utf8(raw: bytes, name: str | Path, truncated: bool = False) -> str:
    """`raw` as text. `truncated` means a byte limit cut it, so a character cut in half at the end is dropped."""
    if is_binary(raw):
        offset = raw.index(b"\0")
        raise RnnlmError(f"{name}: a binary file, not text (NUL byte at offset {offset}); "
                         "give data.path a text file")
    try:
        # The incremental decoder with final=False holds back (drops) an incomplete character at the end.
        return codecs.getincrementaldecoder("utf-8")().decode(raw, final=not truncated)
    except UnicodeDecodeError as e:
        raise RnnlmError(f"{name}: not UTF-8 text (byte offset {e.start}: {raw[e.start:e.start + 1]!r}); "
                         "convert it, e.g. with iconv -t UTF-8") from None


def read_prefix(path: Path, max_bytes: int | None = None) -> tuple[bytes, bool]:
    """A file's bytes, at most `max_bytes` of them, and whether there were more."""
    try:
        with path.open("rb") as f:
            if max_bytes is None:
                return f.read(), False
            raw = f.read(max_bytes)
            return raw, f.read(1) != b""
    except FileNotFoundError:
        raise RnnlmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RnnlmError(f"{path}: is a directory, expected a text file") from None
    except PermissionError:
        raise RnnlmError(f"{path}: permission denied") from None


def read_utf8(path: Path, max_bytes: int | None = None) -> str:
    """A file's text; a binary or non-UTF-8 file is an error naming the file (and the first bad byte)."""
    raw, truncated = read_prefix(path, max_bytes)
    return decode_utf8(raw, path, truncated)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def text_files(spec: str) -> list[Path]:
    """The files `data.path` names: the file itself, a directory's files, or a glob's matches, sorted as path
    strings (the order `linux` uses too: `a.txt` before `a/z.txt`)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted((p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))), key=str)
    if any(c in spec for c in "*?["):
        matches = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
        files = {f for m in matches for f in (text_files(str(m)) if m.is_dir() else [m]) if f.is_file()}
        if not files:
            raise RnnlmError(f"data.path={spec!r} matches no file; check the pattern (** needs a folder: notes/**/*.txt)")
        return sorted(files, key=str)
    raise RnnlmError(f"{spec}: no such file or directory; data.path takes a file, a directory or a glob")


def read_text(spec: str, max_bytes: int | None = None) -> str:
    """All text under `data.path`, concatenated in sorted path order, at most `max_bytes` bytes of it."""
    if Path(spec).expanduser().is_file():
        text = read_utf8(Path(spec).expanduser(), max_bytes)
        if not text:
            raise RnnlmError(f"{spec}: the file is empty; give data.path a file with some text")
        return text
    files = text_files(spec)
    pieces: list[str] = []
    binaries: list[Path] = []
    budget = max_bytes
    for path in files:
        raw, truncated = read_prefix(path, budget)
        if is_binary(raw):
            binaries.append(path)
            continue
        pieces.append(decode_utf8(raw, path, truncated))
        if budget is not None:
            budget -= len(raw)
            if budget <= 0:
                break
    if binaries:
        log.warning("skipped %d binary file(s) under %s: %s", len(binaries), spec,
                    ", ".join(map(str, binaries[:3])) + (", ..." if len(binaries) > 3 else ""))
    text = "".join(pieces)
    if not text:
        found = f"{len(files)} file(s), none with text" if files else "no files"
        raise RnnlmError(f"{spec}: no text to read ({found}); give data.path a folder or glob of UTF-8 text files")
    return text


def read_records(path: Path, max_bytes: int | None = None) -> list[str]:
    """A line-per-record file: one record per line, without the line ending.

    An empty line is an error naming it rather than something skipped: in a line corpus it is either a
    mistake (a blank line pasted in) or a record the user meant, and guessing would silently change
    the data. The final newline ends the last line; it does not start an empty one. With a byte limit,
    a last line the limit cut short is dropped, so no record is cut.
    """
    raw, truncated = read_prefix(path, max_bytes)
    lines = decode_utf8(raw, path, truncated).split("\n")
    if truncated or lines[-1] == "":
        lines.pop()
    records = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not records:
        raise RnnlmError(f"{path}: no records (the file is empty); a line corpus holds one record per line")
    empty = [number for number, record in enumerate(records, start=1) if not record]
    if empty:
        more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        raise RnnlmError(f"{path}: line {empty[0]} is empty{more}; a line corpus holds one record per line: "
                         f"remove the empty lines, e.g. sed -i '/^$/d' {path}")
    return records


@register("text")
def text(cfg: DataConfig, seed: int, root: DataRoot) -> Corpus:
    if not cfg.path:
        raise RnnlmError("data.dataset=text needs data.path: add data.path=FILE to the command line or the config")
    return split_stream("text", read_text(cfg.path, cfg.max_bytes), cfg.splits)
