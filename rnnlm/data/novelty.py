"""Whether a record is one of a records split's, the question `rnnlm sample --novel` asks of every record it draws.

The split is read once from the store into one 64-bit hash per record (a polynomial over its symbols, the `<eos>`
before it included, modulo 2^64), sorted with the records' numbers; a record drawn is hashed alike, looked up, and a
match is confirmed against the record in the store, so the answer is exact even where the hash collides (as it does
for some very regular records: a Thue-Morse string and its complement). Memory is 20 bytes a record (hash, number,
offset) and time a few passes over the store's ids in numpy, where a Python set of the records took a string each (a
few GB for a word list of a few hundred MB).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

import numpy as np

from rnnlm.data.store import Store

BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, with its bits spread: the polynomial's base, modulo 2^64
CHUNK = 1 << 22
"""Symbols hashed at a time (a few int64 and uint64 each)."""


class SplitRecords:
    """`record in SplitRecords(store, "train")`: whether a string is one of the split's records."""

    def __init__(self, store: Store, split: str) -> None:
        ids, offsets = store.ids(split), store.offsets(split)  # record k: offsets[k] (its <eos>) .. offsets[k + 1]
        self.symbols = {c: k for k, c in enumerate(store.symbols) if k}  # a character -> its store symbol
        longest = int(np.diff(offsets).max(initial=1))
        with np.errstate(over="ignore"):  # the powers wrap modulo 2^64, as the hashes do
            self.powers = np.cumprod(np.concatenate([np.ones(1, np.uint64), np.full(longest - 1, BASE, np.uint64)]))
        hashes = np.empty(len(offsets) - 1, dtype=np.uint64)
        first = 0
        while first < len(hashes):
            last = max(first + 1, int(np.searchsorted(offsets, offsets[first] + CHUNK, side="right")) - 1)
            last = min(last, len(hashes))
            hashes[first:last] = self._hash(np.asarray(ids[offsets[first]:offsets[last]]), offsets[first:last + 1])
            first = last
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.order = hashes[order], order.astype(np.uint32 if len(order) < 1 << 32 else np.int64)
        self.ids, self.offsets = ids, offsets

    def _hash(self, symbols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Each record's hash: records one after another in `symbols`, starting at `offsets` (the last: their end)."""
        starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
        position = np.arange(len(symbols)) - np.repeat(starts, lengths)  # within its record
        with np.errstate(over="ignore"):
            terms = (symbols.astype(np.uint64) + np.uint64(1)) * self.powers[position]
        return np.add.reduceat(terms, starts)

    def __contains__(self, record: object) -> bool:
        if not isinstance(record, str) or len(record) + 1 > len(self.powers):  # longer than every record
            return False
        symbols = [0] + [self.symbols.get(c, -1) for c in record]
        if -1 in symbols:  # a character the split's store does not hold
            return False
        wanted = np.array(symbols, dtype=np.int64)
        h = self._hash(wanted, np.array([0, len(symbols)]))[0]
        lo, hi = np.searchsorted(self.hashes, h, side="left"), np.searchsorted(self.hashes, h, side="right")
        for k in self.order[lo:hi].tolist():  # the records with this hash: almost always one, the record itself
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            if b - a == len(wanted) and np.array_equal(np.asarray(self.ids[a:b]), wanted):
                return True
        return False


@dataclass
class Known:
    """A records corpus's records as `rnnlm sample` asks of them: `in` the training split (a record that is not is
    novel), and where a novel one is a record of the validation or test split (a real name the model never trained
    on, which makemore counts apart from the new ones)."""

    train: Container[str]
    held_out: list[Container[str]] = field(default_factory=list)

    def __contains__(self, record: object) -> bool:
        return record in self.train

    def held_out_holds(self, record: str) -> bool:
        return any(record in split for split in self.held_out)
