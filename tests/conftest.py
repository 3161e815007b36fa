"""Shared test helpers: the data mirror beside the repo, and a small CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    # Two cores: many tiny ops run faster on one thread, and tests stay independent of the machine.
    torch.set_num_threads(1)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m rnnlm ARGS` the way a user would, capturing stdout and stderr."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("RNNLM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "rnnlm", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
