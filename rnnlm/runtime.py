"""Process-wide settings a command makes once, where the process is set up: how many threads, how freed memory is
kept, and how SIGINT and SIGTERM stop a training run.

These change the whole process, so the library never makes them on its own: `rnnlm train` does, and a library user
opts in by calling them.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from typing import Any


def use_threads(threads: int | None) -> None:
    """Run torch's CPU work, and rnnlm's C loops (which share torch's OpenMP pool), on `threads` threads; None keeps
    torch's default, one per core."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory torch frees for the next training step, instead of returning it to the OS.

    Every training step allocates the same large buffers (an LSTM layer's gates alone are T*B*4H floats: 52 MB at
    2x512, B=64, T=100) and frees them after the backward pass. By default glibc serves blocks over 128 KB (over
    32 MB, always) with fresh mappings and unmaps them on free, so each step faults its buffers in again page by page,
    zero-filled by the kernel, which slows the C loops markedly (bench/README.md, "Reading it"). Allocating from
    the heap and never trimming it keeps the process at its peak resident size, which a training process reaches on
    its first step anyway. Returns whether the setting took (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can save and exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
