"""Sharing the machine: the thread count follows the cores other processes leave free, and never changes results.
Stopping: one Ctrl-C is one request to stop, even when a launcher passes it on a second time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnlm import checkpoint as ckpt
from rnnlm import runtime

from helpers import REPO, cli

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
BUSY = "import os, sys, time\nos.sched_setaffinity(0, {int(sys.argv[1])})\nend = time.monotonic() + 60\n" \
       "while time.monotonic() < end: pass\n"


def settle_and_poll(seconds: float = 1.5) -> int:
    """Let a look's interval pass (this process asleep), then poll as a training step would."""
    time.sleep(seconds)
    runtime.poll()
    return torch.get_num_threads()


@pytest.mark.skipif(len(CORES) < 2 or not os.path.exists("/proc/stat"), reason="needs Linux and two cores")
def test_threads_step_aside_for_a_process_that_arrives_and_come_back_when_it_leaves():
    """Within a few seconds each way (a run looked every 10 s: a process arriving mid-run held it back for up to
    that long, and one leaving left it on one thread as long)."""
    torch.set_num_threads(len(CORES))
    runtime.use_threads(None)
    free = settle_and_poll(0.7)  # the first look: what the rest of the machine leaves us now
    if free < 2:
        pytest.skip("the machine is already busy: no free core to give up")
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(CORES[0])])
    try:
        assert settle_and_poll(2.5) == free - 1
    finally:
        busy.kill()
        busy.wait()
    # back at the next look, or one after it: a host's neighbours (steal time) can take a core for a moment
    assert any(settle_and_poll(2.5) == free for _ in range(3))


def test_a_count_given_or_fixed_by_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.setattr(runtime, "CHECK_EVERY", 0.0)
    monkeypatch.setattr(runtime.CoreShare, "free", lambda self: 1)  # a busy machine: sharing would take one thread
    torch.set_num_threads(2)
    runtime.use_threads(2)
    runtime.poll()
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    runtime.use_threads(None)
    time.sleep(0.2)
    runtime.poll()
    assert torch.get_num_threads() == 2


def test_the_thread_count_does_not_change_a_run(tmp_path):
    """Sharing changes the count during a run, and resuming must stay exact: a model wide enough for the C loops
    and the products to split their work trains to the same weights on one thread and on two."""
    weights = []
    for threads in (1, 2):
        status, _, err = cli("train", REPO / "configs" / "tiny.yaml", f"train.threads={threads}", "model.hidden_size=192",
                             "train.batch_size=32", "train.max_steps=4", "--out", tmp_path, "--name", f"t{threads}",
                             "-q")
        assert status == 0, err
        weights.append(ckpt.load(tmp_path / f"t{threads}" / ckpt.LAST).model)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_ctrl_c_passed_on_by_a_launcher_is_one_ctrl_c_and_a_later_second_stops_at_once(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])
    before = signal.getsignal(signal.SIGINT)
    with runtime.StopSignal() as stop:
        try:
            signal.raise_signal(signal.SIGINT)  # the terminal's Ctrl-C
            clock[0] += 0.01
            signal.raise_signal(signal.SIGINT)  # torchrun's copy of it, to a process that already has it
        except KeyboardInterrupt:
            pytest.fail("the launcher's copy of the Ctrl-C stopped the process at once, unsaved")
        assert stop.received == signal.SIGINT  # the loop will finish its step and save
        clock[0] += runtime.SAME_SIGNAL
        with pytest.raises(KeyboardInterrupt):  # the person pressing again
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_then_a_second_one_later_stops_at_once(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock[0])
    with runtime.StopSignal() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.received == signal.SIGTERM
        clock[0] += 5.0
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)


@pytest.mark.skipif(len(CORES) < 2 or not os.path.exists("/proc/stat"), reason="needs Linux and two cores")
def test_a_run_starts_on_the_cores_a_busy_machine_leaves_free():
    """The first look comes half a second after sharing starts, not CHECK_EVERY (2 s) later: a run started beside
    a busy process spent its first ten seconds at a fraction of its speed, on a thread whose core was taken."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY, str(CORES[0])])
    try:
        time.sleep(0.5)  # spinning
        torch.set_num_threads(len(CORES))
        runtime.use_threads(None)
        assert settle_and_poll(0.7) < len(CORES)  # fewer, whatever else the machine runs
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.skipif(len(CORES) < 2 or not os.path.exists("/proc/stat"), reason="needs Linux and two cores")
def test_the_first_look_leaves_out_the_start_of_the_work():
    """A first run compiles rnnlm's C kernels in a compiler process, which counts as another process: a first look
    over that start saw a core taken and began a quiet machine's run on one thread for ten seconds."""
    torch.set_num_threads(len(CORES))
    runtime.use_threads(None)
    compiler = subprocess.Popen([sys.executable, "-c", BUSY.replace("+ 60", "+ 1.5"), str(CORES[0])])
    compiler.wait()  # the start is over: 1.5 s of another process on a core
    runtime.poll()
    assert torch.get_num_threads() == len(CORES), "the first look counted the start's compiler"


def test_a_closed_terminal_stops_as_sigterm_does_and_a_signal_ignored_from_the_start_stays_ignored():
    """SIGHUP (the terminal closed) killed a run at once, unsaved; under nohup, which ignores it, it must not stop,
    nor SIGTERM when the process was started ignoring it (the handler of a kill while the corpus is prepared came
    first and hid that). In a process of its own: the old default would end this one."""
    script = """if True:
        import signal
        from rnnlm import runtime
        with runtime.StopSignal() as stop:
            signal.raise_signal(signal.SIGHUP)
            print(stop.received == signal.SIGHUP)
        for sig in runtime.TERMINATION:
            signal.signal(sig, signal.SIG_IGN)  # as nohup, or a parent ignoring SIGTERM, starts the process
        with runtime.termination_handled(lambda *_: print("unwound")), runtime.StopSignal() as stop:
            for sig in runtime.TERMINATION:
                signal.raise_signal(sig)
            print(stop.received is None)
    """
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.returncode, done.stdout) == (0, "True\nTrue\n"), done.stderr