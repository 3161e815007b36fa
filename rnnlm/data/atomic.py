"""Writing a file so that readers see the old one or the complete new one, never a half-written one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(target: Path, encoding: str | None = None) -> Iterator[IO[Any]]:
    """A new temporary file beside `target` that replaces it when the block completes, and is removed if it raises.
    Binary, or text in `encoding` when one is given.

    The temporary file sits in the target's folder so the final rename stays on one file system (where
    it is atomic), and its name starts with a dot and ends in `.part` so no corpus reader picks it up.
    It is opened like any new file (not with mkstemp), so it gets the usual permissions.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part"
    try:
        with tmp.open("x" if encoding else "xb", encoding=encoding) as f:
            yield f
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
