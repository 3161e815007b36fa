"""Scoring text: mean negative log-likelihood per character, bits per character, perplexity.

A stream is read with the state carried across the whole text. To use the machine well, a long text
is cut into parallel streams scored as one batch; each stream except the first first re-reads the
`warmup` characters before it, unscored, so it starts from a state that has seen its context, as a
single left-to-right pass would have. With `streams=1` the pass is exactly one stream; the default
split differs from it only in the last digits (an RNN's state forgets what lies `warmup` characters back).

Records (names) are scored independently, each read from `<eos>` and scored up to and including its
own `<eos>`, as makemore reports its loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from rnnlm.batching import IGNORE, pad_records
from rnnlm.model import CharRNN
from rnnlm.vocab import UNK_ID

WARMUP = 512
MIN_STREAM = 2048  # characters a stream scores at the least before another stream is worth it
MAX_STREAMS = 128
CHUNK = 256  # time steps per forward call


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


@torch.no_grad()
def score_stream(model: CharRNN, ids: torch.Tensor, streams: int | None = None, warmup: int = WARMUP) -> Score:
    """Score ids[1:] given everything before them. ids: (N,) int64."""
    n = len(ids)
    if n < 2:
        return Score(float("nan"), 0, 0)
    if streams is None:
        streams = max(1, min(MAX_STREAMS, (n - 1) // MIN_STREAM))
    device = model.decoder.weight.device
    ids = ids.to(device)
    seg = math.ceil((n - 1) / streams)
    first = torch.arange(streams, device=device) * seg + 1            # first scored target of each stream
    start = (first - 1 - warmup).clamp(min=0)                           # where each stream starts reading
    width = int((first + seg - 1 - start).max())                        # the longest row, warm-up included
    pos = start[:, None] + torch.arange(width, device=device)          # (S, W) positions of the inputs
    scored = (pos + 1 >= first[:, None]) & (pos + 1 < (first + seg)[:, None]) & (pos + 1 < n)
    inputs = ids[pos.clamp(max=n - 1)]
    targets = torch.where(scored, ids[(pos + 1).clamp(max=n - 1)], IGNORE)
    return _score_rows(model, inputs, targets)


@torch.no_grad()
def score_records(model: CharRNN, records: list[torch.Tensor], batch_size: int = 256) -> Score:
    """Each record from a zero state: read `<eos> r`, score `r <eos>`."""
    if not records:
        return Score(float("nan"), 0, 0)
    order = sorted(range(len(records)), key=lambda i: len(records[i]))  # similar lengths pad little
    total = Score(0.0, 0, 0)
    for i in range(0, len(order), batch_size):
        inputs, targets = pad_records([records[j] for j in order[i:i + batch_size]])
        total = _add(total, _score_rows(model, inputs, targets))
    return total


def _score_rows(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor) -> Score:
    """Rows read left to right with the state carried, CHUNK steps per call; IGNORE targets unscored."""
    device = model.decoder.weight.device
    inputs, targets = inputs.to(device), targets.to(device)
    was_training = model.training
    model.eval()
    state = None
    nll = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(0, inputs.shape[1], CHUNK):
        logits, state = model(inputs[:, t:t + CHUNK], state)
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets[:, t:t + CHUNK].reshape(-1),
                               ignore_index=IGNORE, reduction="sum").double()
    model.train(was_training)
    count = int((targets != IGNORE).sum())
    unk = int((targets == UNK_ID).sum())
    return Score(float(nll) / count if count else float("nan"), count, unk)


def _add(a: Score, b: Score) -> Score:
    chars = a.chars + b.chars
    return Score((a.nll * a.chars + b.nll * b.chars) / chars if chars else float("nan"), chars, a.unk + b.unk)
