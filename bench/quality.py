"""The quality benchmark: what the shipped configs reach in a wall-clock budget, against known results.

    python bench/quality.py                      # every entry, full budgets (about 35 minutes)
    python bench/quality.py --only names_gru     # one entry
    python bench/quality.py --scale 0.1          # a quick smoke run at a tenth of each budget

Each entry trains a shipped config with `train.max_time` (seconds of training; the run evaluates only
once, after the budget, so evaluation is not counted) and reports validation (and test) loss in nats and bits per character, the wall time, the
characters seen, and the machine. Splits follow the anchor each entry is compared with:

- tiny Shakespeare: the first 90% trains and the last 10% validates, as nanoGPT's `prepare.py` splits
  it; validation loss is reported with the state carried over the whole split and with 64 characters of
  context (nanoGPT's block size in its CPU recipe; nanoGPT's loss averages over every position of a block, so its
  context runs from 1 to 64 characters, and this column is the kinder to rnnlm).
- names: makemore's loss per character including each name's end, on held-out records
  (the run's test split), plus the share of 1,000 sampled names that are not in the training data.
- linux: a subset of the kernel source; a result and a sample, no anchor.

Corpora come from the data root or RNNLM_DATA_MIRROR (e.g. ../shared/data); the Linux entry needs a
kernel tarball (data.path or Debian's linux-source package) and is skipped with a note otherwise.
Runs go to a temporary folder unless --keep DIR is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rnnlm import checkpoint as ckpt  # noqa: E402
from rnnlm.batching import Records  # noqa: E402
from rnnlm.config import load_config  # noqa: E402
from rnnlm.data import DataRoot  # noqa: E402
from rnnlm.errors import RnnlmError  # noqa: E402
from rnnlm.evaluate import Score, score_records, score_stream  # noqa: E402
from rnnlm.inference import load_model, start_state  # noqa: E402
from rnnlm.runtime import keep_freed_memory, use_threads  # noqa: E402
from rnnlm.sample import SampleOptions, generate  # noqa: E402
from rnnlm.corpus import prepare  # noqa: E402
from rnnlm.train import train  # noqa: E402

from machine import machine  # noqa: E402  (bench/machine.py, beside this script)


@dataclass
class Entry:
    name: str
    config: str
    budget: float
    """Seconds of training (train.max_time)."""
    overrides: list[str] = field(default_factory=list)
    anchor: str = ""
    target: str = ""
    context: int | None = None
    """Also score the validation split with at most this many characters of context (slow: one window per
    character), for entries compared with a model that reads a fixed window."""


NANOGPT = "nanoGPT CPU baby GPT: 1.886 val after 78 s on the AVX-512 machine of README Quality"
MAKEMORE = ("makemore default transformer: 2.01 test after 95 s on the AVX-512 machine of README Quality (1.92 in its "
            "README)")

ENTRIES = [
    Entry("shakespeare_lstm", "configs/shakespeare_lstm.yaml", 78, ["data.splits=[0.9,0.1,0.0]"],
          NANOGPT, "val <= 1.55 carried, <= 1.65 at 64 context", 64),
    Entry("shakespeare_gru", "configs/shakespeare_gru.yaml", 78, ["data.splits=[0.9,0.1,0.0]"],
          NANOGPT, "(the LSTM's targets)", 64),
    Entry("shakespeare_rnn", "configs/shakespeare_rnn.yaml", 78, ["data.splits=[0.9,0.1,0.0]"],
          NANOGPT, "(a baseline for the gated cells)", 64),
    Entry("shakespeare_gru_long", "configs/shakespeare_gru_long.yaml", 600, ["data.splits=[0.9,0.1,0.0]"],
          "char-rnn's 2-3 layer LSTMs, hours on a GPU", "val <= 1.45 carried", 64),
    Entry("names_gru", "configs/names_gru.yaml", 90, [],
          MAKEMORE,
          "test <= 1.95, >= 70% of 1,000 samples novel"),
    Entry("linux_lstm", "configs/linux_lstm.yaml", 120, [], "char-rnn's Linux LSTM (hours on a GPU)", "samples that look like C"),
]


@dataclass
class Result:
    entry: Entry
    steps: int = 0
    chars: int = 0
    wall: float = 0.0
    val: Score | None = None
    val_context: Score | None = None
    test: Score | None = None
    novel: float | None = None
    sample: str = ""
    note: str = ""


def run(entry: Entry, scale: float, runs: Path, root: DataRoot) -> Result:
    budget = entry.budget * scale
    # the budget is time alone, and the cosine schedule decays over it; evaluating and sampling only at the end
    budget_overrides = [f"train.max_time={budget}", "train.max_steps=null", "train.max_epochs=null",
                        f"train.eval_every={10**9}", "train.sample_every=0"]
    cfg = load_config(REPO / entry.config, [*entry.overrides, *budget_overrides])
    result = Result(entry)
    start = time.perf_counter()
    use_threads(cfg.train.threads)  # as `rnnlm train` does: the config's count, or the cores others leave free
    try:
        outcome = train(cfg, runs / entry.name, root=root, progress=sys.stderr.isatty())
    except RnnlmError as e:
        result.note = f"skipped: {e}"
        return result
    result.wall = time.perf_counter() - start
    result.steps = outcome.step
    point = ckpt.load(outcome.run_dir / ckpt.BEST)
    model = load_model(point)
    prepared = prepare(point.config, root, point.vocab, progress=False, new_run=False)
    train_records = prepared.store.record_texts("train") if prepared.records else None
    result.chars = _chars_seen(cfg, outcome.step, train_records)
    if prepared.records:  # records: makemore's per-character loss on held-out names (the whole splits)
        result.val = score_records(model, _records(prepared, "val"))
        result.test = score_records(model, _records(prepared, "test"))
        result.novel, result.sample = _novelty(model, point, train_records)  # type: ignore[arg-type]
    else:
        val = prepared.tokens("val")  # the whole split, exactly (not train.eval_chars of it)
        result.val = score_stream(model, val)
        if entry.context is not None:
            result.val_context = score_stream(model, val, context=entry.context, start=start_state(point))
        opts = SampleOptions(length=300, temperature=0.8, seed=1)
        result.sample = point.vocab.decode(generate(model, point.vocab, point.config.sample.prime, opts,
                                                    start=start_state(point))[0])
        result.sample = point.config.sample.prime + result.sample
    return result


def _records(prepared, split: str) -> list:
    records = Records(prepared.tokens(split), prepared.offsets(split))
    return [records[k] for k in range(len(records))]


def _chars_seen(cfg, steps: int, records: list[str] | None) -> int:
    """Characters trained on: steps x batch x window (seq_len, or the mean record with its <eos>)."""
    window = sum(len(r) + 1 for r in records) / len(records) if records else cfg.train.seq_len
    return round(steps * cfg.train.batch_size * window)


def _novelty(model, point, train_records: list[str]) -> tuple[float, str]:
    known = set(train_records)
    samples = generate(model, point.vocab, "", SampleOptions(length=40, temperature=1.0, num_samples=1000, seed=1),
                       records=True, packed=point.config.data.records == "pack")
    names = [point.vocab.decode(s) for s in samples]
    return sum(n not in known for n in names) / len(names), " ".join(names[:12])


def table(results: list[Result]) -> str:
    def f(score: Score | None) -> str:
        return f"{score.nll:.3f} ({score.bpc:.3f})" if score is not None else "-"

    lines = ["| config | budget | steps | chars seen | val nats (bpc), carried | val, 64 context | test | novel | target |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r.note:
            lines.append(f"| {r.entry.name} | {r.entry.budget:g} s | | | {r.note} | | | | {r.entry.target} |")
            continue
        novel = f"{r.novel:.1%}" if r.novel is not None else "-"
        lines.append(f"| {r.entry.name} | {r.entry.budget:g} s ({r.wall:.0f} s wall) | {r.steps:,} | {r.chars / 1e6:.1f} M | "
                     f"{f(r.val)} | {f(r.val_context)} | {f(r.test)} | {novel} | {r.entry.target} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="entries to run", choices=[e.name for e in ENTRIES])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every budget (0.1 for a smoke run)")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    parser.add_argument("--data-dir", type=Path)
    args = parser.parse_args()
    keep_freed_memory()  # as `rnnlm train` does
    root = DataRoot.resolve(args.data_dir)
    entries = [e for e in ENTRIES if not args.only or e.name in args.only]
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.keep or Path(tmp)
        results = []
        for entry in entries:
            print(f"training {entry.name} for {entry.budget * args.scale:g} s ...", file=sys.stderr, flush=True)
            results.append(run(entry, args.scale, runs, root))
            print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(results))
    for r in results:
        if r.entry.anchor and not r.note:
            print(f"\n{r.entry.name}: compare {r.entry.anchor}\nsample: {r.sample[:300]!r}")


if __name__ == "__main__":
    main()
