"""The corpora that ship inside the package: two tiny ones that prove a model learns, from the seeds' own examples,
and a real text for the first demo.

- `hello`: the four-letter example h, e, l, o, repeated as a stream. After one step of context every
  next character is determined (the second `l` needs to remember the first), so the loss can reach ~0.
- `anbn`: records a^n b^n, each ending in `<eos>`. Once the first `b` appears, every later `b` and the
  `<eos>` are determined by counting the `a`s: a model that counts predicts them with certainty.

The data is generated, so every split holds the same distribution; val and test are fresh draws.

- `genesis`: the Book of Genesis in the King James Version (1611, public domain), one verse per line as
  `chapter:verse text`, 205,331 characters; taken from Debian's `bible-kjv-text` 4.38 (`bible -f "Genesis
  1:1-50:26"`, the book-name prefix of each line removed). It needs no download, and half a minute of training
  already writes verses that read like it (`configs/demo.yaml`, what `make demo` runs).
"""

from __future__ import annotations

import random

from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, register
from rnnlm.data.store import Records, Source
from rnnlm.data.text import stream_source

GENESIS = Path(__file__).with_name("genesis.txt")

ANBN_MAX_N = 10


@register("hello")
def hello(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    parts = ("hello" * 2000, "hello" * 100, "hello" * 100)  # train, val, test
    return Source("hello", {"version": 1}, {}, cfg.splits, pieces=lambda: [p.encode() for p in parts],
                  sizes=(10000, 500, 500))


def anbn_records(count: int, rng: random.Random, max_n: int = ANBN_MAX_N) -> list[str]:
    return ["a" * n + "b" * n for n in (rng.randint(1, max_n) for _ in range(count))]


@register("anbn")
def anbn(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    def records() -> Records:
        rng = random.Random(seed)
        return Records.of(anbn_records(2000, rng) + anbn_records(200, rng) + anbn_records(200, rng))  # train, val, test

    return Source("anbn", {"version": 1}, {"seed": seed}, cfg.splits, records=records, sizes=(2000, 200, 200))


@register("genesis")
def genesis(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    return stream_source("genesis", str(GENESIS), cfg, [GENESIS])
