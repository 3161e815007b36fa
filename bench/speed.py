"""How fast rnnlm's own cells are against torch.nn's fused kernels, measured side by side in one process.

    python bench/speed.py            # the table: about 15 minutes on 2 quiet cores
    python bench/speed.py --quick    # fewer repetitions, smoke test
    python bench/speed.py --busy     # = --only busy: with one core taken by another process
    python bench/speed.py --grid --cells lstm   # = --only grid: training at every shape of the grid (long)
    python bench/speed.py --only paths          # inference of a few steps: rnnlm's one-step kernel vs its loops
    python bench/speed.py --only arrival        # a process arriving mid-run: how often rnnlm looks at the cores

Both sides get the same model around the cell (an embedding of a 65-character vocabulary, the stack, a linear decoder,
cross-entropy, Adam), the same weights (torch.nn's state dict loaded into ours), the same data and the same shapes.
Repetitions alternate between the sides (and which side goes first) so that drift of a shared machine hits both
alike; each side's figure is the median over its repetitions, and a ratio (rnnlm / torch.nn) is the median of the
ratios of the pairs of repetitions run back to back, with the middle half of them in brackets (the busy rows divide
medians: their quiet and busy halves run apart, unpaired; the paths rows too). The grid prints
its shapes as they are measured, then as README's pivot table.

Both sides run with glibc's malloc told to keep freed memory (`rnnlm.runtime.keep_freed_memory`, as `rnnlm train`
does), so neither pays for faulting in fresh pages each step. --unfused runs rnnlm without its C kernels.

Memory of a training step is what autograd keeps for the backward pass: the bytes of every distinct tensor saved
for backward during one step (counted by torch.autograd.graph.saved_tensors_hooks, which sees the custom Functions'
save_for_backward and torch.nn's fused kernels alike). Unlike the process's resident set, it does not depend on the
allocator's history, so it is the same on every run.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlm import cells, fastpath, fused, runtime
from rnnlm.evaluate import MAX_STREAMS, steps_per_call
from rnnlm.sample import sampling_threads

from machine import machine  # bench/machine.py, beside this script

VOCAB = 65  # tiny-shakespeare's alphabet
EMBED = 64


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    batch: int
    seq: int
    embed: int = EMBED  # the first layer's input width

    def __str__(self) -> str:
        wide = "" if self.embed == EMBED else f", input {self.embed}"
        return f"{self.layers}x{self.hidden}{wide}, B={self.batch}, T={self.seq}"


SMALL = Shape(128, 1, 32, 64)
LARGE = Shape(512, 2, 64, 100)


def eval_shape(kind: str, shape: Shape) -> Shape:
    """The calls rnnlm.evaluate reads a long text in: its most parallel streams, as many steps as it reads a call."""
    return Shape(shape.hidden, shape.layers, MAX_STREAMS, steps_per_call(MAX_STREAMS, kind, shape.hidden, VOCAB),
                 shape.embed)


REFERENCE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OURS = {"rnn": cells.RNN, "lstm": cells.LSTM, "gru": cells.GRU}


class CharModel(nn.Module):
    """embedding -> recurrent stack -> linear decoder; the same wrapper around either side's cell."""

    def __init__(self, stack: nn.Module, hidden: int, embed: int = EMBED) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.stack = stack
        self.decoder = nn.Linear(hidden, VOCAB)

    def forward(self, tokens: Tensor, state=None):  # tokens (T, B) -> logits (T, B, V)
        out, state = self.stack(self.embed(tokens), state)
        return self.decoder(out), state


def model_pair(kind: str, shape: Shape) -> tuple[CharModel, CharModel]:
    """(torch.nn model, rnnlm model) with identical weights."""
    torch.manual_seed(0)
    ref = CharModel(REFERENCE[kind](shape.embed, shape.hidden, shape.layers), shape.hidden, shape.embed)
    ours = CharModel(OURS[kind](shape.embed, shape.hidden, shape.layers), shape.hidden, shape.embed)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def batch(shape: Shape, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(VOCAB, (shape.seq + 1, shape.batch), generator=g)  # (T+1, B)
    return data[:-1], data[1:]


def train_step_fn(model: CharModel, shape: Shape, autocast: bool = False) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batch(shape)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits, _ = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def eval_step_fn(model: CharModel, shape: Shape) -> Callable[[], None]:
    """No-grad forward over consecutive windows of a long text (`shape`: an `eval_shape`), state carried, loss
    summed. `model` is a copy nobody trains: evaluation packs its weights for the C loops once."""
    x, y = batch(shape)
    state = None

    def step() -> None:
        nonlocal state
        with torch.no_grad():
            logits, state = model(x, state)
            F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")

    return step


def sample_fn(model: CharModel, batch_size: int, chars: int) -> Callable[[], None]:
    """Generate `chars` characters one at a time: lookup, one cell step, decoder, softmax, multinomial."""
    g = torch.Generator().manual_seed(0)

    def run() -> None:
        with torch.inference_mode():
            token = torch.zeros(1, batch_size, dtype=torch.long)  # (1, B)
            state = None
            for _ in range(chars):
                logits, state = model(token, state)  # (1, B, V)
                probs = torch.softmax(logits[0], -1)
                token = torch.multinomial(probs, 1, generator=g).t()  # (1, B)

    return run


TABLE_BUDGET = 25.0  # seconds a row of the table measures for (at least 5 pairs, at most 41)


def interleaved(ours: Callable[[], None], ref: Callable[[], None], quick: bool,
                budget: float = TABLE_BUDGET) -> tuple[float, float]:
    """Median seconds per call of each side, alternating sides and which goes first."""
    times = repetitions(ours, ref, quick, budget)
    return statistics.median(times["ours"]), statistics.median(times["ref"])


def repetitions(ours: Callable[[], None], ref: Callable[[], None], quick: bool, budget: float,
                least: int = 5) -> dict[str, list[float]]:
    """Seconds of each call of each side, alternating sides and which goes first.

    The number of repetitions fits the row into `budget` seconds (at least `least`, at most 41; 3 with --quick), so
    a slow or busy machine stretches a row's precision, not the run's length.
    """
    start = time.perf_counter()
    ours()
    ref()  # warm-up: first-call allocations, oneDNN primitive creation, caches
    per_pair = time.perf_counter() - start
    reps = 3 if quick else max(least, min(41, int(budget / per_pair)))
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for rep in range(reps):
        order = [("ours", ours), ("ref", ref)] if rep % 2 == 0 else [("ref", ref), ("ours", ours)]
        for name, fn in order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def row(what: str, times: dict[str, list[float]], chars: tuple[int, int], target: str,
        ref_name: str = "torch.nn") -> str:
    """A table row from `repetitions`' seconds, each side doing chars[side] characters a call: each side's chars/s
    (the median over its calls) and the ratio, the median of the pairs' ratios (each pair ran back to back), with the
    middle half of the pairs' ratios in brackets: how far the machine moved them during the row."""
    ours, ref = ([n / t for t in times[side]] for n, side in zip(chars, ("ours", "ref")))
    ratios = [o / r for o, r in zip(ours, ref)]
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return (f"| {what} | {statistics.median(ours):,.0f} | {statistics.median(ref):,.0f} ({ref_name}) | "
            f"**{statistics.median(ratios):.2f}x** ({low:.2f}-{high:.2f}) | {target} |")


def bench_training(quick: bool) -> list[str]:
    rows = []
    targets = {"rnn": ">= 1.0x", "lstm": ">= 1.0x", "gru": ">= 1.3x"}
    for shape in (SMALL, LARGE):
        for kind in ("rnn", "lstm", "gru"):
            ref, ours = model_pair(kind, shape)
            times = repetitions(train_step_fn(ours, shape), train_step_fn(ref, shape), quick, TABLE_BUDGET)
            chars = shape.batch * shape.seq
            rows.append(row(f"train {kind.upper()} {shape}", times, (chars, chars), targets[kind]))
            print(rows[-1], flush=True)
    return rows


def grid() -> list[Shape]:
    """The shapes users train at: hidden 128-1024, 1 and 2 layers, batch 1, 32 and 64, sequence 64 and 100, the
    input 64 wide (a small embedding) or as wide as the hidden layer (a wide embedding, or a second layer's input)."""
    return [Shape(hidden, layers, batch, seq, embed) for hidden in (128, 256, 512, 1024) for embed in (EMBED, hidden)
            for layers in (1, 2) for batch in (1, 32, 64) for seq in (64, 100)]


def bench_paths(quick: bool) -> None:
    """Inference of a few steps at a small batch (a prime, a short text): rnnlm's one-step kernel per step against
    its whole-sequence loops, both forced, with the same weights; where the first stops winning sets
    fastpath.STEP_MAX_STEPS. Ratios are the one-step path's speed over the loops'."""
    steps = (2, 4, 6, 8, 16, 64)
    print("\n| inference, one-step kernel / sequence loops | " + " | ".join(f"T={t}" for t in steps) + " |")
    print("|---|" + "---:|" * len(steps), flush=True)
    for kind in ("lstm", "gru", "rnn"):
        for hidden in (128, 512):
            stack = OURS[kind](hidden, hidden, 2)
            for rows in (1, fastpath.STEP_MAX_BATCH):
                ratios = []
                for t in steps:
                    x = torch.randn(t, rows, hidden)
                    forced = {p: _forced(stack, x, p) for p in ("step", "c")}
                    one_step, loops = interleaved(forced["step"], forced["c"], quick, budget=2.0)
                    ratios.append(f"{loops / one_step:.2f}x")
                print(f"| {kind.upper()} 2x{hidden}, B={rows} | " + " | ".join(ratios) + " |", flush=True)


def _forced(stack: nn.Module, x: Tensor, path: str) -> Callable[[], None]:
    def run() -> None:
        stack._path = lambda inp: path  # an instance attribute shadows the method
        try:
            with torch.no_grad():
                stack(x)
        finally:
            del stack._path

    return run


def bench_grid(quick: bool, kinds: list[str], hidden: set[int] | None = None,
               batch: set[int] | None = None, pairs: int = 3) -> list[str]:
    """Training at every grid shape (or those of the given hidden sizes and batches): the ratio rnnlm / torch.nn of
    each interleaved pair of steps, its minimum and median over the pairs (at least `pairs` a shape, more where a
    step is quick: the whole grid is long, so a part of it is re-measured with more)."""
    rows, medians = [], {}
    print("\n| cell | shape | min ratio | median ratio | pairs |\n|---|---|---:|---:|---:|", flush=True)
    for kind in kinds:
        for shape in grid():
            if (hidden and shape.hidden not in hidden) or (batch and shape.batch not in batch):
                continue
            ref, ours = model_pair(kind, shape)
            times = repetitions(train_step_fn(ours, shape), train_step_fn(ref, shape), quick, budget=4.0, least=pairs)
            ratios = [r / o for o, r in zip(times["ours"], times["ref"])]
            rows.append(f"| {kind.upper()} | {shape} | {min(ratios):.2f}x | **{statistics.median(ratios):.2f}x** | "
                        f"{len(ratios)} |")
            print(rows[-1], flush=True)
            medians[kind, shape] = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f})"
    print_pivot(medians)
    return rows


def print_pivot(cells: dict[tuple[str, Shape], str]) -> None:
    """The grid as README "The grid" shows it: a row per cell, stack and input width, a column per batch and
    sequence length, each entry "median (smallest pair's ratio)"."""
    columns = sorted({(shape.batch, shape.seq) for _, shape in cells})
    print("\n| cell | layers x hidden | input | " + " | ".join(f"B={b}, T={t}" for b, t in columns) + " |")
    print("|---|---|---|" + "---:|" * len(columns))
    stacks = dict.fromkeys((kind, shape.layers, shape.hidden, shape.embed) for kind, shape in cells)
    for kind, layers, hidden, embed in stacks:
        entries = [cells.get((kind, Shape(hidden, layers, b, t, embed)), "-") for b, t in columns]
        width = "= hidden" if embed == hidden else str(embed)
        print(f"| {kind.upper()} | {layers}x{hidden} | {width} | " + " | ".join(entries) + " |", flush=True)


def bench_bf16(quick: bool) -> list[str]:
    """bf16 autocast training (rnnlm's C loops with bfloat16 products) against torch.nn in fp32. Where the CPU has no
    AVX-512 BF16 the products run in AVX2 and autocast's matrix products are emulated: the rows say so."""
    kernels = fused.kernels(torch.zeros(1))
    how = "vdpbf16ps" if kernels is not None and kernels.native_bf16 else "bf16 emulated on this CPU"
    rows = []
    for shape, kind in ((SMALL, "lstm"), (LARGE, "lstm"), (LARGE, "gru")):
        ref, ours = model_pair(kind, shape)
        times = repetitions(train_step_fn(ours, shape, autocast=True), train_step_fn(ref, shape), quick, TABLE_BUDGET)
        chars = shape.batch * shape.seq
        target = ">= 1.8x with native bf16" if shape == LARGE else ">= 1.5x with native bf16"
        rows.append(row(f"train {kind.upper()} {shape}, rnnlm bf16 autocast ({how})", times, (chars, chars), target,
                        ref_name="torch.nn fp32"))
        print(rows[-1], flush=True)
    return rows


def at_threads(fn: Callable[[], None], threads: int) -> Callable[[], None]:
    """`fn` run with `threads` threads, then torch's default again for the other side."""
    def run() -> None:
        default = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            fn()
        finally:
            torch.set_num_threads(default)

    return run


def bench_sampling(quick: bool) -> list[str]:
    """rnnlm with the threads `rnnlm sample` uses for that many samples on a quiet machine (`sampling_threads`; None
    shares the cores, here all of them), torch.nn's step loop with torch's default, as a user's own loop would run."""
    rows = []
    shape = LARGE
    ref, ours = model_pair("lstm", shape)
    for batch_size, target in ((1, ">= 5x"), (64, ">= 1.0x")):
        chars = 20 if quick else 100
        threads = sampling_threads(batch_size) or torch.get_num_threads()
        times = repetitions(at_threads(sample_fn(ours, batch_size, chars), threads), sample_fn(ref, batch_size, chars),
                            quick, TABLE_BUDGET)
        total = chars * batch_size
        rows.append(row(f"sample LSTM 2x512, B={batch_size}, rnnlm {threads} thread{'s' * (threads > 1)}", times,
                        (total, total), target, ref_name="torch.nn step loop"))
        print(rows[-1], flush=True)
    return rows


def bench_eval(quick: bool) -> list[str]:
    """Evaluation throughput of each rnnlm model against training throughput of the same model (target >= 3x).

    Evaluation reads a long text the way rnnlm.evaluate does (as many parallel streams as it uses, as many steps a
    call as it reads, state carried, no autograd) with a copy of the weights; training is the training step of the
    same model at the training shape."""
    rows = []
    for shape in (SMALL, LARGE):
        for kind in ("rnn", "lstm", "gru"):
            _, ours = model_pair(kind, shape)
            reading = eval_shape(kind, shape)
            times = repetitions(eval_step_fn(copy.deepcopy(ours), reading), train_step_fn(ours, shape), quick, 30.0)
            chars = (reading.batch * reading.seq, shape.batch * shape.seq)
            rows.append(row(f"eval {kind.upper()} {shape.layers}x{shape.hidden} (B={reading.batch}, T={reading.seq}) "
                            f"vs its training at {shape}", times, chars, ">= 3x", ref_name="rnnlm training"))
            print(rows[-1], flush=True)
    return rows


BUSY = "import os, sys, time\nos.sched_setaffinity(0, {int(sys.argv[1])})\nend = time.monotonic() + float(sys.argv[2])\n" \
       "while time.monotonic() < end: pass\n"


class Busy:
    """Another process that keeps one of our cores busy (pinned to it, ending by itself after `seconds`)."""

    def __init__(self, seconds: float) -> None:
        core = max(os.sched_getaffinity(0))
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY, str(core), str(seconds)])

    def __enter__(self) -> "Busy":
        time.sleep(0.5)  # started and spinning
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def as_rnnlm_runs(fn: Callable[[], None], threads: int | None) -> Callable[[], None]:
    """rnnlm's side with the threads its command would use: `threads`, or (None) the cores other processes leave
    free, looked at every runtime.CHECK_EVERY seconds as a training loop does, run until it has looked once (as a
    run that has been going for a while); torch.nn's side keeps torch's default count, as a user's own loop would."""
    default = torch.get_num_threads()
    runtime.use_threads(threads)
    settled = time.monotonic() + runtime.CHECK_EVERY * 1.2
    while time.monotonic() < settled:
        fn()
        runtime.poll()
    current = torch.get_num_threads()

    def run() -> None:
        nonlocal current
        torch.set_num_threads(current)
        fn()
        runtime.poll()
        current = torch.get_num_threads()
        torch.set_num_threads(default)

    torch.set_num_threads(default)
    return run


def bench_busy(quick: bool) -> list[str]:
    """Each row quiet, then with one core kept busy by another process: throughput as a fraction of the quiet
    figure, rnnlm (threads as its commands choose them) and torch.nn (torch's default) side by side."""
    rows: list[str] = []
    _busy_rows(rows, quick, 6.0 if quick else 20.0)  # a row lasts several of rnnlm's looks at the cores
    return rows


def _busy_rows(rows: list[str], quick: bool, budget: float) -> None:
    cases = [(f"train {kind.upper()} {shape}", kind, shape, None) for shape in (SMALL, LARGE)
             for kind in ("rnn", "lstm", "gru")]
    cases += [(f"sample LSTM 2x512, B={b}", "lstm", LARGE, b) for b in (1, 64)]
    print("\n| with one core busy | rnnlm quiet | rnnlm busy | kept | torch.nn quiet | torch.nn busy | kept | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|", flush=True)
    for what, kind, shape, samples in cases:
        ref, ours = model_pair(kind, shape)
        if samples is None:
            sides, chars = (train_step_fn(ours, shape), train_step_fn(ref, shape)), shape.batch * shape.seq
            threads = None
        else:
            n = 20 if quick else 100
            sides, chars = (sample_fn(ours, samples, n), sample_fn(ref, samples, n)), n * samples
            threads = sampling_threads(samples)
        quiet = interleaved(as_rnnlm_runs(sides[0], threads), sides[1], quick, budget)
        with Busy(4 * budget + 60):
            busy = interleaved(as_rnnlm_runs(sides[0], threads), sides[1], quick, budget)
        runtime.use_threads(torch.get_num_threads())  # sharing off between rows
        (q_ours, q_ref), (b_ours, b_ref) = quiet, busy
        rows.append(f"| {what} | {chars / q_ours:,.0f} | {chars / b_ours:,.0f} | **{q_ours / b_ours:.0%}** | "
                    f"{chars / q_ref:,.0f} | {chars / b_ref:,.0f} | {q_ref / b_ref:.0%} | >= 45%, >= torch.nn |")
        print(rows[-1], flush=True)


def bench_arrival(quick: bool) -> list[str]:
    """A process that arrives on one core 2.5-6.5 s into a training run (another moment each run, so that the looks
    fall anywhere in its stay) and leaves 12 s later: rnnlm's training throughput while it is there and in the 8 s
    after it left, with the cores looked at every ARRIVAL_BEFORE seconds (the interval before) and every
    runtime.CHECK_EVERY, in turns; ratio: median of the pairs' (now / before)."""
    rows, check_every = [], runtime.CHECK_EVERY
    print("\n| a process arrives, then leaves | while there: looks every "
          f"{ARRIVAL_BEFORE:g} s | every {check_every:g} s | ratio | after: every {ARRIVAL_BEFORE:g} s | "
          f"every {check_every:g} s | ratio |\n|---|---:|---:|---:|---:|---:|---:|", flush=True)
    try:
        for kind, shape in (("lstm", SMALL), ("gru", SMALL), ("lstm", LARGE)):
            _, ours = model_pair(kind, shape)
            step = train_step_fn(ours, shape)
            step()
            runs: dict[float, list[tuple[float, float]]] = {ARRIVAL_BEFORE: [], check_every: []}
            for arrive in (4.5,) if quick else (2.5, 4.5, 6.5, 3.5, 5.5):
                for every in runs:
                    runtime.CHECK_EVERY = every
                    runs[every].append(_arrival_run(step, shape.batch * shape.seq, arrive))
            before, now = runs.values()
            ratio = [statistics.median(b[i] and n[i] / b[i] for b, n in zip(before, now)) for i in (0, 1)]
            mid = [statistics.median(r[i] for r in side) for side in (before, now) for i in (0, 1)]
            rows.append(f"| train {kind.upper()} {shape} | {mid[0]:,.0f} | {mid[2]:,.0f} | {ratio[0]:.2f}x | "
                        f"{mid[1]:,.0f} | {mid[3]:,.0f} | {ratio[1]:.2f}x |")
            print(rows[-1], flush=True)
    finally:
        runtime.CHECK_EVERY = check_every
        runtime.use_threads(torch.get_num_threads())
    return rows


ARRIVAL_BEFORE = 10.0


def _arrival_run(step: Callable[[], None], chars: int, arrive: float) -> tuple[float, float]:
    """Characters a second trained while the other process was there (from half a second after it arrived) and in
    the 8 s after it left, sharing the cores as `rnnlm train` does from its start; a step across a window's edge
    counts for the part of it inside."""
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    runtime.use_threads(None)
    start, other, steps = time.monotonic(), None, []
    windows = ((arrive + 0.5, arrive + 12), (arrive + 12, arrive + 20))
    try:
        while (began := time.monotonic() - start) < windows[1][1]:
            if other is None and began >= arrive:
                other = Busy(12.0)
            step()
            runtime.poll()
            steps.append((began, time.monotonic() - start))
    finally:
        if other is not None:
            other.__exit__()
    inside = [sum(chars * max(0.0, min(b, hi) - max(a, lo)) / (b - a) for a, b in steps) / (hi - lo)
              for lo, hi in windows]
    return inside[0], inside[1]


def saved_for_backward(kind: str, side: str) -> float:
    """MiB that the tensors autograd saves for the backward pass of one training step (activations and the weights
    the backward reads) keep alive, on the large shape: each distinct storage once, whole (a saved view keeps all of
    its storage, and two views of one storage share it)."""
    torch.manual_seed(0)
    stack = (OURS if side == "ours" else REFERENCE)[kind](EMBED, LARGE.hidden, LARGE.layers)
    step = train_step_fn(CharModel(stack, LARGE.hidden), LARGE)
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


def bench_memory() -> list[str]:
    rows = []
    for kind in ("rnn", "lstm", "gru"):
        ours, ref = saved_for_backward(kind, "ours"), saved_for_backward(kind, "ref")
        rows.append(f"| memory saved for backward by one training step, {kind.upper()} {LARGE} | {ours:.0f} MiB | "
                    f"{ref:.0f} MiB (torch.nn) | {ours / ref:.2f}x | lower is better |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke test, not a measurement")
    parser.add_argument("--only", choices=["train", "bf16", "sample", "eval", "memory", "busy", "grid", "paths",
                                           "arrival"],
                        action="append", help="run only these sections (repeatable); grid, paths and arrival run only "
                        "when named")
    parser.add_argument("--busy", action="append_const", const="busy", dest="only", help="= --only busy")
    parser.add_argument("--grid", action="append_const", const="grid", dest="only", help="= --only grid")
    parser.add_argument("--cells", default="lstm,gru,rnn", help="the grid's cells, comma-separated")
    parser.add_argument("--hidden", help="the grid's hidden sizes to run, comma-separated (default: all)")
    parser.add_argument("--batch", help="the grid's batch sizes to run, comma-separated (default: all)")
    parser.add_argument("--pairs", type=int, default=3, help="the grid's least number of pairs a shape (default 3)")
    parser.add_argument("--unfused", action="store_true",
                        help="run rnnlm's recurrences as PyTorch ops only (RNNLM_FUSED=0), without its C kernels")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1, not {args.pairs}")
    sections = args.only or ["train", "bf16", "sample", "eval", "memory", "busy"]
    if args.unfused:
        os.environ["RNNLM_FUSED"] = "0"
    # As `rnnlm train` does on a CPU; a process-wide setting, so both sides run with it.
    heap = "freed memory kept for reuse" if runtime.keep_freed_memory() else "malloc as configured"
    kernels = "fused C kernels" if fused.kernels(torch.zeros(1)) is not None else "PyTorch ops only (no C kernels)"
    print(f"Machine: {machine()}\nrnnlm: {kernels}; {heap}", flush=True)
    table = [s for s in sections if s in ("train", "bf16", "sample", "eval", "memory")]  # the sections of one table
    if table:
        print("\n| what | rnnlm | baseline | ratio | target |\n|---|---:|---:|---:|---|", flush=True)
    start = time.perf_counter()
    runners = {"train": bench_training, "bf16": bench_bf16, "sample": bench_sampling, "eval": bench_eval,
               "busy": bench_busy, "arrival": bench_arrival}
    for section in table + [s for s in sections if s not in table]:
        if section == "memory":
            bench_memory()
        elif section == "paths":
            bench_paths(args.quick)
        elif section == "grid":
            numbers = [None if v is None else {int(x) for x in v.split(",")} for v in (args.hidden, args.batch)]
            bench_grid(args.quick, args.cells.split(","), *numbers, pairs=args.pairs)
        else:
            runners[section](args.quick)
    what = "chars/s, median over interleaved repetitions; ratio: median of the pairs' (middle half); " if table else ""
    print(f"\n({what}{time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
