"""`text`: any UTF-8 text a user brings, as one stream split into contiguous spans."""

from __future__ import annotations

from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import Corpus, DataRoot, register, split_stream
from rnnlm.errors import RnnlmError


def read_utf8(path: Path, max_bytes: int | None = None) -> str:
    """A file's text; a file that is not UTF-8 is an error naming the file and the first bad byte."""
    try:
        raw = path.read_bytes() if max_bytes is None else path.open("rb").read(max_bytes)
    except FileNotFoundError:
        raise RnnlmError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RnnlmError(f"{path}: is a directory, expected a text file") from None
    except PermissionError:
        raise RnnlmError(f"{path}: permission denied") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if max_bytes is not None and e.start >= len(raw) - 3 and e.reason == "unexpected end of data":
            return raw[: e.start].decode("utf-8")  # the byte limit cut a character in half
        raise RnnlmError(f"{path}: not UTF-8 text (byte offset {e.start}: {raw[e.start:e.start + 1]!r}); "
                         "convert it, e.g. with iconv -t UTF-8") from None


@register("text")
def text(cfg: DataConfig, seed: int, root: DataRoot) -> Corpus:
    if not cfg.path:
        raise RnnlmError("data.dataset=text needs data.path: add data.path=FILE to the command line or the config")
    content = read_utf8(Path(cfg.path).expanduser(), cfg.max_bytes)
    if not content:
        raise RnnlmError(f"{cfg.path}: the file is empty; give data.path a file with some text")
    return split_stream("text", content, cfg.splits)
