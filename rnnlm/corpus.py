"""A corpus ready for a model: its prepared store read through the model's vocabulary, and a split scored the way
the model was trained to read it. Training, fine-tuning and the quality benchmark start here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnlm.batching import Records, Tokens
from rnnlm.config import Config
from rnnlm.data import DataRoot, open_corpus
from rnnlm.errors import RnnlmError
from rnnlm.data.store import Store
from rnnlm.evaluate import Score, score_records, score_stream
from rnnlm.model import CharRNN
from rnnlm.vocab import Vocab


@dataclass
class Prepared:
    """A corpus ready for a model: its store, and the vocabulary the model reads it with (the store's training
    characters, or a checkpoint's)."""

    store: Store
    vocab: Vocab

    @property
    def records(self) -> bool:
        return self.store.records

    def tokens(self, split: str) -> Tokens:
        return Tokens(self.store.ids(split), self.store.lut(self.vocab))

    def offsets(self, split: str) -> np.ndarray | None:
        return self.store.offsets(split) if self.store.records else None

    def unseen(self, split: str) -> tuple[list[str], int]:
        """The characters of `split` the vocabulary lacks (read as <unk>), and how often they occur there."""
        counts = self.vocab.lacking(self.store.counts[split])
        return sorted(counts), sum(counts.values())


def prepare(cfg: Config, root: DataRoot | None = None, vocab: Vocab | None = None, progress: bool = True,
            new_run: bool = True) -> Prepared:
    """The corpus's store (prepared first if needed) and the vocabulary: `vocab`, or the store's."""
    store = open_corpus(cfg.data, cfg.train.seed, root, progress)
    if cfg.data.records == "pad" and not store.records and new_run:  # ignored before; a run trained so resumes
        raise RnnlmError(f"data.records=pad batches whole records, but the {store.name} corpus is one stream of text; "
                         "give data.records=pack, or read a file of one record per line with data.dataset=names "
                         "data.path=FILE")
    return Prepared(store, vocab or store.vocab())


def evaluate_split(model: CharRNN, cfg: Config, prepared: Prepared, split: str) -> Score:
    """Score a split the way the model was trained to read it: packed records and streams as one stream with the
    state carried, padded records each from a zero state; at most `train.eval_chars` of it, from its start."""
    limit = cfg.train.eval_chars
    tokens = prepared.tokens(split)
    if padded(cfg, prepared):
        records = Records(tokens, prepared.offsets(split))  # type: ignore[arg-type]
        picked, used = [], 0
        for k in range(len(records)):
            if limit is not None and used >= limit:
                break
            picked.append(records[k])
            used += len(picked[-1]) + 1
        return score_records(model, picked)
    if limit is not None and len(tokens) > limit + 1:  # the first is context only: limit + 1 give limit targets
        tokens = Tokens(tokens.symbols[:limit + 1], tokens.lut)
    return score_stream(model, tokens)


def widest_step(cfg: Config, prepared: Prepared) -> int:
    """The most steps a training batch reads: train.seq_len, or with padded records the longest record's and its
    <eos>, as wide as a batch that holds it is."""
    if not padded(cfg, prepared):
        return cfg.train.seq_len
    records = Records(prepared.tokens("train"), prepared.offsets("train"))  # type: ignore[arg-type]
    return int(records.lengths().max()) + 1


def scores_nothing(cfg: Config, prepared: Prepared, split: str) -> bool:
    """Whether `evaluate_split` finds nothing to score in `split`: no record, or a stream of under two symbols."""
    if padded(cfg, prepared):
        return len(Records(prepared.tokens(split), prepared.offsets(split))) == 0  # type: ignore[arg-type]
    return len(prepared.store.ids(split)) < 2


def padded(cfg: Config, prepared: Prepared) -> bool:
    """Whether training reads whole records (`data.records: pad`), a batch as wide as its longest."""
    return prepared.records and cfg.data.records == "pad"
