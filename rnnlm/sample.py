"""Writing text with a trained model, one character at a time, carrying the recurrent state.

The prime is read through the model once; after that each step feeds only the newest character, so
generating N characters costs N single steps, never a re-read of the prefix.

Sample i of a batch draws its randomness from its own generator, seeded `seed + i`, by inverse-CDF
sampling with one uniform number per step: a batch of N samples is the same text as N runs of one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnnlm.errors import RnnlmError
from rnnlm.model import CharRNN
from rnnlm.vocab import EOS_ID, UNK_ID, Vocab


@dataclass
class SampleOptions:
    length: int = 500
    """Characters to generate per sample (for records: the most a record may have)."""
    temperature: float = 0.8
    """Divides the logits; 0 takes the most likely character every time."""
    top_k: int | None = None
    """Draw only among the k most likely characters."""
    top_p: float | None = None
    """Draw only among the smallest set of characters whose probability reaches p (nucleus sampling)."""
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.length < 1:
            raise RnnlmError(f"--length {self.length}: generate at least 1 character")
        if self.temperature < 0:
            raise RnnlmError(f"--temp {self.temperature}: the temperature must be >= 0 (0 always takes the most likely character)")
        if self.top_k is not None and self.top_k < 1:
            raise RnnlmError(f"--top-k {self.top_k}: must be at least 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise RnnlmError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.num_samples < 1:
            raise RnnlmError(f"--num-samples {self.num_samples}: must be at least 1")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the nucleus of mass top_p. (N, V) -> (N, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the more likely characters
        drop_sorted = before >= top_p        # already reached p without this one
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose(logits: torch.Tensor, opts: SampleOptions, generators: list[torch.Generator]) -> torch.Tensor:
    """One next character per row. logits (N, V) -> (N,) int64 on the CPU."""
    logits = logits.float().cpu()
    if opts.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / opts.temperature, opts.top_k, opts.top_p).softmax(-1)
    u = torch.cat([torch.rand(1, generator=g) for g in generators])  # (N,)
    cdf = probs.cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).squeeze(1)
    return picked.clamp(max=probs.shape[-1] - 1)


def start_ids(vocab: Vocab, prime: str, records: bool) -> torch.Tensor:
    """What the model reads before it writes: a record starts after <eos>; an empty prime of a stream
    corpus starts after a newline if the corpus has one (the start of a line), else after <eos>."""
    if records:
        return torch.cat([torch.tensor([EOS_ID]), vocab.encode(prime)])
    if prime:
        return vocab.encode(prime)
    return vocab.encode("\n") if "\n" in vocab.itos else torch.tensor([EOS_ID])


@torch.inference_mode()
def generate(model: CharRNN, vocab: Vocab, prime: str, opts: SampleOptions, records: bool = False,
             packed: bool = False, on_step: Callable[[list[int]], None] | None = None) -> list[list[int]]:
    """Generate `opts.num_samples` continuations of `prime` (ids, prime excluded).

    For records, a sample ends at its <eos> (not included). A model trained on packed records
    (`data.records: pack`) always read a record with the state left by the record before it, so it
    first writes one record that is thrown away, and only then the record that is kept. `on_step` gets
    each step's new ids, one per sample, as they are produced (EOS_ID for a finished record).
    """
    was_training = model.training
    model.eval()
    device = model.decoder.weight.device
    n = opts.num_samples
    seed = opts.seed if opts.seed is not None else int(torch.seed() % 2**31)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]

    ids = start_ids(vocab, prime, records).to(device).expand(n, -1)  # (N, P)
    if records and packed:
        logits, state = model(ids[:, :1], None)  # <eos>
        _, logits, state = _write(model, logits, state, opts, generators, records=True)
        if ids.shape[1] > 1:
            logits, state = model(ids[:, 1:], state)  # the prime after the <eos> just written
    else:
        logits, state = model(ids, None)
    out, _, _ = _write(model, logits, state, opts, generators, records, on_step)
    model.train(was_training)
    return out


def _write(model: CharRNN, logits: torch.Tensor, state: Any, opts: SampleOptions, generators: list[torch.Generator],
           records: bool, on_step: Callable[[list[int]], None] | None = None) -> tuple[list[list[int]], torch.Tensor, Any]:
    """Draw up to opts.length characters per row from `logits` (N, P, V) on. A record's row stops at its
    <eos>: its state and logits stay those right after reading that <eos>."""
    n = len(generators)
    banned = [UNK_ID] + ([] if records else [EOS_ID])  # never write an unknown; streams have no <eos>
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    last = logits[:, -1]
    for _ in range(opts.length):
        masked = last.clone()
        masked[:, banned] = float("-inf")
        nxt = torch.where(done, EOS_ID, choose(masked, opts, generators))
        for i, token in enumerate(nxt.tolist()):
            if not done[i] and token != EOS_ID:
                out[i].append(token)
        if on_step is not None:
            on_step(nxt.tolist())
        logits, new_state = model(nxt.to(last.device)[:, None], state)
        if records and bool(done.any()):
            keep = done.to(last.device)
            new_state = _where(keep, state, new_state)
            logits = torch.where(keep[:, None, None], last[:, None], logits)
        state, last = new_state, logits[:, -1]
        if records:
            done |= nxt == EOS_ID
            if bool(done.all()):
                break
    return out, last[:, None], state


def _where(rows: torch.Tensor, old: Any, new: Any) -> Any:
    """Per row of the batch, `old` where rows is True, else `new`; states are (L, N, H) or a tuple of them."""
    if isinstance(new, tuple):
        return tuple(_where(rows, o, w) for o, w in zip(old, new))
    return torch.where(rows[None, :, None], old, new)
