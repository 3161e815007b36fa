"""Fixtures every test gets; the helpers tests import are in helpers.py."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # Two cores: many tiny ops run faster on one thread, and tests stay independent of the machine.
    torch.set_num_threads(1)
