"""The preparation cache: a corpus's prepared text kept beside it, so a slow read happens once.

Reading the Linux corpus out of a 140 MB xz tarball takes seconds to minutes; the text it yields is a
plain UTF-8 file. It is kept as

    <data root>/<corpus>/prepared-<key>.txt     the prepared text
    <data root>/<corpus>/prepared-<key>.json    what it was made from: source, settings, source identity

`key` hashes the source's location and the preparation settings, so each combination of settings has
its own file (switching `data.subdirs` back and forth rebuilds nothing). The source's identity (size
and modification time of a tarball; of every file read from a tree) is checked on each use: when it
changed, the same file is rebuilt in place, so an edited source never leaves stale copies behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnlm.atomic import atomic_file

log = logging.getLogger(__name__)

FORMAT = 1
"""Bump when the way text is prepared changes, so every old cache is rebuilt."""


def cache_paths(folder: Path, source: str, settings: dict[str, Any]) -> tuple[Path, Path]:
    key = hashlib.sha256(json.dumps([FORMAT, source, settings], sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"prepared-{key}.txt", folder / f"prepared-{key}.json"


def cached_text(folder: Path, source: str, identity: str, settings: dict[str, Any], build: Callable[[], str]) -> str:
    """The text `build()` makes from `source` with `settings`, from the cache when `identity` is unchanged."""
    text_path, meta_path = cache_paths(folder, source, settings)
    meta = {"format": FORMAT, "source": source, "settings": settings, "identity": identity}
    if _read_meta(meta_path) == meta and text_path.is_file():
        with text_path.open(encoding="utf-8", newline="") as f:  # newline="": keep \r as it was
            return f.read()
    text = build()
    try:
        # Text first, metadata last: a crash in between leaves metadata that no longer matches, so the
        # next run rebuilds instead of trusting a half-written text.
        meta_path.unlink(missing_ok=True)
        _write_atomic(text_path, text)
        _write_atomic(meta_path, json.dumps(meta, indent=1, sort_keys=True))
    except OSError as e:
        # A read-only data root costs speed, not correctness.
        log.warning("could not cache the prepared text in %s (%s); it will be prepared again next time", folder, e)
    return text


def _read_meta(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
