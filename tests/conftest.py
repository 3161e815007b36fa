"""Fixtures every test gets; the helpers tests import are in helpers.py."""

from __future__ import annotations

import pytest

from rnnlm import runtime


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # Two cores: many tiny ops run faster on one thread, and tests stay independent of the machine.
    runtime.use_threads(1)  # and no sharing left over from a command run in-process
