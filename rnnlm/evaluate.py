"""Scoring text: mean negative log-likelihood per character, bits per character, perplexity.

Three ways to read a text, each exact:

- A stream, with the state carried across the whole text (`score_stream`), which is how an RNN is
  meant to read. A long text is cut into S segments scored as one batch of S rows, so the machine
  works on S characters per step instead of one. Each row needs the state a single left-to-right pass
  would have where its segment begins; it starts from a guess, the state after re-reading the
  `warmup` characters before the segment from zero (an RNN forgets, so this is usually already the
  right state to the last digits). The guess is then checked against the real thing, the state the
  previous row ended in: any row whose starting state differs from it by more than STATE_ATOL +
  STATE_RTOL * |state| is scored again from that state, until every boundary agrees. Row 0 starts
  where the text starts, so after k rounds the first k + 1 rows are exact whatever the model
  remembers: the split result equals one stream up to float rounding (tests hold it to 1e-6 nats/char),
  and costs one batched pass plus the warm-up when the guesses hold, which they almost always do. A model
  that never forgets would need a round per row; after MAX_ROUNDS the rows still wrong are read in order.

                  warm-up (unscored, from zero)    scored segment
        row 0                                     [ 1 ........ s ]            starts at the text's start
        row 1     [ s-w+1 .. s ] ── guess ─────>  [ s+1 ..... 2s ]            checked against row 0's end
        row 2     [ 2s-w+1 . 2s] ── guess ─────>  [ 2s+1 .... 3s ]            checked against row 1's end

- Records (`data.records: pad`) independently (`score_records`), each read from `<eos>` and scored up
  to and including its own `<eos>`, as makemore reports its loss.

- With a fixed context (`context=N`): every character is scored after reading, from the model's start
  state (zero, or for a stream model its warm start, see `inference.start_state`), at most the N ids before
  it (the stream's first id, `<eos>` or a newline, counts as one), as a model with a block size of N would
  see it. A state cannot be shared between two windows, so this costs
  about N times a stream pass: the first N characters of a stream or record are one row read from its
  start; every later character gets its own window of exactly N ids, and the windows run as large
  batches of rows.

`evaluate_sources` is what `rnnlm eval` runs: it scores a split of the run's corpus or files, and can
also report the bits per character that gzip, bz2 and xz reach on the same text.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rnnlm.batching import IGNORE, pad_records
from rnnlm.checkpoint import Checkpoint
from rnnlm.data import DataRoot, load_corpus
from rnnlm.data.text import read_records, read_utf8
from rnnlm.errors import RnnlmError
from rnnlm.inference import eval_mode, load_model, start_ids, start_state
from rnnlm.model import CharRNN
from rnnlm.state import State, expand_rows, map_state, select_rows, tensors
from rnnlm.vocab import EOS_ID, UNK_ID, Vocab

WARMUP = 512
MIN_STREAM = 2048  # characters a stream scores at the least before another stream is worth it
MAX_STREAMS = 128
CHUNK = 256  # time steps per forward call
POSITIONS = 1 << 16  # ids per forward call when scoring context windows
STATE_ATOL = 1e-5
STATE_RTOL = 1e-5
"""How close a row's guessed starting state must be to the previous row's final state to be kept."""
MAX_ROUNDS = 3
"""Batched re-reads of the rows whose starting state was wrong, before the rest are read one row at a time."""


@dataclass
class Score:
    nll: float
    """Mean negative log-likelihood, nats per character."""
    chars: int
    """Characters scored."""
    unk: int
    """Scored characters outside the vocabulary (each scored as <unk>)."""

    @property
    def bpc(self) -> float:
        return self.nll / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll) if self.nll < 700 else math.inf

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "bpc": self.bpc, "perplexity": self.perplexity}


# ---------------------------------------------------------------------------------------------------
# Scoring ids


@torch.no_grad()
def score_stream(model: CharRNN, ids: torch.Tensor, streams: int | None = None, warmup: int = WARMUP,
                 context: int | None = None, start: State | None = None) -> Score:
    """Score ids[1:] given everything before them (with `context`, given at most `context` ids before
    them). ids: (N,) int64. `streams` rows share the work (default: one per MIN_STREAM characters).

    `start` is the one-row state every `context` window is read from (None: zero). A model trained on sequential
    streams met the zero state only at the start of each epoch, and windows read from zero measured that rather
    than the model: a 1x512 LSTM after 78 s scored 1.894 at 64 characters of context from zero and 1.582 with
    the state carried. Give it `inference.start_state(checkpoint)`, as `rnnlm eval` does. The carried-state reading
    starts from zero: it reads the whole text, and its start touches only the first characters."""
    n = len(ids)
    if n < 2:
        return Score(float("nan"), 0, 0)
    ids = ids.to(model.decoder.weight.device)
    if context is not None:
        return _score_context(model, ids, [(0, n)], context, start)
    if streams is None:
        streams = max(1, min(MAX_STREAMS, (n - 1) // MIN_STREAM))
    with eval_mode(model):
        return _score_split(model, ids, streams, warmup)


@torch.no_grad()
def score_records(model: CharRNN, records: list[torch.Tensor], batch_size: int = 256,
                  context: int | None = None) -> Score:
    """Each record from a zero state: read `<eos> r`, score `r <eos>`."""
    if not records:
        return Score(float("nan"), 0, 0)
    if context is not None:
        eos = torch.tensor([EOS_ID])
        ids = torch.cat([t for r in records for t in (eos, r)] + [eos])
        lengths = torch.tensor([len(r) + 1 for r in records])
        ends = lengths.cumsum(0) + 1
        # record k reads ids[start_k : end_k]: its own leading <eos>, its characters, and its final <eos>
        bounds = [(int(e - n - 1), int(e)) for e, n in zip(ends, lengths)]
        return _score_context(model, ids.to(model.decoder.weight.device), bounds, context)
    order = sorted(range(len(records)), key=lambda i: len(records[i]))  # similar lengths pad little
    total = Score(0.0, 0, 0)
    with eval_mode(model):
        for i in range(0, len(order), batch_size):
            inputs, targets = pad_records([records[j] for j in order[i:i + batch_size]])
            nll, _ = _read_rows(model, inputs, targets)
            total = _add(total, _score(nll, targets))
    return total


def _score_split(model: CharRNN, ids: torch.Tensor, streams: int, warmup: int) -> Score:
    """One stream, read as `streams` rows checked against each other (see the module docstring)."""
    n, device = len(ids), ids.device
    seg = math.ceil((n - 1) / streams)
    streams = math.ceil((n - 1) / seg)                                  # no row without a target
    first = torch.arange(streams, device=device) * seg + 1             # first target of each row
    pos = first[:, None] - 1 + torch.arange(seg, device=device)       # (S, seg) input positions
    inputs = ids[pos.clamp(max=n - 1)]
    targets = torch.where(pos + 1 < n, ids[(pos + 1).clamp(max=n - 1)], IGNORE)

    start = model.init_state(streams)
    w = min(warmup, seg)  # row k >= 1 has k * seg >= w characters before it
    if streams > 1 and w > 0:
        _, guess = _read_rows(model, ids[(first[1:, None] - 1 - w) + torch.arange(w, device=device)], None)
        start = _put_rows(start, torch.arange(1, streams, device=device), guess)
    nll, end = _read_rows(model, inputs, targets, start)
    bad = _wrong_starts(start, end)
    for _ in range(MAX_ROUNDS):  # after round k the first k + 1 rows are exact
        if len(bad) == 0:
            return _score(nll, targets)
        start = _put_rows(start, bad, select_rows(end, bad - 1))
        nll[bad], redone = _read_rows(model, inputs[bad], targets[bad], select_rows(start, bad))
        end = _put_rows(end, bad, redone)
        bad = _wrong_starts(start, end)
    # A model that remembers further back than any warm-up (an LSTM counting open braces) would need a round per
    # row, each re-reading every row after the first wrong one. Past MAX_ROUNDS, the rows from the first wrong one on
    # are read in order instead, each from the exact end of the row before it: at most one more pass, one row wide.
    for row in range(int(bad[0]) if len(bad) else streams, streams):
        one = torch.tensor([row], device=device)
        if _close(select_rows(start, one), select_rows(end, one - 1)).all():
            continue
        start = _put_rows(start, one, select_rows(end, one - 1))
        nll[one], redone = _read_rows(model, inputs[one], targets[one], select_rows(start, one))
        end = _put_rows(end, one, redone)
    return _score(nll, targets)


def _wrong_starts(start: State, end: State) -> torch.Tensor:
    """The rows k >= 1 whose starting state is not (to STATE_ATOL, STATE_RTOL) where row k - 1 ended."""
    h = tensors(end)[0]  # (L, S, H)
    prev = torch.arange(h.shape[1] - 1, device=h.device)
    return prev[~_close(select_rows(start, prev + 1), select_rows(end, prev))] + 1


def _score_context(model: CharRNN, ids: torch.Tensor, bounds: list[tuple[int, int]], context: int,
                   start: State | None = None) -> Score:
    """Score ids[f+1:e] of every (f, e) in `bounds`, each id after at most `context` ids of ids[f:], every row
    read from `start` (one row; None: zero)."""
    if context < 1:
        raise RnnlmError(f"--context {context}: give at least 1 character of context")
    device = ids.device
    # the first `context` targets of each span: one row read from the span's start
    heads = [ids[f:min(e, f + context + 1)] for f, e in bounds]
    inputs, targets = _pad([h[:-1] for h in heads], EOS_ID), _pad([h[1:] for h in heads], IGNORE)
    # every later target j: its own row, the `context` ids before it, scored at the last column only
    later = torch.cat([torch.arange(min(f + context + 1, e), e, device=device) for f, e in bounds])
    total = Score(float("nan"), 0, 0)
    rows = max(1, POSITIONS // min(context, CHUNK))
    with eval_mode(model):
        for i in range(0, len(heads), rows):
            batch = inputs[i:i + rows]
            nll, _ = _read_rows(model, batch, targets[i:i + rows], expand_rows(start, len(batch)))
            total = _add(total, _score(nll, targets[i:i + rows]))
        window = torch.arange(-context, 0, device=device)
        for i in range(0, len(later), rows):
            j = later[i:i + rows]
            window_targets = torch.full((len(j), context), IGNORE, dtype=torch.long, device=device)
            window_targets[:, -1] = ids[j]
            nll, _ = _read_rows(model, ids[j[:, None] + window], window_targets, expand_rows(start, len(j)))
            total = _add(total, _score(nll, window_targets))
    return total


def _read_rows(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor | None,
               state: State | None = None) -> tuple[torch.Tensor, State]:
    """Rows (R, T) read left to right from `state` (zero if None), CHUNK steps per call. Returns each
    row's summed NLL over its scored targets (R,) float64 (zeros without targets) and the final state."""
    device = model.decoder.weight.device
    inputs = inputs.to(device)
    nll = torch.zeros(len(inputs), dtype=torch.float64, device=device)
    for t in range(0, inputs.shape[1], CHUNK):
        logits, state = model(inputs[:, t:t + CHUNK], state)  # (R, C, V)
        if targets is not None:
            chunk = targets[:, t:t + CHUNK].to(device)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk.reshape(-1),
                                   ignore_index=IGNORE, reduction="none")
            nll += loss.view(chunk.shape).double().sum(1)
    return nll, state


def _score(nll: torch.Tensor, targets: torch.Tensor) -> Score:
    count = int((targets != IGNORE).sum())
    unk = int((targets == UNK_ID).sum())
    return Score(float(nll.sum()) / count if count else float("nan"), count, unk)


def _add(a: Score, b: Score) -> Score:
    chars = a.chars + b.chars
    if not chars:
        return Score(float("nan"), 0, 0)
    return Score(((a.nll * a.chars if a.chars else 0.0) + (b.nll * b.chars if b.chars else 0.0)) / chars, chars,
                 a.unk + b.unk)


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value)


def _put_rows(state: State, index: torch.Tensor, value: State) -> State:
    """A copy of `state` with rows `index` replaced by `value`."""
    def put(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = s.clone()
        s[:, index] = v
        return s
    return map_state(put, state, value)


def _close(a: State, b: State) -> torch.Tensor:
    """Per row (B,): every number of state `a` within STATE_ATOL + STATE_RTOL * |b| of state `b`."""
    per_tensor = map_state(lambda x, y: ((x - y).abs() <= STATE_ATOL + STATE_RTOL * y.abs()).all(-1).all(0), a, b)
    return torch.stack(tensors(per_tensor)).all(0)  # (L, B, H) -> (B,)


# ---------------------------------------------------------------------------------------------------
# `rnnlm eval`: what to score, and the report


@dataclass
class Source:
    name: str
    ids: torch.Tensor | list[torch.Tensor]
    """A stream, scored from its second id on, or records (`data.records: pad`), each scored whole."""
    text: str
    """The characters the model scores, as the compressors see them (a record's <eos> is a newline)."""
    unknown: list[str]
    """Distinct characters the vocabulary lacks, in order of appearance."""


def encode_source(name: str, texts: list[str], vocab: Vocab, records: bool, records_mode: str,
                  from_start: bool) -> Source:
    """Texts of a stream corpus (concatenated) or records, encoded the way the model was trained to
    read them. `from_start` puts the start id (as in sampling: a newline, else <eos>) before a stream,
    so that its first character is scored too; a split of the corpus leaves it out, as training's
    validation does, so `rnnlm eval --split val` reproduces the logged val_loss."""
    ids = vocab.encode_split(texts, records, records_mode)
    if records:
        text = "".join(r + "\n" for r in texts)
    else:
        text = "".join(texts)
        if from_start:
            ids = torch.cat([start_ids(vocab, "", records=False), ids])
        else:
            text = text[1:]
    return Source(name, ids, text, vocab.unknown("".join(texts)))


def file_source(path: Path, point: Checkpoint) -> Source:
    """A UTF-8 file: one record per line for a records model, else one stream read from its start."""
    texts = read_records(path) if point.records else [read_utf8(path)]
    if not "".join(texts):
        raise RnnlmError(f"{path}: no characters to score (the file is empty)")
    return encode_source(str(path), texts, point.vocab, point.records, point.config.data.records, from_start=True)


def split_source(point: Checkpoint, split: str, root: DataRoot | None = None) -> Source:
    """A split of the run's corpus (train, val or test), read through the run's config as training read it."""
    if split not in ("train", "val", "test"):
        raise RnnlmError(f"--split {split!r}: choose train, val or test")
    corpus = load_corpus(point.config.data, point.config.train.seed, root)
    texts = corpus.split(split)  # type: ignore[arg-type]
    if (not texts) if corpus.records else len("".join(texts)) < 2:  # a stream's first character is context only
        raise RnnlmError(f"the {split} split of {corpus.name} is empty; score a file with --file, "
                         f"or train with a larger data.splits share for {split}")
    return encode_source(f"{corpus.name} {split} split", texts, point.vocab, corpus.records,
                         point.config.data.records, from_start=False)


def compressor_bpc(text: str) -> dict[str, float]:
    """Bits per character that gzip -9, bz2 -9 and xz -9e reach on the UTF-8 bytes of `text`, headers included."""
    data = text.encode("utf-8")
    sizes = {"gzip": len(gzip.compress(data, compresslevel=9, mtime=0)), "bz2": len(bz2.compress(data, 9)),
             "xz": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    return {name: 8 * size / len(text) for name, size in sizes.items()}


@dataclass
class Part:
    name: str
    score: Score
    unknown: list[str]
    compressors: dict[str, float] | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.name, **self.score.as_dict(), "unknown_chars": self.unknown}
        return out | ({"compressors": self.compressors} if self.compressors is not None else {})


@dataclass
class Evaluation:
    parts: list[Part]
    total: Score
    context: int | None

    def as_dict(self) -> dict[str, Any]:
        """The total at the top level (nll, bpc, perplexity, chars, unk, ...), each source under `parts`."""
        whole = Part(", ".join(p.name for p in self.parts), self.total,
                     list(dict.fromkeys(c for p in self.parts for c in p.unknown)), _combined(self.parts))
        return {**whole.as_dict(), "context": self.context, "parts": [p.as_dict() for p in self.parts]}

    def lines(self, perplexity_first: bool = False) -> list[str]:
        """The report: each source's characters, then its nll, bpc and perplexity (perplexity first if asked)."""
        how = f"at most {self.context} characters of context" if self.context else "state carried over the whole text"
        named = self.parts + ([Part("total", self.total, [], _combined(self.parts))] if len(self.parts) > 1 else [])
        out: list[str] = []
        for p in named:
            s = p.score
            out.append(f"{p.name}: {s.chars:,} characters ({s.unk:,} unknown)" + (f", {how}" if p is named[-1] else ""))
            measures = [f"nll {s.nll:.4f} nats/char", f"bpc {s.bpc:.4f}", f"perplexity {s.perplexity:.3f}"]
            out.append("  " + "   ".join(measures[-1:] + measures[:-1] if perplexity_first else measures))
            if p.compressors is not None:
                out.append("  " + "   ".join(f"{k} {v:.4f} bpc" for k, v in p.compressors.items()))
        return out

    def warnings(self) -> list[str]:
        return [f"{p.name}: {p.score.unk:,} character(s) the model never saw, each scored as <unk>: "
                + ", ".join(map(repr, p.unknown[:20])) + (", ..." if len(p.unknown) > 20 else "")
                for p in self.parts if p.unknown]


def _combined(parts: list[Part]) -> dict[str, float] | None:
    """Compressed bits summed over the parts, per character of all of them."""
    if any(p.compressors is None for p in parts):
        return None
    chars = sum(p.score.chars for p in parts)
    return {k: sum(p.compressors[k] * p.score.chars for p in parts) / chars  # type: ignore[index]
            for k in parts[0].compressors}  # type: ignore[union-attr]


def evaluate_sources(point: Checkpoint, sources: list[Source], context: int | None = None, compressors: bool = False,
                     device: torch.device | str = "cpu", streams: int | None = None) -> Evaluation:
    """Score each source with the checkpoint's model; the total weighs each by its characters."""
    model = load_model(point, device)
    parts: list[Part] = []
    for source in sources:
        if isinstance(source.ids, list):
            score = score_records(model, source.ids, context=context)
        else:
            score = score_stream(model, source.ids, streams=streams, context=context,
                                 start=start_state(point, device) if context is not None else None)
        parts.append(Part(source.name, score, source.unknown, compressor_bpc(source.text) if compressors else None))
    total = Score(float("nan"), 0, 0)
    for p in parts:
        total = _add(total, p.score)
    return Evaluation(parts, total, context)

