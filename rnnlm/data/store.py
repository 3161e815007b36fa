"""The prepared token store: a corpus read once into memory-mapped files of small integers.

    <data root>/<corpus>/store-<key>/
        manifest.json    format, the source's identity, the settings, per split: symbols, records, bytes, CRC-32
        symbols.json     the store's symbols (<eos>, then every character of the corpus in code-point order) and
                         each split's character counts
        train.ids        the training split, one symbol per character: uint8 (up to 256 symbols), uint16 or int32
        train.offsets    records corpora only: where each record's leading <eos> is, and the final one (int64)
        val.ids ...

`key` hashes the corpus name and the settings that shape the store (which files, the byte limit, the split
fractions, the seed that shuffles records), so each combination has its own store. A stream corpus is split into
contiguous spans of characters; a records corpus is stored as `<eos> r1 <eos> r2 ... <eos>` per split, records
shuffled with the seed, so both batching modes read it (packed: the stream as it is; padded: record by record).

The store's symbols cover every character of the corpus, so a split reads back exactly as its text. The model's
vocabulary (the training split's characters, `Store.vocab`) is derived from the counts; `Store.lut` maps store
symbols to a vocabulary's ids, a character outside it to <unk>.

Preparing streams a text twice through fixed-size chunks: once to count each chunk's characters (which fixes the
split boundaries and the symbols), once to write the ids. Memory stays at a few chunks (of CHUNK_BYTES) and a small
histogram per chunk whatever the corpus size; nothing holds the corpus as one string or one int64 array. A records
corpus is read from its file's bytes (`Records`: where each line ends), once to find its characters and once to
gather each split's records in the seed's order: two int64 a record, and no Python object per record.

`open_store` is the one place that decides whether a store is ready, stale or damaged:
- it is built when missing, and rebuilt when the source's identity (sizes and modification times of its files) or
  the format changed;
- a file of the wrong size, or whose CRC-32 (all of a file up to FULL_CHECK_BYTES, else of SAMPLES blocks spread
  over it) differs from the manifest's, is damaged: rebuilt, with a one-line note;
- a build writes into a temporary folder that is renamed into place only when complete, under a lock file that
  another process preparing the same store waits on (the lock dies with its process): Ctrl-C or a crash leaves
  nothing that a later run would trust, and a later run removes what it left.
"""

from __future__ import annotations

import array
import errno
import hashlib
import json
import logging
import os
import random
import shutil
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import bars
from rnnlm.atomic import CannotLock, exclusive
from rnnlm.errors import RnnlmError
from rnnlm.vocab import EOS, EOS_ID, UNK, UNK_ID, Vocab

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
CHUNK_BYTES = 1 << 24
"""Text is read, counted and encoded this many bytes at a time."""
HISTOGRAM_BLOCK = 1 << 20  # bytes of an ASCII chunk counted at once (8 MB of int64 counts in flight)
FULL_CHECK_BYTES = 1 << 26
"""Files up to this size are checked whole each time a store is opened; bigger ones by SAMPLES blocks."""
SAMPLES, SAMPLE_BYTES = 64, 1 << 16
MAX_CODEPOINT = 0x110000
PIECE_CHARS = 1 << 22  # characters of a split's text decoded at once (`Store.pieces`)


@dataclass(frozen=True)
class Records:
    """A records corpus's text without a Python object per record or an int per character: its UTF-8 bytes and
    where each record's line ends in them, in file order."""

    data: bytes
    """The UTF-8 text; the line endings between records are never read as characters."""
    lines: np.ndarray
    """int64, one more than there are records: -1, then where each record's line ends (its newline, or the text's
    end): record i is the bytes between lines[i] and lines[i + 1], less a CR before its newline."""
    cr: np.ndarray
    """bool, one per record: its line ends in CR LF."""

    @classmethod
    def of(cls, texts: list[str]) -> Records:
        """Records held as strings (a generated corpus, a test's), none of which holds a newline."""
        data = "".join(text + "\n" for text in texts).encode()
        return cls(data, line_ends(np.frombuffer(data, dtype=np.uint8))[:-1], np.zeros(len(texts), dtype=bool))

    def __len__(self) -> int:
        return len(self.lines) - 1

    def texts(self) -> list[str]:
        """The records as strings: for small corpora and tests."""
        return [text for cp in self.chunks() for text in _as_text(cp).split("\n")[:-1]]

    def chunks(self, picked: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The code points of the `picked` records (default: all, in file order), each followed by a newline, about
        GATHER_BYTES of text at a time (uint8 for an ASCII chunk, else uint32); a chunk holds whole records."""
        text, count = np.frombuffer(self.data, dtype=np.uint8), len(self) if picked is None else len(picked)
        for at in range(0, count, GATHER_RECORDS):
            block = np.arange(at, min(at + GATHER_RECORDS, count)) if picked is None else picked[at:at + GATHER_RECORDS]
            starts = self.lines[block] + 1
            lengths = self.lines[block + 1] - self.cr[block] - starts + 1  # each record's bytes, and a newline
            through, first = np.cumsum(lengths), 0
            while first < len(block):
                before = int(through[first - 1]) if first else 0
                last = max(first + 1, int(np.searchsorted(through, before + GATHER_BYTES, side="right")))
                raw = _gather(text, starts[first:last], lengths[first:last])
                yield _codepoints(raw, raw.isascii())
                first = last


GATHER_RECORDS, GATHER_BYTES = 1 << 16, 1 << 20
"""Records are gathered this many, and about this many bytes, at a time: the gather's index takes 16 bytes a byte."""


def line_ends(text: np.ndarray) -> np.ndarray:
    """-1, the position of each newline byte in UTF-8 `text` (uint8), and len(text): the bounds of its lines. The
    text is scanned CHUNK_BYTES at a time, so no mask as long as it is made (a newline byte is never part of another
    character)."""
    starts = range(0, len(text), CHUNK_BYTES)
    counts = [int(np.count_nonzero(text[at:at + CHUNK_BYTES] == 10)) for at in starts]  # counted first: one array
    lines = np.empty(sum(counts) + 2, dtype=np.int64)
    lines[0], lines[-1], filled = -1, len(text), 1
    for at, count in zip(starts, counts):
        lines[filled:filled + count] = np.flatnonzero(text[at:at + CHUNK_BYTES] == 10) + at
        filled += count
    return lines


def _gather(text: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """The records at `starts` (`lengths` bytes with a newline each) one after another, each with its newline."""
    if len(starts) == 1:  # a record too long to gather with an index
        return text[starts[0]:starts[0] + lengths[0] - 1].tobytes() + b"\n"
    ends = np.cumsum(lengths)  # in what is gathered: one past each newline
    index = np.arange(ends[-1]) + np.repeat(starts - (ends - lengths), lengths)
    index[ends - 1] = 0  # the newlines, written below: what follows a record in the text is \r\n, \n or its end
    out = text[index]
    out[ends - 1] = 10
    return out.tobytes()


def _as_text(cp: np.ndarray) -> str:
    return cp.tobytes().decode("ascii") if cp.dtype == np.uint8 else cp.tobytes().decode("utf-32-le")


@dataclass(frozen=True)
class Source:
    """What a corpus loader hands the store: where the text comes from, without reading it yet."""

    name: str
    """The corpus: shakespeare, names, linux, text, hello, anbn."""
    identity: dict[str, Any]
    """What the text depends on that can change under the same settings (sizes and modification times of the
    files read): a store made from another identity is stale."""
    settings: dict[str, Any]
    """What shapes the store: the files chosen, the byte limit, the split fractions, the seed of a records shuffle."""
    splits: tuple[float, float, float]
    pieces: Callable[[], Iterable[bytes]] | None = None
    """A stream corpus: its UTF-8 text in order, in pieces of whole characters; called once per pass."""
    records: Callable[[], Records] | None = None
    """A records corpus: its records, in file order."""
    seed: int = 0
    sizes: tuple[int, int, int] | None = None
    """Splits given by the corpus itself (the generated ones): train, val, test sizes in characters (a stream) or
    records, in that order, instead of fractions (and no shuffle)."""
    close: Callable[[], None] | None = None
    """Called once the store is ready: removes whatever the pieces kept on disk between passes."""
    warnings: list[str] = field(default_factory=list)
    """What reading the text left out (a text corpus's binary files, a kernel tarball's files that are not UTF-8), as
    the reader warned of it: kept in the store's manifest and said again whenever the store is used (a store made
    before this was kept has none to say)."""

    @property
    def is_records(self) -> bool:
        return self.records is not None


@dataclass
class Store:
    """An opened store: memory-mapped ids (and a records corpus's offsets), the symbols, and each split's character
    counts. Every file is mapped when the store is opened: a store prepared again, or removed, while a run reads it
    is replaced by a rename, and the maps go on reading the files as they were."""

    folder: Path
    manifest: dict[str, Any]
    symbols: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    _maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def records(self) -> bool:
        return bool(self.manifest["records"])

    @property
    def name(self) -> str:
        return str(self.manifest["corpus"])

    @property
    def fingerprint(self) -> str:
        """A digest of the prepared text (each file's size and checksum, each split's counts), which a checkpoint
        keeps: the same text gives the same digest however often it is prepared again. The checksum of a file over
        FULL_CHECK_BYTES reads SAMPLES blocks of it, so an edit that keeps such a file's size and misses every block
        goes unseen."""
        content = {"files": self.manifest["files"], "splits": self.manifest["splits"]}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def ids(self, split: str) -> np.ndarray:
        """The split's store symbols (read-only memory map): (N,) of the store's dtype."""
        return self._maps[f"{split}.ids"]

    def offsets(self, split: str) -> np.ndarray:
        """Records corpora: the positions of each record's leading <eos> and of the final <eos> (R + 1,)."""
        return self._maps[f"{split}.offsets"]

    def vocab(self) -> Vocab:
        """The model's vocabulary: <eos>, <unk>, then the training split's characters."""
        return Vocab((EOS, UNK, *sorted(c for c, n in self.counts["train"].items() if n)))

    def lut(self, vocab: Vocab) -> np.ndarray:
        """Store symbol -> `vocab` id (int64), a character `vocab` lacks -> <unk>."""
        stoi = {c: i for i, c in enumerate(vocab.itos)}
        return np.array([EOS_ID] + [stoi.get(c, UNK_ID) for c in self.symbols[1:]], dtype=np.int64)

    def text(self, split: str) -> str:
        """The split's text, exactly (a records split as its records, each followed by a newline)."""
        return "".join(self.pieces(split, 1 if self.records else 0))  # a records split's leading <eos> is not text

    def pieces(self, split: str, start: int = 0) -> Iterator[str]:
        """The split's text from its id `start` on, PIECE_CHARS characters at a time (<eos> as a newline)."""
        ids = self.ids(split)
        table = np.array([10, *map(ord, self.symbols[1:])], dtype=np.uint32)  # code points, <eos> as a newline
        for at in range(start, len(ids), PIECE_CHARS):
            yield table[ids[at:at + PIECE_CHARS]].tobytes().decode("utf-32-le")

    def record_texts(self, split: str) -> list[str]:
        """A records split's records."""
        text = self.text(split)
        return text.split("\n")[:-1] if text else []


# ---- opening ---------------------------------------------------------------------------------------------------------


def store_key(source: Source) -> str:
    settings = {"corpus": source.name, "records": source.is_records, **source.settings,
                "splits": list(source.sizes or source.splits)}
    if source.is_records and source.sizes is None:
        settings["seed"] = source.seed
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def open_store(source: Source, folder: Path, progress: bool = True, say: Callable[[str], None] = print) -> Store:
    """The ready store for `source` under `folder`, prepared first if missing, stale or damaged."""
    key = store_key(source)
    path = folder / f"store-{key}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnlmError(f"cannot write the corpus store in {folder}: {e.strerror or e}; "
                         "point --data-dir (or RNNLM_DATA_DIR) at a writable folder") from None
    try:
        with exclusive(folder / f".store-{key}.lock"):
            problem = _problem(path, source)
            if problem is not None:
                if problem != "missing":
                    say(f"note: the {source.name} store {path.name} {problem}; preparing it again")
                remove_leftovers(folder, key)
                _build(source, path, progress)
                return _load(path)
            return _reused(path)
    except (CannotLock, _CannotWrite) as e:
        if isinstance(e, CannotLock) and _problem(path, source) is None:  # a read-only data root, its store ready
            return _reused(path)
        room = {errno.ENOSPC: "free space, or ", errno.EDQUOT: "free space, or ",
                errno.EFBIG: "raise the file size limit (ulimit -f), or "}.get(e.errno, "")
        raise RnnlmError(f"cannot write the corpus store in {folder}: {e.strerror}; {room}point --data-dir (or "
                         "RNNLM_DATA_DIR) at a writable folder") from None
    finally:
        if source.close is not None:
            source.close()


def left_out(what: str, names: list[str], kept: list[str] | None) -> None:
    """Says which files preparing a store left out (the first three) and keeps the line in `kept` (a Source's
    warnings), for the store to say again whenever it is reused; a line kept already (every pass over the files
    finds them again) is not said twice."""
    message = f"{what}: " + ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    if kept is not None:
        if message in kept:
            return
        kept.append(message)
    log.warning("%s", message)


def _reused(path: Path) -> Store:
    """A store prepared before, which says again what preparing it said (the files it left out)."""
    store = _load(path)
    for message in store.manifest.get("warnings", []):
        log.warning("%s", message)
    return store


class _CannotWrite(Exception):
    """The data root refused a write of the store being built (a full disk, a quota)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror)
        self.strerror, self.errno = error.strerror or str(error), error.errno


def _problem(path: Path, source: Source) -> str | None:
    """Why the store at `path` cannot be used, or None."""
    manifest = _read_json(path / "manifest.json")
    if not isinstance(manifest, dict):
        return "missing" if not path.exists() else "has no readable manifest"
    if manifest.get("format") != FORMAT_VERSION:
        return f"has format {manifest.get('format')}, this rnnlm writes {FORMAT_VERSION}"
    if manifest.get("identity") != _plain(source.identity):
        return "was prepared from files that have changed since"
    try:
        for name, info in manifest["files"].items():
            file = path / name
            if not file.is_file() or file.stat().st_size != info["bytes"]:
                return f"is damaged ({name} is missing or truncated)"
            if _crc(file, info["bytes"]) != info["crc32"]:
                return f"is damaged ({name} does not match its checksum)"
        splits = [manifest["splits"][split] for split in SPLITS]
        if not all(type(info[k]) is int for info in splits for k in ("symbols", "characters")) or not isinstance(
                manifest["corpus"], str) or not isinstance(manifest["records"], bool):
            return "has a damaged manifest"
        if any(info["symbols"] < 0 for info in splits):  # an older rnnlm's rounding overran the text
            return "has a split of negative size"
        np.dtype(manifest["dtype"])  # (symbols.json is among the files checked above)
    except (KeyError, TypeError, AttributeError, ValueError):
        return "has a damaged manifest"
    return None


def _load(path: Path) -> Store:
    manifest = _read_json(path / "manifest.json")
    symbols = _read_json(path / "symbols.json")
    dtypes = {"ids": np.dtype(manifest["dtype"]), "offsets": np.dtype(np.int64)}
    maps = {name: _mapped(path / name, dtypes[name.split(".")[1]])
            for name in manifest["files"] if name.endswith((".ids", ".offsets"))}
    return Store(path, manifest, tuple(symbols["symbols"]), symbols["counts"], maps)


def _mapped(file: Path, dtype: np.dtype) -> np.ndarray:
    """A read-only memory map of `file` (numpy cannot map an empty one)."""
    return np.memmap(file, dtype=dtype, mode="r") if file.stat().st_size else np.zeros(0, dtype=dtype)


def is_store_file(path: Path) -> bool:
    """A file of a prepared store (`store-KEY/`, which its manifest marks)."""
    return path.parent.name.startswith("store-") and (path.parent / "manifest.json").is_file()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def remove_leftovers(folder: Path, key: str) -> None:
    """Temporary folders of builds that were stopped (the caller holds the lock, so no build is running)."""
    for stale in folder.glob(f".store-{key}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _crc(path: Path, size: int) -> int:
    """CRC-32 of a whole file up to FULL_CHECK_BYTES, else of SAMPLES blocks spread evenly over it."""
    crc = 0
    with open(path, "rb") as f:
        if size <= FULL_CHECK_BYTES:
            while block := f.read(CHUNK_BYTES):
                crc = zlib.crc32(block, crc)
            return crc
        for k in range(SAMPLES):
            f.seek((size - SAMPLE_BYTES) * k // (SAMPLES - 1))
            crc = zlib.crc32(f.read(SAMPLE_BYTES), crc)
    return crc


# ---- preparing -------------------------------------------------------------------------------------------------------


def _build(source: Source, path: Path, progress: bool) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        manifest = (_write_records if source.is_records else _write_stream)(source, tmp, progress)
        manifest["warnings"] = source.warnings
        _check_unchanged(source)
        manifest["files"] = {p.name: {"bytes": p.stat().st_size, "crc32": _crc(p, p.stat().st_size)}
                             for p in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if path.exists():  # stale or damaged: out of the way first (a process still reading it keeps its maps)
            old = path.with_name(f".{path.name}.tmp-{os.getpid()}-old")
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM):
            raise _CannotWrite(e) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_unchanged(source: Source) -> None:
    """The files a store was read from must be as they were when it began (`Source.identity`: each file's path,
    size and modification time): the two passes over a file written to meanwhile disagree (new characters read
    as <eos>, counts of symbols the store lacks)."""
    for name, size, mtime in source.identity.get("files", []):
        try:
            st = os.stat(name)
            same = (st.st_size, st.st_mtime_ns) == (size, mtime)
        except OSError:
            same = False
        if not same:
            raise RnnlmError(f"{name} changed while the {source.name} store was prepared from it (a file still being "
                             "written?); run the command again once it is complete")


def _manifest(source: Source, symbols: int, splits: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "corpus": source.name, "records": source.is_records,
            "identity": _plain(source.identity), "settings": _plain(source.settings), "splits_fractions":
            list(source.splits), "dtype": _dtype(symbols).str, "symbols": symbols, "splits": splits}


def _dtype(symbols: int) -> np.dtype:
    """The smallest integer type that holds every symbol."""
    return np.dtype(np.uint8 if symbols <= 256 else np.uint16 if symbols <= 65536 else np.int32)


def _bounds(n: int, source: Source) -> list[int]:
    """[0, a, b, n]: train, val and test as contiguous spans of `n` characters or records: the sizes the corpus
    gives, or its `splits` fractions, each rounded (within `n`: 0.9 and 0.1 of 20015 round up to 18014 and 2002)
    and test taking what is left."""
    if source.sizes is not None:
        return [0, *np.cumsum(source.sizes).tolist()]
    a = round(n * source.splits[0])
    return [0, a, min(n, a + round(n * source.splits[1])), n]


def _write_symbols(tmp: Path, symbols: list[str], counts: dict[str, dict[str, int]]) -> None:
    (tmp / "symbols.json").write_text(json.dumps({"symbols": symbols, "counts": counts}, ensure_ascii=False),
                                      encoding="utf-8")


# -- records: one line each, shuffled into splits --------------------------------------------------------------------


def _write_records(source: Source, tmp: Path, progress: bool) -> dict[str, Any]:
    """Two passes over the records' bytes: one finds the characters (the symbols), one writes each split's records
    in the order the seed shuffled them. Memory: the records' line ends and their order (two int64 a record) and a
    chunk of text, never a Python object per record."""
    records = source.records()  # type: ignore[misc]
    order = _shuffled(len(records), source.seed) if source.sizes is None else np.arange(len(records))
    bounds = _bounds(len(records), source)
    with bars.bar(0, f"reading {source.name}", shown=progress) as bar:
        present = np.zeros(MAX_CODEPOINT, dtype=bool)
        for cp in records.chunks():
            present[_histogram(cp)[0]] = True
            bar.update(len(cp))
    present[10] = False  # the newline each chunk puts after a record
    chars = np.flatnonzero(present)
    symbols = [EOS, *map(chr, chars.tolist())]
    lut = np.zeros(MAX_CODEPOINT, dtype=_dtype(len(symbols)))  # code point -> symbol; a record's newline -> <eos>
    lut[chars] = np.arange(1, len(symbols))
    counts, info = {}, {}
    for k, split in enumerate(SPLITS):
        picked = order[bounds[k]:bounds[k + 1]]
        written, times = _write_split(records.chunks(picked), lut, len(symbols), tmp, split)
        counts[split] = {symbols[p]: int(times[p]) for p in np.flatnonzero(times).tolist()}
        info[split] = {"symbols": written, "characters": written - len(picked) - 1, "records": len(picked)}
    _write_symbols(tmp, symbols, counts)
    return _manifest(source, len(symbols), info)


def _shuffled(n: int, seed: int) -> np.ndarray:
    """0..n-1 in the order random.Random(seed).shuffle puts a list of n records (its swaps depend on the length
    alone), as an int64 array rather than n Python ints: stores made when records were shuffled as strings keep
    their splits."""
    order = array.array("q", range(n))
    random.Random(seed).shuffle(order)  # type: ignore[arg-type]
    return np.frombuffer(order, dtype=np.int64)


def _write_split(chunks: Iterable[np.ndarray], lut: np.ndarray, symbols: int, tmp: Path, split: str) -> tuple[
        int, np.ndarray]:
    """Writes a split's `<eos> r1 <eos> r2 ... <eos>` and the positions of its <eos>s; returns how many symbols it
    wrote and how often each character's symbol occurs."""
    written, times = 1, np.zeros(symbols, np.int64)
    with open(tmp / f"{split}.ids", "wb") as ids_file, open(tmp / f"{split}.offsets", "wb") as offsets_file:
        ids_file.write(np.zeros(1, lut.dtype).data)  # the leading <eos>
        offsets_file.write(np.zeros(1, np.int64).data)
        for cp in chunks:
            ids = lut[cp]
            ids_file.write(ids.data)
            offsets_file.write((written + np.flatnonzero(cp == 10)).data)  # each record's <eos>
            written += len(cp)
            points, count = _histogram(ids)
            times[points] += count
    times[0] = 0
    return written, times


# -- streams: two passes over chunks of text --------------------------------------------------------------------------


def _chunks(source: Source) -> Iterator[np.ndarray]:
    """The text's code points, about CHUNK_BYTES of text at a time: uint8 for a run of ASCII pieces, else uint32.
    Pieces are grouped by whether they are ASCII, so that the few with other characters (a source file with an
    accented name in a comment) do not send the many without them down the slower path."""
    pending: list[bytes] = []
    size, ascii_run = 0, True
    for piece in source.pieces():  # type: ignore[misc]
        is_ascii = piece.isascii()
        if pending and (is_ascii != ascii_run or size >= CHUNK_BYTES):
            yield _codepoints(b"".join(pending), ascii_run)
            pending, size = [], 0
        pending.append(piece)
        size, ascii_run = size + len(piece), is_ascii
    if pending:
        yield _codepoints(b"".join(pending), ascii_run)


def _codepoints(raw: bytes, ascii: bool) -> np.ndarray:
    if ascii:
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(raw.decode("utf-8").encode("utf-32-le"), dtype=np.uint32)


def _write_stream(source: Source, tmp: Path, progress: bool) -> dict[str, Any]:
    """Two passes: the first counts each chunk's characters (their number, and how often each occurs), which
    gives the splits' bounds and the symbols; the second writes each split's ids and counts the characters of the
    chunks that straddle a split's bound (the others' counts come from the first pass)."""
    chunks: list[tuple[int, np.ndarray, np.ndarray]] = []  # per chunk: its length, its code points, their counts
    with bars.bar(0, f"reading {source.name}", shown=progress) as bar:
        for cp in _chunks(source):
            points, times = _histogram(cp)
            chunks.append((len(cp), points, times))
            bar.update(len(cp))
    n = sum(length for length, _, _ in chunks)
    bounds = _bounds(n, source)
    if bounds[-1] != n:
        raise ValueError(f"{source.name}: the given split sizes add up to {bounds[-1]}, the text has {n} characters")
    whole, totals = np.zeros(MAX_CODEPOINT, np.int64), [np.zeros(MAX_CODEPOINT, np.int64) for _ in SPLITS]
    start = 0
    for length, points, times in chunks:
        whole[points] += times
        k = _within(start, start + length, bounds)
        if k is not None:
            totals[k][points] += times
        start += length
    present = np.flatnonzero(whole)
    symbols = [EOS, *map(chr, present.tolist())]
    _encode(source, tmp, progress, n, bounds, totals, present, _dtype(len(symbols)))
    counts = {split: {chr(p): int(totals[k][p]) for p in np.flatnonzero(totals[k]).tolist()}
              for k, split in enumerate(SPLITS)}
    _write_symbols(tmp, symbols, counts)
    info = {split: {"symbols": bounds[k + 1] - bounds[k], "characters": bounds[k + 1] - bounds[k]}
            for k, split in enumerate(SPLITS)}
    return _manifest(source, len(symbols), info)


def _histogram(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The code points a chunk holds and how often each occurs."""
    if cp.dtype == np.uint8:  # bincount widens what it counts to int64: a block at a time, not the whole chunk
        times = sum((np.bincount(cp[k:k + HISTOGRAM_BLOCK], minlength=256)
                     for k in range(0, len(cp), HISTOGRAM_BLOCK)), np.zeros(256, np.int64))
    elif len(cp) * 16 < int(cp.max()):  # a small chunk of a high plane (a short file with one emoji): sorting it
        return np.unique(cp, return_counts=True)  # beats counting into a table of 1.1 M code points
    else:
        times = np.bincount(cp)
    points = np.flatnonzero(times)
    return points, times[points]


def _within(lo: int, hi: int, bounds: list[int]) -> int | None:
    """The split that holds characters lo..hi-1 whole; None when they straddle a split's bound."""
    return next((k for k in range(len(SPLITS)) if bounds[k] <= lo and hi <= bounds[k + 1]), None)


def _encode(source: Source, tmp: Path, progress: bool, n: int, bounds: list[int], totals: list[np.ndarray],
            present: np.ndarray, dtype: np.dtype) -> None:
    """Writes each split's ids (the symbols of `present` numbered from 1), adding to `totals` the characters of the
    chunks that straddle a split's bound."""
    lut = np.zeros(MAX_CODEPOINT, dtype=dtype)  # code point -> symbol, straight into the store's type
    lut[present] = np.arange(1, len(present) + 1)
    # ASCII's symbols are the first ones, so an ASCII chunk's ids fit a byte: bytes.translate maps it in one pass
    ascii_ids = bytes(lut[:128].astype(np.uint8)) + bytes(128)
    files = [open(tmp / f"{split}.ids", "wb") for split in SPLITS]
    try:
        with bars.bar(n, f"writing the {source.name} store", shown=progress) as bar:
            for start, cp in _positioned(_chunks(source)):
                straddles = _within(start, start + len(cp), bounds) is None
                for k, part in _cut(start, cp, bounds):
                    if part.dtype == np.uint8:
                        ids = np.frombuffer(part.tobytes().translate(ascii_ids), np.uint8).astype(dtype, copy=False)
                    else:
                        ids = lut[part]
                    files[k].write(ids.data)
                    if straddles:
                        points, times = _histogram(part)
                        totals[k][points] += times
                bar.update(len(cp))
    finally:
        for f in files:
            f.close()


def _positioned(chunks: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    start = 0
    for cp in chunks:
        yield start, cp
        start += len(cp)


def _cut(start: int, cp: np.ndarray, bounds: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The parts of chunk `cp` (its first character at `start`) that fall in each split: (split index, part)."""
    end = start + len(cp)
    for k in range(len(SPLITS)):
        lo, hi = max(start, bounds[k]), min(end, bounds[k + 1])
        if lo < hi:
            yield k, cp[lo - start:hi - start]
