"""Helpers for the corpus tests: the data mirror beside the repo, and a URL where nothing answers.

Plain functions, called by the tests, rather than fixtures in a conftest.py: tests/conftest.py is
importable as `conftest` by other test modules, and a second conftest module here would shadow it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from helpers import MIRROR

"""The real corpora, read-only, in shared/ beside the repo (CI clones the repo with ../shared beside it)."""


def data_mirror() -> Path:
    """The mirror folder; the calling test is skipped, saying why, when it is not there (and fails in CI, where
    ../shared is always beside the clone)."""
    if not (MIRROR / "shakespeare" / "input.txt").is_file() or not (MIRROR / "names" / "names.txt").is_file():
        why = f"the data mirror {MIRROR.resolve()} (shared/data beside the repo) is missing"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(why)
        pytest.skip(why)
    return MIRROR


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once, as on a machine with no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file"
