"""Writing text with a trained model, one character at a time, carrying the recurrent state.

The prime is read through the model once; after that each step feeds only the newest character, so
generating N characters costs N single steps, never a re-read of the prefix.

Sample i of a batch draws its randomness from its own generator, seeded `seed + i`, by inverse-CDF
sampling with one uniform number per step: a batch of N samples is the same text as N runs of one (but where
a draw lands within float rounding of the edge between two characters: the model's sums at batch N and at batch 1
differ in their last bits).

`sample_checkpoint` is what `rnnlm sample` runs: it writes the samples to a text stream as they are
produced and, for line-per-record corpora, counts how many of the generated records are distinct and
how many are novel (absent from the training split, which it reads again through the run's config, with how
many of those the validation or test split holds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from rnnlm.checkpoint import Checkpoint
from rnnlm.config import sampling_fault
from rnnlm.data import DataRoot
from rnnlm.data.novelty import Known, SplitRecords
from rnnlm.data.text import read_utf8, typed_text
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import read_state
from rnnlm.fastpath import STEP_MAX_BATCH
from rnnlm.inference import eval_mode, load_model, start_ids, start_state
from rnnlm.model import CharRNN
from rnnlm.runtime import poll
from rnnlm.state import State, expand_rows, where_rows
from rnnlm.texts import open_run_corpus
from rnnlm.vocab import EOS_ID, UNK_ID, Vocab, listed

MAX_DRAWS = 10
"""With --unique or --novel, records are drawn until enough pass, at most this many times the number asked for."""
DRAW_ROWS, DRAW_IDS = 4096, 1 << 22
"""Samples are drawn at most DRAW_ROWS rows and DRAW_IDS ids (rows x --length) at a time: each row has its own
generator and state, so -N 1000000 in one batch took gigabytes before the first name was written."""

WARM_UP_LENGTH = 1000
"""The most characters of the record a packed-records model writes and throws away before the kept one: that record
must reach its <eos> whatever --length is, or the kept one would start mid-record; this bounds a model that never
writes one."""

PAST_THE_CAP = -1
"""The id handed on for a record that drew something else than <eos> once past --length: it was cut."""

STREAM_SEPARATOR = "---"
"""The line between two samples of a stream corpus (records need none: one record, one line)."""


@dataclass
class SampleOptions:
    length: int = 500
    """Characters to generate per sample, after the prime (for records: the most a record may add to it)."""
    temperature: float = 0.8
    """Divides the logits; 0 takes the most likely character every time."""
    top_k: int | None = None
    """Draw only among the k most likely characters."""
    top_p: float | None = None
    """Draw only among the smallest set of characters whose probability reaches p (nucleus sampling)."""
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, option in (("length", "--length"), ("temperature", "--temp"), ("top_k", "--top-k"),
                             ("top_p", "--top-p")):
            fault = sampling_fault(name, getattr(self, name))
            if fault is not None:
                raise RnnlmError(f"{option} {getattr(self, name)}: must be {fault}")
        if self.num_samples < 1:
            raise RnnlmError(f"--num-samples {self.num_samples}: must be at least 1")
        # sample i is seeded seed + i, which a generator takes up to 2**64 - 1: every seed of a run (train.seed) is one
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise RnnlmError(f"--seed {self.seed}: must be in [0, 2**63)")


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set to -inf every logit outside the top k (those tied with the k-th stay: which of them to drop would be
    arbitrary) and outside the nucleus of mass top_p. (N, V) -> (N, V)."""
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
    # In float64 and from the largest logit down, so that no temperature > 0 overflows: a tiny one leaves the most
    # likely characters alone, a huge one makes them all alike (float32 gave inf - inf = NaN at either end).
    logits = logits.double()
    shifted = logits - logits.max(-1, keepdim=True).values
    probs = filter_logits(shifted / opts.temperature, opts.top_k, opts.top_p).softmax(-1)
    u = torch.cat([torch.rand(1, generator=g) for g in generators])  # (N,)
    cdf = probs.cumsum(-1)
    # right=True: u = 0 must not land on a leading character of probability 0 (a banned <eos>, or one top-k left out)
    picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1)
    return picked.clamp(max=probs.shape[-1] - 1)


@torch.inference_mode()
def generate(model: CharRNN, vocab: Vocab, prime: str, opts: SampleOptions, records: bool = False,
             packed: bool = False, on_step: Callable[[list[int]], None] | None = None, start: State | None = None,
             first: int = 0) -> list[list[int]]:
    """Generate `opts.num_samples` continuations of `prime` (ids, prime excluded), samples `first`, `first + 1`...
    of a draw: sample i is seeded `opts.seed + i`.

    For records, a sample ends at its <eos> (not included). A model trained on packed records
    (`data.records: pack`) always read a record with the state left by the record before it, so it
    first writes one record that is thrown away, and only then the record that is kept. A stream model
    reads the prime from `start` (one row, see `start_state`; None is the zero state). `on_step` gets
    each step's new ids, one per sample, as they are produced (EOS_ID for a finished record; one step past the cap,
    a record's EOS_ID if it was whole, PAST_THE_CAP if it was cut); then they go there alone, and the lists returned
    are empty (a sample of --length 10**8 would keep 800 MB of them).
    """
    device = model.decoder.weight.device
    n = opts.num_samples
    seed = opts.seed if opts.seed is not None else fresh_seed()
    generators = [torch.Generator().manual_seed(seed + first + i) for i in range(n)]

    ids = start_ids(vocab, prime, records, warm=start is not None).to(device).expand(n, -1)  # (N, P)
    with eval_mode(model):
        if records and packed:
            logits, state = model(ids[:, :1], None)  # <eos>
            warm_up = dataclasses.replace(opts, length=max(opts.length, WARM_UP_LENGTH))
            _, logits, state = _draw_characters(model, logits, state, warm_up, generators, banned_ids(vocab, True),
                                                records=True)
            if ids.shape[1] > 1:
                logits, state = _read(model, ids[:, 1:], state)  # the prime after each row's own warm-up record
        else:  # every row reads the same prime from the same state: read it once
            logits, state = _read(model, ids[:1], None if records else start)
            logits, state = logits.expand(n, -1, -1), expand_rows(state, n)
        out, _, _ = _draw_characters(model, logits, state, opts, generators, banned_ids(vocab, records),
                                     records=records, on_step=on_step, judge_cap=True)
    return out


def fresh_seed() -> int:
    """A seed for a sample given none: from the system's entropy, not torch's global generator, which drawing it
    from (torch.seed) would reseed under a caller training alongside."""
    return secrets.randbelow(2**31)


def _read(model: CharRNN, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
    """The logits after the last of `ids` (N, P >= 1), (N, 1, V), and the state after it; the ids before the last
    are read as evaluation reads a text, so a long prime (a whole --prime-file) keeps no logits."""
    if ids.shape[1] > 1:
        state = read_state(model, ids[:, :-1], state)
    return model(ids[:, -1:], state)


def sampling_threads(num_samples: int) -> int | None:
    """Threads for sampling on a CPU unless told: one for a few samples (a step at such a batch is too small to
    share well, and one thread leaves a busy machine's other core alone), else None (share the cores)."""
    return 1 if num_samples <= STEP_MAX_BATCH else None


def banned_ids(vocab: Vocab, records: bool) -> list[int]:
    """The ids a sample never writes: <unk>; a stream's <eos> (streams have none); a record's line breaks (a record is
    one line, but a records model fine-tuned from a stream model keeps the stream's in its vocabulary)."""
    if not records:
        return [UNK_ID, EOS_ID]
    return [UNK_ID] + [i for i, c in enumerate(vocab.itos) if c in ("\n", "\r")]


def _draw_characters(model: CharRNN, logits: torch.Tensor, state: State | None, opts: SampleOptions,
                     generators: list[torch.Generator], banned: list[int], *, records: bool,
                     on_step: Callable[[list[int]], None] | None = None,
                     judge_cap: bool = False) -> tuple[list[list[int]], torch.Tensor, State]:
    """Draw up to opts.length characters per row from `logits` (N, P, V) on, never one of `banned`. A record's row
    stops at its <eos>: its state and logits stay those right after reading that <eos>. With `judge_cap`, a record
    at the cap draws once more: an <eos> there says it was whole (handed on), anything else that it was cut
    (handed on as PAST_THE_CAP, and written nowhere)."""
    n = len(generators)
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    last = logits[:, -1]
    ban = torch.zeros(last.shape[-1], dtype=torch.bool, device=last.device)
    ban[banned] = True
    for step in range(opts.length + int(records and judge_cap)):
        allowed = last.masked_fill(ban, -math.inf)
        if records:  # a row that has ended draws nothing, as a run of one would stop
            live = (~done).nonzero().flatten()
            nxt = torch.full((n,), EOS_ID, dtype=torch.long)
            nxt[live] = choose(allowed[live], opts, [generators[i] for i in live.tolist()])
        else:
            nxt = choose(allowed, opts, generators)
        ids = nxt.tolist() if step < opts.length else [t if t == EOS_ID else PAST_THE_CAP for t in nxt.tolist()]
        if on_step is not None:
            on_step(ids)
        else:
            for row, token in zip(out, ids):
                if token not in (EOS_ID, PAST_THE_CAP):  # a record's row that has ended draws <eos> alone
                    row.append(token)
        if step == opts.length:
            break
        poll()
        logits, new_state = model(nxt.to(last.device)[:, None], state)
        if records and bool(done.any()):
            keep = done.to(last.device)
            new_state = where_rows(keep, state, new_state)
            logits = torch.where(keep[:, None, None], last[:, None], logits)
        state, last = new_state, logits[:, -1]
        if records:
            done |= nxt == EOS_ID
            if bool(done.all()):
                break
    return out, last[:, None], state


# ---------------------------------------------------------------------------------------------------
# `rnnlm sample`: a checkpoint in, text out


@dataclass
class Prime:
    text: str
    """What the model reads before it writes (printed as given, unknown characters included)."""
    unknown: list[str]
    """The distinct characters of `text` the vocabulary lacks, in order of appearance; each is read as <unk>."""
    unknown_count: int
    """How many characters of `text` are read as <unk>."""

    def warning(self) -> str | None:
        if not self.unknown:
            return None
        return (f"the prime has {self.unknown_count} character(s) the model never saw, read as <unk>: "
                + listed(self.unknown))


def read_prime(vocab: Vocab, text: str | None = None, path: Path | None = None, strict: bool = False,
               default: str = "", records: bool = False) -> Prime:
    """The prime from `--prime TEXT` or `--prime-file PATH` (the file's text exactly, final newline
    included; `-` is standard input), else `default`. With `strict`, characters the vocabulary lacks are an error;
    for a model of `records` (one per line), a line break is."""
    if text is not None and path is not None:
        raise RnnlmError("give --prime TEXT or --prime-file PATH, not both")
    prime = read_utf8(path) if path is not None else text if text is not None else default
    typed_text(prime, "--prime", "the prime in a UTF-8 file with --prime-file")
    if records and ("\n" in prime or "\r" in prime):  # a record never holds one (banned_ids): a CR LF file's too
        raise RnnlmError("the prime has a line break (a --prime-file's final newline counts: echo -n or printf "
                         "writes none; without --prime or "
                         "--prime-file the prime is the run's sample.prime), but this model writes one record per "
                         "line: prime it with the start of one record")
    unknown = vocab.unknown(prime)
    missing = set(unknown)
    result = Prime(prime, unknown, sum(c in missing for c in prime))
    if unknown and strict:
        raise RnnlmError(f"--strict: {result.warning()}")
    return result


@dataclass
class SampleReport:
    samples: int
    """Samples (records) generated."""
    written: int
    """Samples written out, after --unique and --novel."""
    records: bool
    distinct: int = 0
    """Records: how many different records were generated."""
    novel: int | None = None
    """Records: how many generated records (counted with repeats) are not in the training split; None if
    the training split could not be read."""
    held_out: int = 0
    """Records: how many of the novel ones are records of the validation or test split."""
    cut: int = 0
    """Records that reached the length limit before their <eos> (written as they are)."""
    cut_dropped: int = 0
    """Records --novel or --unique dropped that --length had cut (--novel drops every fragment: no name)."""
    corpus: str = ""
    note: str = ""
    """Why the novelty is unknown."""
    wanted: int = 0
    """Samples asked for (--num-samples)."""
    seed: int = 0
    """The seed sample 0 drew with (sample i: seed + i): the one given, or the one drawn when none was."""

    def summary(self) -> str | None:
        """One line for stderr; None for stream corpora, which have nothing to count."""
        if not self.records:
            return None
        parts = [f"{self.samples} record{'s' * (self.samples != 1)} generated", f"{self.distinct} distinct"]
        held_out = f"; {self.held_out} of them in its validation or test split" if self.held_out else ""
        parts.append(f"{self.novel} novel (not in the {self.corpus} training split{held_out})"
                     if self.novel is not None else f"novelty not checked: {self.note}")
        line = ", ".join(parts)
        too_few = self.written < self.wanted and 2 * self.cut_dropped > self.samples - self.written
        if self.cut:  # the advice once: with too few written, the reason for it says it
            line += f"; {self.cut} reached the length limit before <eos>" + ("" if too_few else " (raise --length)")
        if self.written != self.samples:
            line += f"; wrote {self.written}"
        if self.written < self.wanted:
            line += f", fewer than the {self.wanted} asked for: after {self.samples} drawn " + (
                "most records dropped were cut by --length before their <eos> (raise --length)" if too_few else
                "the model keeps repeating itself (a higher --temp draws more variety)")
        return line


def training_records(point: Checkpoint, root: DataRoot | None = None,
                     moved_to: Path | None = None) -> tuple[Known | None, str, str]:
    """The corpus's records by split (`Known`), read through the run's config as training read them (at
    `moved_to`, --data-path, when its files moved), the corpus name, and why they are missing (None, name, reason)
    when the corpus cannot be read here. Records of a corpus changed since are the split as it is now, with a
    warning."""
    try:
        data, store = open_run_corpus(point, moved_to, "sample", root)
    except RnnlmError as e:
        if moved_to is not None:  # asked for: an error, --novel or not
            raise
        return None, point.config.data.dataset, f"the training data cannot be read ({str(e).splitlines()[0]})"
    if point.other_text_at(data, store.fingerprint):
        where = f"--data-path {moved_to}" if moved_to is not None else f"the run's config.yaml names {data.path}, which"
        return None, store.name, f"{where} holds other text than it trained on"
    if point.corpus_changed(store.fingerprint):
        warnings.warn(f"the {store.name} corpus has changed since this checkpoint was written: novelty is counted "
                      "against its training split as it is now")
    held_out = [SplitRecords(store, split) for split in ("val", "test") if store.manifest["splits"][split]["records"]]
    return Known(SplitRecords(store, "train"), held_out), store.name, ""


def sample_checkpoint(point: Checkpoint, opts: SampleOptions, prime: str, out: TextIO, unique: bool = False,
                      novel: bool = False, root: DataRoot | None = None, device: torch.device | str = "cpu",
                      force: bool = False, on_start: Callable[[int], None] | None = None,
                      moved_to: Path | None = None, zero_state: bool = False) -> SampleReport:
    """Generate `opts.num_samples` samples from a checkpoint and write them to `out` as they are produced.

    One sample without filters is written and flushed character by character. Records are written one
    per line, in order, each as soon as it and the ones before it have ended; `unique` drops repeats,
    `novel` drops records the training split holds. Samples of a stream corpus are written when the batch they
    are drawn in is done (DRAW_ROWS and DRAW_IDS set its size), separated by a line `---`. `on_start` is told the seed
    sample 0 draws with once the model (and a records corpus's training split) is read, before anything is written.
    The prime is read from `start_state` (a sequential model's training state), or with `zero_state` from zero.
    """
    if not point.records and moved_to is not None:
        raise RnnlmError("--data-path gives a moved records corpus to count novel records; this model was trained on "
                         f"the stream corpus {point.config.data.dataset!r}, which sampling does not read")
    if not point.records and (unique or novel):
        raise RnnlmError("--unique and --novel apply to line-per-record corpora (names, anbn); "
                         f"this model was trained on the stream corpus {point.config.data.dataset!r}")
    training, corpus, note = training_records(point, root, moved_to) if point.records else (None, "", "")
    if novel and training is None:
        raise RnnlmError(f"--novel needs the training split: {note}")
    wanted = opts.num_samples
    model = load_model(point, device, force)
    start = None if zero_state else start_state(point, device)  # refused before a prime is shown
    seed = opts.seed if opts.seed is not None else fresh_seed()
    if on_start is not None:
        on_start(seed)
    printer = _Printer(point.vocab, prime, out, wanted, point.records, unique, novel, training)
    rows = max(1, min(DRAW_ROWS, DRAW_IDS // max(1, opts.length)))
    while True:  # until `wanted` are written; filtered records: or MAX_DRAWS times that many were drawn
        n = min(rows, wanted - printer.written, MAX_DRAWS * wanted - printer.drawn)
        printer.begin(n)
        generate(model, point.vocab, prime, dataclasses.replace(opts, num_samples=n, seed=seed), records=point.records,
                 packed=point.config.data.records == "pack", start=start, on_step=printer.step, first=printer.drawn - n)
        printer.finish()
        if printer.written >= wanted or printer.drawn >= MAX_DRAWS * wanted:
            break
    report = SampleReport(printer.drawn, printer.written, point.records, corpus=corpus, note=note, wanted=wanted,
                          seed=seed)
    if point.records:
        report.distinct = len(printer.seen)
        report.novel = None if training is None else printer.novel_records
        report.held_out = printer.held_out_records
        report.cut, report.cut_dropped = printer.cut, printer.cut_dropped
    return report


def novel_record(record: str, training: Known | None) -> bool:
    """A record the training split does not hold; an empty one is no new name (a records corpus refuses empty
    lines, so training holds none)."""
    return record != "" and record not in (training or ())


class _Printer:
    """Turns the ids `generate` produces, one step at a time, into text on `out`. It keeps the batch being drawn (of
    one live stream sample: nothing) and, for records, the distinct ones generated: not every sample, so -N 10**7
    names or a sample of --length 10**8 holds no more than that."""

    def __init__(self, vocab: Vocab, prime: str, out: TextIO, wanted: int, records: bool, unique: bool, novel: bool,
                 training: Known | None):
        self.vocab, self.prime, self.out, self.records = vocab, prime, out, records
        self.unique, self.novel, self.training, self.wanted = unique, novel, training, wanted
        self.rows: list[list[int]] = []  # the batch being drawn: each sample's ids so far
        self.ended: list[bool] = []
        self.done = 0  # the batch's rows finished (in order: written or dropped)
        self.drawn = 0  # samples drawn, over every batch
        # Records generated, by a digest of their text (a long fragment's takes 16 bytes too): whether one was written.
        self.seen: dict[bytes, bool] = {}
        self.novel_records = self.held_out_records = self.written = self.cut = self.cut_dropped = 0
        self.live = wanted == 1 and not (novel or unique)  # write each character as it comes
        if self.live:
            self._write(prime)

    def begin(self, n: int) -> None:
        """A batch of n more samples."""
        self.rows, self.ended, self.done = [[] for _ in range(n)], [False] * n, 0
        self.drawn += n

    def step(self, ids: list[int]) -> None:
        for i, token in enumerate(ids):
            if self.ended[i] or token == PAST_THE_CAP:  # the latter: neither written nor ended (cut)
                continue
            if self.records and token == EOS_ID:
                self.ended[i] = True
                continue
            if self.live:
                self._write(self.vocab.decode([token]))
            if self.records or not self.live:  # a live stream sample is written out as it comes, and kept nowhere
                self.rows[i].append(token)
        while self.records and self.done < len(self.rows) and self.ended[self.done]:
            self._finish_row()

    def finish(self) -> None:
        while self.done < len(self.rows):  # rows that ended wait here behind a row that was cut
            self.cut += self.records and not self.ended[self.done]
            self._finish_row()

    def _finish_row(self) -> None:
        text, whole = self.prime + self.vocab.decode(self.rows[self.done]), self.ended[self.done]
        self.rows[self.done] = []
        self.done += 1
        key = hashlib.blake2b(text.encode(), digest_size=16).digest() if self.records else b""
        if self.records:  # a record cut by --length is no name: never novel
            repeat, new = self.seen.setdefault(key, False), whole and novel_record(text, self.training)
            self.novel_records += new
            self.held_out_records += new and self.training is not None and self.training.held_out_holds(text)
            if (self.unique and repeat) or (self.novel and not new):  # --unique: no line written twice
                self.cut_dropped += not whole
                return
        if self.written >= self.wanted:
            return
        if self.records:
            self.seen[key] = True
        if self.live:
            self._write("\n")
        elif self.records:
            self._write(text + "\n")
        else:
            self._write((f"{STREAM_SEPARATOR}\n" if self.written else "") + text + "\n")
        self.written += 1

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
