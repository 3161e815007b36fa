"""Minibatches from an encoded corpus, and truncation of backpropagation through time.

Three batchers, one interface (`next()` -> `Batch`, `state_dict()`, `load_state_dict()`):

- `RandomWindows` (`train.batching: random`): independent windows at random places; the hidden state
  starts from zero for every minibatch.
- `SequentialStreams` (`train.batching: sequential`): B contiguous streams read left to right; the
  hidden state is carried from one minibatch to the next and cut by `truncate` (truncated BPTT).
- `RecordBatches` (`data.records: pad`): whole records of a line corpus, padded; the padding is
  masked out of the loss.

Each reads its windows straight from a split's ids (`Tokens`: the store's memory map, through the lookup to the
model's vocabulary), copying only the (B, T) of a minibatch, so a corpus of any size costs its page cache and
nothing per process. Every random choice comes from the batcher's own `torch.Generator`, whose state is part of
`state_dict()`, so a resumed run sees exactly the minibatches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from rnnlm.config import Config
from rnnlm.device import to_device
from rnnlm.errors import RnnlmError
from rnnlm.state import State, map_state
from rnnlm.vocab import EOS_ID

IGNORE = -100
"""Target id that the loss ignores (padding of record batches); torch's cross_entropy default."""

def truncate(state: State | None) -> State | None:
    """Truncated BPTT happens here: keep the state's values, cut its history from the graph."""
    return map_state(torch.Tensor.detach, state)


class Tokens:
    """A split's ids as the model reads them: `symbols` (N,) of any integer type, a memory map or an array, looked
    up in `lut` (store symbol -> vocabulary id) when given. Only what is indexed is read and turned into int64."""

    def __init__(self, symbols: np.ndarray | torch.Tensor, lut: np.ndarray | None = None,
                 first: int | None = None) -> None:
        self.symbols = symbols.numpy() if isinstance(symbols, torch.Tensor) else symbols
        self.lut, self.first = lut, first
        """`first`: the id read at position 0 whatever its symbol (a stream's start, before a file's text)."""

    def __len__(self) -> int:
        return len(self.symbols)

    def take(self, index: Any) -> torch.Tensor:
        """ids[index] as int64: a slice, or an integer array of any shape."""
        picked = np.asarray(self.symbols[index])
        ids = torch.from_numpy(self.lut[picked] if self.lut is not None else picked.astype(np.int64))
        if self.first is not None and isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if start == 0 and stop > 0 and step > 0:
                ids[0] = self.first
        elif self.first is not None:
            ids[torch.from_numpy(np.asarray(index) == 0)] = self.first
        return ids


@dataclass
class Batch:
    inputs: torch.Tensor   # (B, T) int64
    targets: torch.Tensor  # (B, T) int64, IGNORE where there is nothing to predict
    carry: bool            # continue from the previous minibatch's hidden state (else start from zero)
    epoch: int             # epochs completed before this minibatch
    chars: int             # targets scored (not IGNORE), counted on the host


def _batch(inputs: torch.Tensor, targets: torch.Tensor, carry: bool, epoch: int, device: torch.device | str) -> Batch:
    """A minibatch cut on the host, on `device`, its scored characters counted before it leaves (counting on a GPU
    would wait for it)."""
    chars = int((targets != IGNORE).sum())
    return Batch(to_device(inputs, device), to_device(targets, device), carry, epoch, chars)


class Batcher(Protocol):
    epoch: int

    def next(self) -> Batch: ...
    def epochs_done(self) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _too_short(n: int, unit: str, batch_size: int, seq_len: int, rows: str) -> RnnlmError:
    """A training split too short for one minibatch: which settings to lower, when any can be."""
    lower = [f"train.{k}" for k, v in (("batch_size", batch_size), ("seq_len", seq_len)) if v > 1]
    unit = unit if n != 1 else unit.replace("characters", "character", 1).replace("symbols", "symbol", 1)
    return RnnlmError(f"the training split has {n:,} {unit}, too few for train.batch_size={batch_size} {rows} "
                      f"train.seq_len={seq_len}; " + (f"lower {' or '.join(lower)}, or " if lower else "") +
                      "use more text")


class WindowLengths:
    """`train.bptt`: every window `seq_len` long (`fixed`), or a length drawn for each minibatch
    (`random`): around `seq_len` 95% of the time and around half of it otherwise, with a spread of
    about seq_len/14, as in the randomized truncated BPTT of Merity et al. 2017 (AWD-LSTM, sec. 4.1)."""

    def __init__(self, seq_len: int, bptt: Literal["fixed", "random"], generator: torch.Generator):
        self.seq_len, self.bptt, self.generator = seq_len, bptt, generator

    def draw(self) -> int:
        if self.bptt == "fixed":
            return self.seq_len
        u = float(torch.rand((), generator=self.generator))
        z = float(torch.randn((), generator=self.generator))
        base = self.seq_len if u < 0.95 else self.seq_len / 2
        length = round(base + z * max(1.0, self.seq_len / 14))
        return max(1, min(2 * self.seq_len, length))


class SequentialStreams:
    """B contiguous streams, read T characters at a time; the hidden state flows from one minibatch
    to the next. Each epoch starts at a random offset o < T so windows do not always cut the text at
    the same places.

        stream of N ids, from offset o, cut into B rows of S = (N - o - 1) // B:

        o
        ┌──── row 0 ────┐┌──── row 1 ────┐ ... ┌─── row B-1 ───┐ (rest dropped)
        a b c d e f g h  i j k l m n o p       ...

        inputs  (B, S)     targets (B, S) = the same, one to the right
        ┌ a b c │ d e f │ g h ┐   minibatch k = columns [kT, kT + T) of both;
        │ i j k │ l m n │ o p │   row b of minibatch k+1 continues row b of minibatch k,
        └ ...   │ ...   │ ... ┘   so its final hidden state is the next one's initial state.
    """

    def __init__(self, tokens: Tokens, batch_size: int, lengths: WindowLengths, generator: torch.Generator,
                 device: torch.device | str = "cpu", unit: str = "characters"):
        self.tokens, self.batch_size, self.lengths, self.generator = _tokens(tokens), batch_size, lengths, generator
        self.device, self.unit = device, unit  # what the ids are, for a message: see `make_batcher`
        if (len(tokens) - lengths.seq_len) // batch_size < lengths.seq_len:  # each row: at least one window
            raise _too_short(len(tokens), unit, batch_size, lengths.seq_len, "streams with")
        self.epoch = 0
        self._start_epoch()

    def _start_epoch(self) -> None:
        self.offset = int(torch.randint(0, self.lengths.seq_len, (1,), generator=self.generator))
        self.row_len = (len(self.tokens) - self.offset - 1) // self.batch_size
        self.pos = 0

    def epochs_done(self) -> float:
        """Epochs read so far, the current one's share included (what the progress line's time left comes from)."""
        return self.epoch + self.pos / self.row_len

    def next(self) -> Batch:
        if self.pos >= self.row_len:
            self.epoch += 1
            self._start_epoch()
        length = min(self.lengths.draw(), self.row_len - self.pos)
        # row b of this minibatch: ids[offset + b * row_len + pos : ... + length], targets one to the right
        starts = self.offset + np.arange(self.batch_size)[:, None] * self.row_len + self.pos
        index = starts + np.arange(length)  # (B, T)
        carry = self.pos > 0
        self.pos += length
        return _batch(self.tokens.take(index), self.tokens.take(index + 1), carry, self.epoch, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset, "row_len": self.row_len, "pos": self.pos,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.offset, self.row_len, self.pos = state["epoch"], state["offset"], state["row_len"], state["pos"]


class ShuffledEpochs:
    """What `RandomWindows` and `RecordBatches` share: an epoch serves B items at a time from an order that
    `_shuffle` draws from the batcher's generator (the last partial group is dropped). A checkpoint keeps the
    generator's state at the epoch's start, from which a resume draws the same order again, not the order itself
    (a billion-character corpus's window starts are 80 MB)."""

    batch_size: int
    generator: torch.Generator
    epoch: int
    order: torch.Tensor
    """This epoch's items, in the order they are served."""
    pos: int
    """How many of them were served."""
    epoch_start: torch.Tensor | None
    """The generator's state before it drew this epoch's order; None: the order came from a checkpoint written before
    epoch starts were kept, and is kept as it came."""

    def _shuffle(self) -> torch.Tensor:
        """This epoch's order, drawn from `generator`."""
        raise NotImplementedError

    def _start_epoch(self) -> None:
        self.epoch_start = self.generator.get_state()
        self.order = self._shuffle()
        self.pos = 0

    def _take(self) -> torch.Tensor:
        """The next B of the order, from a new epoch when this one has fewer left."""
        if self.pos + self.batch_size > len(self.order):
            self.epoch += 1
            self._start_epoch()
        picked = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return picked

    def epochs_done(self) -> float:
        return self.epoch + self.pos / (len(self.order) // self.batch_size * self.batch_size)  # the last part dropped

    def state_dict(self) -> dict[str, Any]:
        epoch = {"order": self.order} if self.epoch_start is None else {"epoch_start": self.epoch_start}
        return {"epoch": self.epoch, "pos": self.pos, "generator": self.generator.get_state(), **epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "order" in state:
            self.order, self.epoch_start = state["order"], None
        elif self.epoch_start is None or not torch.equal(state["epoch_start"], self.epoch_start):  # else: at hand
            self.generator.set_state(state["epoch_start"])
            self._start_epoch()
        self.generator.set_state(state["generator"])
        self.epoch, self.pos = state["epoch"], state["pos"]


class RandomWindows(ShuffledEpochs):
    """Independent windows: each epoch lays a grid of window starts T apart from a random offset
    o < T, shuffles them, and serves B at a time (the last partial group is dropped), so an epoch
    reads every character about once, in random order. Each window starts from a zero state."""

    def __init__(self, tokens: Tokens, batch_size: int, lengths: WindowLengths, generator: torch.Generator,
                 device: torch.device | str = "cpu", unit: str = "characters"):
        self.tokens, self.batch_size, self.lengths, self.generator = _tokens(tokens), batch_size, lengths, generator
        self.device, self.unit = device, unit  # what the ids are, for a message: see `make_batcher`
        windows = (len(tokens) - lengths.seq_len) // lengths.seq_len  # the fewest a grid holds (offset T - 1)
        if windows < batch_size:
            raise _too_short(len(tokens), unit, batch_size, lengths.seq_len, "windows of")
        self.epoch = 0
        self._start_epoch()

    def _shuffle(self) -> torch.Tensor:
        t = self.lengths.seq_len
        offset = int(torch.randint(0, t, (1,), generator=self.generator))
        starts = torch.arange(offset, len(self.tokens) - t, t)  # a window at s reads ids s..s+T, the last one N - 1
        return starts[torch.randperm(len(starts), generator=self.generator)]

    def next(self) -> Batch:
        picked = self._take()
        length = min(self.lengths.draw(), len(self.tokens) - 1)  # a drawn 2T of a split of 2T ids: one less
        starts = picked.clamp(max=len(self.tokens) - 1 - length)
        index = (starts[:, None] + torch.arange(length)).numpy()  # (B, T)
        return _batch(self.tokens.take(index), self.tokens.take(index + 1), False, self.epoch, self.device)


class RecordBatches(ShuffledEpochs):
    """Whole records, B at a time in a shuffled order, each read from `<eos>` and ending in `<eos>`:

        input   <eos> e m m a <eos> <eos>      (padding inputs are <eos>; they are never scored)
        target  e     m m a <eos> IGNORE IGNORE
    """

    def __init__(self, records: Records | list[torch.Tensor], batch_size: int, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        if len(records) < batch_size:
            raise RnnlmError(f"the training split has {len(records):,} record{'s' * (len(records) != 1)}, fewer than "
                             f"train.batch_size={batch_size}; lower train.batch_size or use more records")
        self.records, self.batch_size, self.generator, self.device = records, batch_size, generator, device
        self.epoch = 0
        self._start_epoch()

    def _shuffle(self) -> torch.Tensor:
        return torch.randperm(len(self.records), generator=self.generator)

    def next(self) -> Batch:
        inputs, targets = pad_records([self.records[i] for i in self._take().tolist()])
        return _batch(inputs, targets, False, self.epoch, self.device)


class Records:
    """A records split as `RecordBatches` reads it: record k is ids[offsets[k] + 1 : offsets[k + 1]], between the
    <eos> before it and the one after it, read from `tokens` only when drawn."""

    def __init__(self, tokens: Tokens, offsets: np.ndarray) -> None:
        self.tokens, self.offsets = tokens, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.tokens.take(slice(int(self.offsets[k]) + 1, int(self.offsets[k + 1])))

    def lengths(self) -> np.ndarray:
        """Each record's length, without reading it."""
        return np.diff(self.offsets) - 1


def _tokens(tokens: Tokens | torch.Tensor) -> Tokens:
    return tokens if isinstance(tokens, Tokens) else Tokens(tokens)


def pad_records(records: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Records of ids (without <eos>) -> inputs and targets (B, 1 + longest), see `RecordBatches`."""
    width = 1 + max(len(r) for r in records)
    inputs = torch.full((len(records), width), EOS_ID, dtype=torch.long)
    targets = torch.full((len(records), width), IGNORE, dtype=torch.long)
    for row, r in enumerate(records):
        inputs[row, 1:1 + len(r)] = r
        targets[row, :len(r)] = r
        targets[row, len(r)] = EOS_ID
    return inputs, targets


def make_batcher(cfg: Config, tokens: Tokens, offsets: np.ndarray | None, device: torch.device) -> Batcher:
    """The batcher a config asks for, over a training split: its ids, and a records corpus's record offsets."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if offsets is not None and cfg.data.records == "pad":
        return RecordBatches(Records(tokens, offsets), cfg.train.batch_size, generator, device)
    lengths = WindowLengths(cfg.train.seq_len, cfg.train.bptt, generator)
    kind = SequentialStreams if cfg.train.batching == "sequential" else RandomWindows
    unit = "characters" if offsets is None else "symbols (characters and each record's <eos>)"
    return kind(tokens, cfg.train.batch_size, lengths, generator, device, unit)
