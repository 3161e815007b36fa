"""Process-wide settings a command makes once, where the process is set up: how many threads (and sharing the
cores with other processes), how freed memory is kept, and how SIGINT and SIGTERM stop a training run.

These change the whole process, so the library never makes them on its own: the commands do, and a library user
opts in by calling them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


CHECK_EVERY = 2.0  # seconds between two looks at what the other processes use: a process that arrives or leaves
# is seen within this, and a look (reading /proc/stat) costs tens of microseconds. A burst of a second counts as a
# core taken until the next look: one thread too few costs at most half the speed that long, while a thread on a
# taken core can cost most of it (every step waits at a barrier for that thread)
FIRST_LOOK = 0.5  # seconds after sharing starts that the first look comes: a run starts with the right count
TAKEN = 0.4  # of a core used by other processes: it counts as taken
SAME_SIGNAL = 0.5  # seconds: a launcher's copy of a signal comes within milliseconds; a second Ctrl-C meant as one
# comes after the person has seen the run not stop


def use_threads(threads: int | None) -> None:
    """Run torch's CPU work, and rnnlm's C loops (which share torch's OpenMP pool), on `threads` threads. None shares
    the cores: as many threads as cores other processes leave free, never more than torch's default, re-checked
    every CHECK_EVERY seconds at `poll()`; OMP_NUM_THREADS, when set, fixes the count instead.

    Why: each step of a recurrence ends at a barrier where every thread waits for the slowest, so a thread whose core
    another process also wants holds all of them back; with one of two cores taken, two threads keep a fraction of
    what one thread on the free core does (README, "Sharing the machine"). Results do not depend on the count."""
    import torch  # here, not above: the CLI's data commands use this module's signal helpers without torch

    global _share
    _share = None
    if threads is not None:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > 1:
        _share = CoreShare(torch.get_num_threads())


def poll() -> None:
    """Called between units of work (a training step, an evaluation chunk, a sampling step): when it is time, sets
    the thread count to the cores other processes leave free. Costs a clock read otherwise."""
    if _share is not None and time.monotonic() >= _share.due:
        if _share.startup():
            return
        import torch  # imported already by whoever set _share

        torch.set_num_threads(_share.free())


class CoreShare:
    """How many of the cores this process may run on other processes leave free, from the kernel's per-core busy
    time (/proc/stat) less this process's own CPU time, between one look and the next."""

    def __init__(self, most: int, stat: Path = Path("/proc/stat")) -> None:
        self.most, self.stat = most, stat
        self.cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._look()
        self.due = time.monotonic() + FIRST_LOOK
        self.first_window_done = False  # ended by `startup` or by a look: the window restarts once, before any look

    def startup(self) -> bool:
        """Whether the first look's window held more than the work's start (loading, a compile, whose compiler
        processes count as other processes): then, once, the window starts again from now."""
        if self.first_window_done or self.last is None or time.monotonic() - self.last[0] <= 2 * FIRST_LOOK:
            return False
        self.last, self.due, self.first_window_done = self._look(), time.monotonic() + FIRST_LOOK, True
        return True

    def _look(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy seconds of our cores, this process's CPU seconds), or None where /proc/stat cannot
        be read as Linux writes it."""
        wanted, busy = {f"cpu{c}" for c in self.cores}, 0
        try:
            for fields in map(str.split, self.stat.read_text().splitlines()):
                if fields and fields[0] in wanted:  # cpuN user nice system idle iowait irq softirq steal ...
                    ticks = [int(f) for f in fields[1:9]]
                    busy += sum(ticks) - ticks[3] - ticks[4]
        except (OSError, ValueError, IndexError):
            return None
        return time.monotonic(), busy / self.tick, time.process_time()

    def others(self) -> float | None:
        """Cores' worth of CPU time other processes used since the last look; None if unknown."""
        now, last = self._look(), self.last
        self.last, self.due, self.first_window_done = now, time.monotonic() + CHECK_EVERY, True
        if now is None or last is None or now[0] <= last[0]:
            return None
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])

    def free(self) -> int:
        """Threads to use now: one per core the others leave free (at least one, at most `most`)."""
        others = self.others()
        if others is None or not self.cores:
            return self.most
        taken = int(others + (1 - TAKEN))
        return max(1, min(self.most, len(self.cores) - taken))


_share: CoreShare | None = None


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


@contextlib.contextmanager
def termination_handled(handler: Any) -> Iterator[None]:
    """SIGTERM and SIGHUP (`TERMINATION`) handled by `handler` (a function, or signal.SIG_IGN) inside the block, as
    before it after. One the process was started ignoring stays ignored (SIGHUP under nohup); outside the main thread
    signals are left alone."""
    old = _install(handler, TERMINATION)
    try:
        yield
    finally:
        _restore(old)


def _install(handler: Any, signals: Iterable[int]) -> dict[int, Any]:
    """`handler` for each of `signals` the process was not started ignoring; returns the handlers it replaced (none
    outside the main thread, where signals are left alone)."""
    old: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for sig in signals:
            if signal.getsignal(sig) != signal.SIG_IGN:
                old[sig] = signal.signal(sig, handler)
    return old


def _restore(old: dict[int, Any]) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


TERMINATION = (signal.SIGTERM, signal.SIGHUP)
"""What `kill`, systemd and batch schedulers send, and a closed terminal: by default each ends the process where it
stands, without unwinding (SIGINT raises KeyboardInterrupt, which does)."""


class StopSignal:
    """Turns SIGINT/SIGTERM, and SIGHUP (the terminal closed), into a flag the loop checks after each step, so it can
    save and exit; a second signal stops at once. A signal the process was started ignoring stays ignored (SIGHUP
    under nohup, SIGINT in a shell's background job).

    A signal within `same_within` seconds of the first is the same request, not a second one: a launcher (torchrun,
    and many wrappers) passes its SIGINT or SIGTERM on to the processes it started, which Ctrl-C at a terminal has
    already signalled (they are in its process group), so each gets the one Ctrl-C twice, milliseconds apart; taken
    as a second, it would stop one process at once, unsaved, while the others wait for it. The handler stays until
    that window has passed, even when the loop ends sooner."""

    class Cut(Exception):
        """Raised by a stop signal inside `cutting_short`."""

    def __init__(self, same_within: float = SAME_SIGNAL) -> None:
        self.received: int | None = None
        self.same_within = same_within
        self._first = 0.0
        self._old: dict[int, Any] = {}
        self._cut = False

    def __enter__(self) -> "StopSignal":
        self._old = _install(self._handle, (signal.SIGINT, *TERMINATION))
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self._first = signum, now
            if self._cut:
                raise StopSignal.Cut
        elif now - self._first >= self.same_within:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def cutting_short(self) -> Iterator[None]:
        """Within, the first stop signal raises `StopSignal.Cut` at once (one received before raises on entry): for
        long work that is dropped and done again on resume, such as an evaluation, rather than waited for."""
        if self.received is not None:
            raise StopSignal.Cut
        self._cut = True
        try:
            yield
        finally:
            self._cut = False

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.received is not None:  # a launcher's copy may be on its way: let it find this handler
                time.sleep(max(0.0, self._first + self.same_within - time.monotonic()))
        finally:  # a second Ctrl-C during the wait raises here; the old handlers come back all the same
            _restore(self._old)
