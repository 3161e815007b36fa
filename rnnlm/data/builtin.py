"""Two tiny built-in corpora that prove a model learns, from the seeds' own examples.

- `hello`: the four-letter example h, e, l, o, repeated as a stream. After one step of context every
  next character is determined (the second `l` needs to remember the first), so the loss can reach ~0.
- `anbn`: records a^n b^n, each ending in `<eos>`. Once the first `b` appears, every later `b` and the
  `<eos>` are determined by counting the `a`s: a model that counts predicts them with certainty.

The data is generated, so every split holds the same distribution; val and test are fresh draws.
"""

from __future__ import annotations

import random

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, register
from rnnlm.data.store import Source

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
    def records() -> list[str]:
        rng = random.Random(seed)
        return anbn_records(2000, rng) + anbn_records(200, rng) + anbn_records(200, rng)  # train, val, test

    return Source("anbn", {"version": 1}, {"seed": seed}, cfg.splits, records=records, sizes=(2000, 200, 200))
