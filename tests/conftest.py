"""Fixtures every test gets; the helpers tests import are in helpers.py."""

from __future__ import annotations

import os

import pytest

from rnnlm import runtime


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # Two cores: many tiny ops run faster on one thread, and tests stay independent of the machine.
    runtime.use_threads(1)  # and no sharing left over from a command run in-process


@pytest.fixture(autouse=True, scope="session")
def _data_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Corpora the tests prepare without a --data-dir of their own go to the session's folder, not the checkout's
    data/, which filled up with the stores of test files long gone (in processes the tests start too)."""
    os.environ["RNNLM_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
