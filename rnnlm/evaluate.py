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
  that never forgets would need a round per row; after a round that fixes only one row, or after MAX_ROUNDS,
  the rows still wrong are read in order.

                  warm-up (unscored, from zero)    scored segment
        row 0                                     [ 1 ........ s ]            starts at the text's start
        row 1     [ s-w+1 .. s ] ── guess ─────>  [ s+1 ..... 2s ]            checked against row 0's end
        row 2     [ 2s-w+1 . 2s] ── guess ─────>  [ 2s+1 .... 3s ]            checked against row 1's end

- A text too long for that (over EXACT_MAX characters for `rnnlm eval`, or with `streams` N > 1): as N carried
  streams, the same rows and warm-up guesses, unchecked, in one batched pass, and reported as read that way. For
  a model that forgets within the warm-up this is the exact result; for one that does not, each row's first
  characters are scored from an approximate state. The ids are read CHUNK columns at a time from the split's
  memory map, so a split of any length costs the memory of a short one.

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
import lzma
import math
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnlm import bars
from rnnlm.batching import IGNORE, Records, Tokens, pad_records
from rnnlm.checkpoint import Checkpoint
from rnnlm.errors import RnnlmError
from rnnlm.inference import eval_mode, load_model, start_state
from rnnlm.metrics import finite_or_null
from rnnlm.model import GATES, CharRNN
from rnnlm.runtime import poll
from rnnlm.state import State, expand_rows, map_state, select_rows, tensors
from rnnlm.texts import Text
from rnnlm.vocab import EOS_ID, UNK_ID, listed

WARMUP = 512
MIN_STREAM = 2048  # characters a stream scores at the least before another stream is worth it
MAX_STREAMS = 128
CRAMPED = 64
"""Fewer characters than this before each stream's own (many --streams over a short text): `rnnlm eval` warns."""
EXACT_MAX = 1 << 20
"""`rnnlm eval` reads a text of up to this many characters exactly as one stream, a longer one in MAX_STREAMS
carried streams (unless --streams says otherwise)."""
CHUNK = 256  # time steps per forward call
RECORD_IDS = 1 << 20  # ids of a batch of padded records (8 MB of int64 inputs, as many targets)
CALL_FLOATS = 1 << 24  # at most this many gate and logit floats in one call: a wide model reads fewer steps per call
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
        return math.inf if self.nll >= 700 else math.exp(self.nll)  # a NaN loss stays NaN

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON's values: a NaN or infinite one (a diverged model's) is null, as in metrics.jsonl."""
        return finite_or_null({**asdict(self), "bpc": self.bpc, "perplexity": self.perplexity})


# ---------------------------------------------------------------------------------------------------
# Scoring ids


@torch.no_grad()
def score_stream(model: CharRNN, ids: Tokens | torch.Tensor, streams: int = 1, warmup: int = WARMUP,
                 context: int | None = None, start: State | None = None, progress: bool = False,
                 rows: int | None = None) -> Score:
    """Score ids[1:] given everything before them (with `context`, given at most `context` ids before them).

    `streams` 1 reads the text exactly as one stream would (in parallel rows checked against each other, see the
    module docstring) in `rows` rows (default: one per MIN_STREAM characters, up to MAX_STREAMS); N > 1 reads it as
    N carried streams, each from the state after reading the `warmup` ids before it, unchecked: one batched pass,
    for texts too long to check. ids are read `CHUNK` columns at a time, so a memory-mapped split of any length
    costs no more memory than a short one.

    `start` is the one-row state every `context` window is read from (None: zero). A model trained on sequential
    streams met the zero state only at the start of each epoch, and windows read from zero measure that rather
    than the model (the README's `--context` entry has an example). Give it `inference.start_state(checkpoint)`,
    as `rnnlm eval` does. The carried-state reading starts from zero: it reads the whole text, and its start
    touches only the first characters."""
    tokens = ids if isinstance(ids, Tokens) else Tokens(ids)
    n = len(tokens)
    if n < 2:
        return Score(float("nan"), 0, 0)
    if context is not None:
        return _score_context(model, tokens, np.array([0]), np.array([n]), context, start)
    if streams > 1:
        rows = streams
    elif rows is None:
        rows = max(1, min(MAX_STREAMS, (n - 1) // MIN_STREAM))
    with eval_mode(model), _bar(progress, n - 1) as bar:
        nll = _score_split(model, tokens, rows, warmup, streams == 1, bar)
    return Score(float(nll.sum()) / (n - 1), n - 1, _count_unk(tokens, 1, n))


@torch.no_grad()
def score_records(model: CharRNN, records: Records | list[torch.Tensor], batch_size: int = 256,
                  context: int | None = None, progress: bool = False) -> Score:
    """Each record from a zero state: read `<eos> r`, score `r <eos>`. `Records` are read a batch at a time, and
    what they cost beyond a batch is an array or two of one number a record."""
    if not len(records):
        return Score(float("nan"), 0, 0)
    if not isinstance(records, Records):  # a few records as tensors: laid out as a split of records is
        lengths = np.array([len(r) for r in records])
        eos = torch.tensor([EOS_ID])
        offsets = np.concatenate([[0], np.cumsum(lengths + 1)])
        records = Records(Tokens(torch.cat([t for r in records for t in (eos, r)] + [eos])), offsets)
    if context is not None:
        # record k reads ids[offsets[k] : offsets[k + 1] + 1]: its leading <eos>, its characters, its final <eos>
        return _score_context(model, records.tokens, records.offsets[:-1], records.offsets[1:] + 1, context)
    lengths = records.lengths()
    order = np.argsort(lengths, kind="stable")  # similar lengths pad little
    total = Score(0.0, 0, 0)
    with eval_mode(model), _bar(progress, int(lengths.sum()) + len(lengths)) as bar:
        for i, j in _record_batches(lengths[order], batch_size):
            inputs, targets = pad_records([records[k] for k in order[i:j]])
            nll, _ = _read(model, inputs, targets)
            scored = _score(nll, targets)
            total = _add(total, scored)
            bar.update(scored.chars)
    return total


def _record_batches(lengths: np.ndarray, batch_size: int) -> Iterator[tuple[int, int]]:
    """Batches [i, j) of records sorted by length: at most `batch_size`, and padded to at most RECORD_IDS ids in
    all (a 2-million-character line among names padded 256 rows to its length: 8 GB of ids)."""
    i = 0
    while i < len(lengths):
        j = min(i + batch_size, len(lengths))
        while j - i > 1 and (j - i) * (int(lengths[j - 1]) + 2) > RECORD_IDS:  # padded to its last, with both <eos>
            j = i + max(1, RECORD_IDS // (int(lengths[j - 1]) + 2))
        yield i, j
        i = j


def _layout(n: int, rows: int, warmup: int) -> tuple[int, int, int]:
    """How n >= 2 ids are read as at most `rows` rows: each row's length, the rows (none without a target), and the
    warm-up each row after the first reads first (row k >= 1 has k * length >= warm-up characters before it)."""
    seg = math.ceil((n - 1) / min(rows, n - 1))
    return seg, math.ceil((n - 1) / seg), min(warmup, seg)


def _score_split(model: CharRNN, tokens: Tokens, rows: int, warmup: int, exact: bool, bar: Any) -> torch.Tensor:
    """One stream read as `rows` rows, each row's summed NLL: checked against each other if `exact` (see the module
    docstring), else each from its warm-up guess."""
    n, device = len(tokens), model.decoder.weight.device
    seg, rows, w = _layout(n, rows, warmup)
    starts = np.arange(rows) * seg  # where each row's inputs start; its targets are one to the right
    scored = np.clip(n - 1 - starts, 0, seg)  # each row's targets (the last row's may be fewer): what the bar counts
    start = model.init_state(rows)
    if rows > 1 and w > 0:
        _, guess = _read_rows(model, tokens, starts[1:] - w, w, None, scored=False)
        start = _put_rows(start, torch.arange(1, rows, device=device), guess)
    nll, end = _read_rows(model, tokens, starts, seg, start, bar=bar)
    bad = _wrong_starts(start, end) if exact else torch.zeros(0, dtype=torch.long)
    for _ in range(MAX_ROUNDS):  # after round k the first k + 1 rows are exact
        if len(bad) == 0:
            return nll
        again = bad.cpu().numpy()
        bar.reset(total=int(scored[again].sum()))
        bar.set_description(f"scoring {len(bad)} of {rows} segments again from the state before them")
        start = _put_rows(start, bad, select_rows(end, bad - 1))
        nll[bad], redone = _read_rows(model, tokens, starts[again], seg, select_rows(start, bad), bar=bar)
        end = _put_rows(end, bad, redone)
        fixed, bad = len(bad), _wrong_starts(start, end)
        if len(bad) >= fixed - 1:  # only the row after an exact one came right: the errors outlast a row
            break
    # A model that remembers further back than a row (an LSTM counting characters or open braces) would need a
    # round per row, each re-reading every row after the first wrong one. After a round that fixed only that one,
    # or after MAX_ROUNDS, the rows from the first wrong one on are read in order instead, each from the exact end
    # of the row before it: at most one more pass, one row wide.
    first = int(bad[0]) if len(bad) else rows
    if first < rows:
        bar.reset(total=int(scored[first:].sum()))
        bar.set_description("scoring again in order (the model remembers past the warm-up; --streams N is faster)")
    for row in range(first, rows):
        one = torch.tensor([row], device=device)
        if _close(select_rows(start, one), select_rows(end, one - 1)).all():
            bar.update(int(scored[row]))
            continue
        start = _put_rows(start, one, select_rows(end, one - 1))
        nll[one], redone = _read_rows(model, tokens, starts[row:row + 1], seg, select_rows(start, one), bar=bar)
        end = _put_rows(end, one, redone)
    return nll


def _wrong_starts(start: State, end: State) -> torch.Tensor:
    """The rows k >= 1 whose starting state is not (to STATE_ATOL, STATE_RTOL) where row k - 1 ended."""
    h = tensors(end)[0]  # (L, S, H)
    prev = torch.arange(h.shape[1] - 1, device=h.device)
    return prev[~_close(select_rows(start, prev + 1), select_rows(end, prev))] + 1


def _score_context(model: CharRNN, tokens: Tokens, starts: np.ndarray, ends: np.ndarray, context: int,
                   start: State | None = None) -> Score:
    """Score ids[f+1:e] of every span (f, e) of `starts` and `ends`, each id after at most `context` ids of ids[f:],
    every row read from `start` (one row; None: zero). Spans are taken a batch at a time: millions of records cost
    their bounds, not an object each."""
    if context < 1:
        raise RnnlmError(f"--context {context}: give at least 1 character of context")
    context = min(context, int((ends - starts).max()))  # more than a span holds reads the same, and costs memory
    total = Score(float("nan"), 0, 0)
    # as many windows a call as POSITIONS ids, and fewer when their gates and logits would pass CALL_FLOATS
    width = _step_floats(model.cfg.cell, model.cfg.hidden_size, model.decoder.out_features)
    rows = max(1, min(POSITIONS // min(context, CHUNK), CALL_FLOATS // (min(context, CHUNK) * width)))
    with eval_mode(model):
        for i in range(0, len(starts), rows):  # each span's first `context` targets: one row from its start
            inputs, targets = _heads(tokens, starts[i:i + rows], ends[i:i + rows], context)
            nll, _ = _read(model, inputs, targets, expand_rows(start, len(inputs)))
            total = _add(total, _score(nll, targets))
        # every later target j: its own row, the `context` ids before it, scored at the last column only
        window = np.arange(-context, 0)
        for j in _later_positions(starts, ends, context, rows):
            window_targets = torch.full((len(j), context), IGNORE, dtype=torch.long)
            window_targets[:, -1] = tokens.take(j)
            nll, _ = _read(model, tokens.take(j[:, None] + window), window_targets, expand_rows(start, len(j)))
            total = _add(total, _score(nll, window_targets))
    return total


def _heads(tokens: Tokens, starts: np.ndarray, ends: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each span's first (at most) `context` inputs and their targets as one row, padded with <eos> and IGNORE."""
    width = int(min(context, (ends - starts - 1).max()))
    index = starts[:, None] + np.arange(width + 1)  # (B, width + 1)
    ids = tokens.take(np.minimum(index, (ends - 1)[:, None]))
    scored = torch.from_numpy(index[:, 1:] < ends[:, None])  # column c: input f + c, target f + c + 1
    return ids[:, :-1].masked_fill(~scored, EOS_ID), ids[:, 1:].masked_fill(~scored, IGNORE)


def _later_positions(starts: np.ndarray, ends: np.ndarray, context: int, block: int) -> Iterator[np.ndarray]:
    """The targets of every span past its first `context`, `block` at a time (never all at once)."""
    lo = np.minimum(starts + context + 1, ends)
    kept = ends > lo
    lo, sizes = lo[kept], (ends - lo)[kept]
    before = np.concatenate([[0], np.cumsum(sizes)])  # targets of the spans before span k
    for a in range(0, int(before[-1]), block):
        p = np.arange(a, min(int(before[-1]), a + block))
        k = np.searchsorted(before, p, side="right") - 1
        yield lo[k] + (p - before[k])


def _read_rows(model: CharRNN, tokens: Tokens, starts: np.ndarray, length: int, state: State | None,
               scored: bool = True, bar: Any = None) -> tuple[torch.Tensor, State]:
    """Rows r reading ids[starts[r] : starts[r] + length] (past the end: its last id again, unscored) from `state`,
    CHUNK columns at a time from `tokens`; each row's NLL summed over its targets (the ids one to the right)."""
    n, device = len(tokens), model.decoder.weight.device
    nll = torch.zeros(len(starts), dtype=torch.float64, device=device)
    for t in range(0, length, CHUNK):
        pos = starts[:, None] + np.arange(t, min(t + CHUNK, length))  # (R, C)
        targets = None
        if scored:
            targets = tokens.take(np.minimum(pos + 1, n - 1)).masked_fill_(torch.from_numpy(pos + 1 >= n), IGNORE)
        chunk_nll, state = _read(model, tokens.take(np.minimum(pos, n - 1)), targets, state)
        nll += chunk_nll
        if bar is not None and targets is not None:
            bar.update(int((targets != IGNORE).sum()))
    return nll, state


def read_state(model: CharRNN, inputs: torch.Tensor, state: State | None) -> State:
    """The state after reading rows `inputs` (R, T) from `state`, in calls of bounded size that keep no logits: a
    prime as long as a book costs what a short one does."""
    return _read(model, inputs, None, state)[1]


def steps_per_call(rows: int, cell: str, hidden: int, vocab: int) -> int:
    """Steps one forward call of evaluation reads: CHUNK, fewer for a wide model or a large vocabulary, so that a
    call's gates and logits stay within CALL_FLOATS (one step at the least: 128 rows of 64,000 symbols are 8 M)."""
    return max(1, min(CHUNK, CALL_FLOATS // (rows * _step_floats(cell, hidden, vocab) or 1)))


def _step_floats(cell: str, hidden: int, vocab: int) -> int:
    """Floats of gates and logits one row's step makes: what CALL_FLOATS counts."""
    return GATES[cell] * hidden + vocab


def _read(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor | None,
          state: State | None = None) -> tuple[torch.Tensor, State]:
    """Rows (R, T) read left to right from `state` (zero if None), up to CHUNK steps per call (fewer for a wide
    model, so that a call's gates and logits stay within CALL_FLOATS). Returns each row's summed NLL over its
    scored targets (R,) float64 (zeros without targets) and the final state."""
    device = model.decoder.weight.device
    inputs = inputs.to(device)
    nll = torch.zeros(len(inputs), dtype=torch.float64, device=device)
    steps = steps_per_call(len(inputs), model.cfg.cell, model.cfg.hidden_size, model.decoder.out_features)
    for t in range(0, inputs.shape[1], steps):
        poll()
        logits, state = model(inputs[:, t:t + steps], state)  # (R, C, V)
        if targets is not None:
            chunk = targets[:, t:t + steps].to(device)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk.reshape(-1),
                                   ignore_index=IGNORE, reduction="none")
            nll += loss.view(chunk.shape).double().sum(1)
    return nll, state


def _count_unk(tokens: Tokens, lo: int, hi: int) -> int:
    """How many of ids[lo:hi] are <unk>, a chunk at a time."""
    return sum(int((tokens.take(slice(k, min(k + CHUNK * 4096, hi))) == UNK_ID).sum())
               for k in range(lo, hi, CHUNK * 4096))


def _bar(progress: bool, total: int) -> Any:
    return bars.bar(total, "scoring", shown=progress)


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
# `rnnlm eval`: the report (what it scores: `rnnlm.texts`)


def compressor_bpc(pieces: Iterable[str]) -> dict[str, float]:
    """Bits per character that gzip -9, bz2 -9 and xz -9e reach on the UTF-8 bytes of the text `pieces` make up,
    headers included. The text is read a piece at a time: a split of the kernel is never held whole."""
    compressors = {"gzip": zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), "bz2": bz2.BZ2Compressor(9),
                   "xz": lzma.LZMACompressor(preset=9 | lzma.PRESET_EXTREME)}
    sizes, chars = dict.fromkeys(compressors, 0), 0
    for piece in pieces:
        data = piece.encode("utf-8")
        chars += len(piece)
        for name, compressor in compressors.items():
            sizes[name] += len(compressor.compress(data))
    for name, compressor in compressors.items():
        sizes[name] += len(compressor.flush())
    return {name: 8 * size / chars for name, size in sizes.items()}


@dataclass
class Part:
    name: str
    score: Score
    unknown: list[str]
    compressors: dict[str, float] | None
    streams: int | None = None
    """How a stream was read: 1 exactly as one stream, N as N carried streams; None for records or windows."""
    warmup: int = WARMUP
    """With N streams: the characters each stream after the first read before its own (fewer for a short text)."""
    eos: bool = False
    """What a records model scores: each record's <eos> too (`data info` counts characters alone)."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.name, **self.score.as_dict(), "unknown_chars": self.unknown,
                               "streams": self.streams}
        return out | ({"compressors": self.compressors} if self.compressors is not None else {})

    def reading(self) -> str:
        if self.streams is None:
            return "each record on its own"
        if self.streams == 1:
            return "state carried over the whole text, exactly as one stream"
        chars = "character" if self.warmup == 1 else "characters"
        return f"state carried in {self.streams:,} streams, each from the {self.warmup:,} {chars} before it"


@dataclass
class Evaluation:
    parts: list[Part]
    total: Score
    context: int | None

    def as_dict(self) -> dict[str, Any]:
        """The total at the top level (nll, bpc, perplexity, chars, unk, ...), each source under `parts`."""
        whole = Part(", ".join(p.name for p in self.parts), self.total,
                     list(dict.fromkeys(c for p in self.parts for c in p.unknown)), _combined(self.parts))
        top = {k: v for k, v in whole.as_dict().items() if k != "streams"}  # how a text was read: each part's own
        return {**top, "context": self.context, "parts": [p.as_dict() for p in self.parts]}

    def lines(self, perplexity_first: bool = False) -> list[str]:
        """The report: each source's characters, then its nll, bpc and perplexity (perplexity first if asked)."""
        named = self.parts + ([Part("total", self.total, [], _combined(self.parts), eos=self.parts[0].eos)]
                              if len(self.parts) > 1 else [])
        out: list[str] = []
        for p in named:
            s = p.score
            how = (f"at most {self.context} character{'s' * (self.context != 1)} of context" if self.context
                   else p.reading())
            chars = (f"{s.chars:,} symbol{'s' * (s.chars != 1)} (characters and each record's <eos>)" if p.eos
                     else f"{s.chars:,} character{'s' * (s.chars != 1)}")
            out.append(f"{p.name}: {chars} ({s.unk:,} unknown)" + (f", {how}" if p in self.parts else ""))
            measures = [f"nll {s.nll:.4f} nats/char", f"bpc {s.bpc:.4f}", f"perplexity {s.perplexity:.3f}"]
            out.append("  " + "   ".join(measures[-1:] + measures[:-1] if perplexity_first else measures))
            if p.compressors is not None:
                out.append("  " + "   ".join(f"{k} {v:.4f} bpc" for k, v in p.compressors.items()))
        return out

    def warnings(self) -> list[str]:
        unseen = [f"{p.name}: {p.score.unk:,} character(s) the model never saw, each scored as <unk>: "
                  + listed(p.unknown)
                  for p in self.parts if p.unknown]
        cramped = [f"{p.name}: each of the {p.streams:,} streams reads from only {p.warmup:,} character(s) before it "
                   f"(the text is short for so many), which scores it worse than reading it exactly; give fewer "
                   "--streams, or --streams 1"
                   for p in self.parts if p.streams and p.streams > 1 and p.warmup < CRAMPED]
        return unseen + cramped


def _combined(parts: list[Part]) -> dict[str, float] | None:
    """Compressed bits summed over the parts, per character of all of them."""
    if any(p.compressors is None for p in parts):
        return None
    chars = sum(p.score.chars for p in parts)
    return {k: sum(p.compressors[k] * p.score.chars for p in parts) / chars  # type: ignore[index]
            for k in parts[0].compressors}  # type: ignore[union-attr]


def evaluate_sources(point: Checkpoint, sources: list[Text], context: int | None = None, compressors: bool = False,
                     device: torch.device | str = "cpu", streams: int | None = None,
                     progress: bool = False, force: bool = False) -> Evaluation:
    """Score each source with the checkpoint's model; the total weighs each by its characters. A stream is read
    with `streams` (see `score_stream`); None: exactly as one stream up to EXACT_MAX characters, else in
    MAX_STREAMS carried streams."""
    if streams is not None and streams < 1:
        raise RnnlmError(f"--streams {streams}: give 1 (exactly as one stream) or more (that many carried streams)")
    if streams is not None and context is not None:  # --context reads every character on its own: no stream carries
        raise RnnlmError("--context reads each character from the N before it alone, --streams carries the state over "
                         "the text: give one of them")
    if streams is not None and any(isinstance(s.ids, Records) for s in sources):  # no carried state to split
        raise RnnlmError(f"--streams {streams}: this model reads each record on its own from <eos> "
                         "(data.records=pad), with no state carried to split; leave --streams out")
    model = load_model(point, device, force)
    parts: list[Part] = []
    for source in sources:
        read = None
        if isinstance(source.ids, Records):
            score = score_records(model, source.ids, context=context, progress=progress)
        else:
            scored = len(source.ids) - 1  # the first id is context
            read = streams or (1 if scored <= EXACT_MAX else MAX_STREAMS)
            score = score_stream(model, source.ids, streams=read, context=context, progress=progress,
                                 start=start_state(point, device) if context is not None else None)
        warm = WARMUP
        if read is not None and read > 1 and len(source.ids) >= 2:  # as score_stream reads it: the rows a text fills
            _, read, warm = _layout(len(source.ids), read, WARMUP)
        bpc = compressor_bpc(source.characters()) if compressors else None
        parts.append(Part(source.name, score, source.unknown, bpc, None if context is not None else read, warm,
                          point.records))
    total = Score(float("nan"), 0, 0)
    for p in parts:
        total = _add(total, p.score)
    return Evaluation(parts, total, context)

