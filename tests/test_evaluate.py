"""Evaluation: exact against brute force and against one stream; uniform models score log V; unknowns counted."""

import json
import math
import os
import random
import tracemalloc
from pathlib import Path

import pytest
import torch
from helpers import make_checkpoint, measured, uniform

import rnnlm.evaluate as ev
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.data import store as store_mod
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import compressor_bpc, evaluate_sources, score_records, score_stream
from rnnlm.inference import load_model
from rnnlm.model import CharRNN
from rnnlm.texts import file_source, split_source
from rnnlm.vocab import EOS_ID

SPLIT_TOLERANCE = 1e-6
"""nats/char: a stream cut into parallel rows equals one stream to float rounding (observed: ~1e-9)."""


def random_model(vocab_size=12, cell="lstm", num_layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, [f"model.cell={cell}", "model.hidden_size=16", f"model.num_layers={num_layers}"]).model
    return CharRNN(vocab_size, cfg).eval()


def long_memory_gru(vocab_size=12):
    """A GRU whose update gate stays near 1: its state carries what it read thousands of steps back,
    so a row started from a warm-up guess is wrong until the check corrects it."""
    model = random_model(vocab_size, cell="gru", num_layers=1)
    with torch.no_grad():
        model.rnn.bias_hh_l0[16:32] += 6.0  # z = sigmoid(... + 6): keep 99.75% of the old state each step
    return model


@torch.no_grad()
def brute_force(model, ids, context, spans, start=None):
    """Each target read on its own: the window before it, from `start` (zero if None), one forward call per target."""
    total, count = 0.0, 0
    for f, e in spans:
        for j in range(f + 1, e):
            logits, _ = model(ids[max(f, j - context):j][None], start)
            total -= float(torch.log_softmax(logits[0, -1].double(), -1)[ids[j]])
            count += 1
    return total / count, count


def test_a_wide_model_reads_fewer_steps_per_call_and_scores_the_same(monkeypatch):
    """Evaluation bounds each call's memory by reading fewer steps at once; the score does not change."""
    model = random_model()
    ids = torch.randint(0, 12, (3001,), generator=torch.Generator().manual_seed(1))
    whole = score_stream(model, ids, rows=4)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, s=None: calls.append(x.shape) or forward(x, s))
    budget = 4 * (4 * 16 + 12) * 20  # floats of gates and logits: 4 rows x 20 steps of this LSTM
    monkeypatch.setattr(ev, "CALL_FLOATS", budget)
    small = score_stream(model, ids, rows=4)
    assert all(1 <= steps < 256 and rows * steps * (4 * 16 + 12) <= budget for rows, steps in calls)
    assert any(steps > 16 for _, steps in calls)
    assert small.chars == whole.chars and abs(small.nll - whole.nll) <= SPLIT_TOLERANCE


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("rows, warmup", [(2, 512), (7, 0), (7, 5), (33, 64)])
def test_stream_split_equals_one_stream(cell, rows, warmup):
    model = random_model(cell=cell)
    ids = torch.randint(0, 12, (3001,), generator=torch.Generator().manual_seed(1))
    one = score_stream(model, ids, rows=1)
    split = score_stream(model, ids, rows=rows, warmup=warmup)
    assert (split.chars, split.unk) == (one.chars, one.unk) == (3000, int((ids[1:] == 1).sum()))
    assert abs(split.nll - one.nll) <= SPLIT_TOLERANCE


def test_the_boundary_check_is_what_makes_the_split_exact(monkeypatch):
    model = long_memory_gru()
    ids = torch.randint(0, 12, (4001,), generator=torch.Generator().manual_seed(2))
    one = score_stream(model, ids, rows=1)
    assert abs(score_stream(model, ids, rows=8, warmup=16).nll - one.nll) <= SPLIT_TOLERANCE
    monkeypatch.setattr(ev, "STATE_ATOL", math.inf)  # accept every warm-up guess unchecked
    assert abs(score_stream(model, ids, rows=8, warmup=16).nll - one.nll) > 1e-4


def test_carried_streams_equal_the_exact_score_on_a_model_with_short_memory():
    """`--streams N`: N rows from their warm-up guesses, unchecked; a model that forgets within the warm-up reads
    the same as one stream. A model that remembers longer reads differently, and the report says how it read."""
    ids = torch.randint(0, 12, (6001,), generator=torch.Generator().manual_seed(7))
    short = random_model(cell="gru")
    assert abs(score_stream(short, ids, streams=16).nll - score_stream(short, ids, rows=1).nll) <= SPLIT_TOLERANCE
    long = long_memory_gru()
    exact = score_stream(long, ids, rows=1)
    assert abs(score_stream(long, ids, streams=16, warmup=16).nll - exact.nll) > 1e-4
    assert abs(score_stream(long, ids).nll - exact.nll) <= SPLIT_TOLERANCE  # the default stays exact


def test_a_model_that_never_forgets_costs_a_few_passes_not_one_per_row(monkeypatch):
    """Warm-up guesses of a long-memory model stay wrong row after row; scoring stays exact and reads the text a
    bounded number of times (a round per row would re-read it about streams / 2 times): once, once more as a batch
    of the rows found wrong, and once in order when that round showed the errors outlast a row (a trial's Linux LSTM
    spent 44 of its 89 s in two more rounds that fixed one row each)."""
    model = long_memory_gru()
    ids = torch.randint(0, 12, (6001,), generator=torch.Generator().manual_seed(4))
    one = score_stream(model, ids, rows=1)
    read = []
    real_read_rows = ev._read_rows
    monkeypatch.setattr(ev, "_read_rows", lambda m, tokens, starts, length, *a, **k: read.append(
        len(starts) * length) or real_read_rows(m, tokens, starts, length, *a, **k))
    split = score_stream(model, ids, rows=40, warmup=8)
    assert abs(split.nll - one.nll) <= SPLIT_TOLERANCE
    assert sum(read) <= 3 * len(ids) + 40 * 8


def test_the_in_order_pass_of_a_model_that_never_forgets_shows_its_progress(monkeypatch):
    """A trial's Linux LSTM: the bar reached 835k/835k, then a minute of silence while the rows were read again (as
    a batch, then in order)."""
    import contextlib

    class Bar:
        def __init__(self):
            self.events = []

        def update(self, n):
            self.events.append(("update", n))

        def reset(self, total):
            self.events.append(("reset", total))

        def set_description(self, text):
            self.events.append(("describe", text))

    bar = Bar()
    monkeypatch.setattr(ev, "_bar", lambda progress, total: contextlib.nullcontext(bar))
    ids = torch.randint(0, 12, (5990,), generator=torch.Generator().manual_seed(4))  # a last row shorter than others
    score_stream(long_memory_gru(), ids, rows=40, warmup=8, progress=True)
    resets = [k for k, e in enumerate(bar.events) if e[0] == "reset"] + [len(bar.events)]
    assert len(resets) >= 3  # a round of the rows found wrong, then the in-order pass
    assert "again" in bar.events[resets[0] + 1][1]
    assert "scoring again in order" in bar.events[resets[-2] + 1][1] and "--streams" in bar.events[resets[-2] + 1][1]
    for at, end in zip(resets, resets[1:]):  # each counted to its end
        assert sum(n for kind, n in bar.events[at + 2:end] if kind == "update") == bar.events[at][1]


def test_default_streams_on_a_long_text_match_one_stream():
    model = long_memory_gru()
    ids = torch.randint(0, 12, (20_001,), generator=torch.Generator().manual_seed(3))
    assert abs(score_stream(model, ids).nll - score_stream(model, ids, rows=1).nll) <= SPLIT_TOLERANCE


@pytest.mark.parametrize("context", [1, 2, 5, 16, 40, 1000])
def test_context_equals_brute_force_on_a_stream(context):
    model = random_model()
    ids = torch.randint(0, 12, (41,), generator=torch.Generator().manual_seed(4))
    score = score_stream(model, ids, context=context)
    expected, count = brute_force(model, ids, context, [(0, len(ids))])
    assert score.chars == count == 40 and score.nll == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_context_windows_read_from_the_given_start_state(cell):
    """A stream model's windows start where `rnnlm sample` starts writing (the checkpoint's warm state), not at zero."""
    model = random_model(cell=cell)
    ids = torch.randint(0, 12, (60,), generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(6)
    row = torch.randn(2, 1, 16, generator=g)
    start = (row, torch.randn(2, 1, 16, generator=g)) if cell == "lstm" else row
    score = score_stream(model, ids, context=7, start=start)
    expected, count = brute_force(model, ids, 7, [(0, len(ids))], start)
    assert score.chars == count and score.nll == pytest.approx(expected, abs=1e-6)
    assert abs(score.nll - score_stream(model, ids, context=7).nll) > 1e-3  # the start state matters here


@pytest.mark.parametrize("context", [1, 3, 8])
def test_context_equals_brute_force_on_records(context):
    model = random_model()
    g = torch.Generator().manual_seed(5)
    records = [torch.randint(2, 12, (n,), generator=g) for n in (1, 4, 9, 2)]
    ids = torch.cat([t for r in records for t in (torch.tensor([EOS_ID]), r, torch.tensor([EOS_ID]))])
    spans, f = [], 0
    for r in records:
        spans.append((f, f + len(r) + 2))
        f += len(r) + 2
    expected, count = brute_force(model, ids, context, spans)
    score = score_records(model, records, context=context)
    assert score.chars == count == sum(len(r) + 1 for r in records) and score.nll == pytest.approx(expected, abs=1e-6)


def test_context_longer_than_the_text_is_the_carried_state():
    model = random_model()
    ids = torch.randint(0, 12, (300,), generator=torch.Generator().manual_seed(6))
    assert score_stream(model, ids, context=299).nll == pytest.approx(score_stream(model, ids, rows=1).nll, abs=1e-6)
    records = [ids[2:9].clamp(min=2), ids[20:23].clamp(min=2)]
    assert score_records(model, records, context=50).nll == pytest.approx(score_records(model, records).nll, abs=1e-6)


def test_context_must_be_positive():
    with pytest.raises(RnnlmError, match="--context 0"):
        score_stream(random_model(), torch.arange(10) % 12, context=0)


@pytest.mark.parametrize("context", [None, 3])
def test_uniform_model_on_uniform_text_has_perplexity_vocab_size(tmp_path, context):
    chars = "abcdefghij"
    point = ckpt.load(make_checkpoint(tmp_path / "u.pt", dataset="hello", chars=chars, setup=uniform))
    rng = random.Random(0)
    text = "".join(rng.choice(chars) for _ in range(5000))
    assert set(text) == set(chars)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    result = evaluate_sources(point, [file_source(tmp_path / "t.txt", point)], context=context)
    assert result.total.chars == 5000 and result.total.unk == 0
    assert result.total.perplexity == pytest.approx(len(point.vocab), rel=1e-5) and len(point.vocab) == 12
    assert result.total.bpc == pytest.approx(math.log2(12), rel=1e-5)


def test_unknown_characters_in_a_file_are_counted_and_named(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    (tmp_path / "t.txt").write_text("hello wörld, hello", encoding="utf-8")
    result = evaluate_sources(point, [file_source(tmp_path / "t.txt", point)])
    part = result.parts[0]
    assert part.unknown == [" ", ",", "d", "r", "w", "ö"] and part.score.unk == 7 and part.score.chars == 18
    assert math.isfinite(part.score.nll)
    assert "7 character(s) the model never saw" in result.warnings()[0] and "'ö'" in result.warnings()[0]
    assert result.as_dict()["unknown_chars"] == part.unknown and result.as_dict()["unk"] == 7


def test_a_records_model_reads_a_file_one_record_per_line(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="anbn", chars="ab"))
    (tmp_path / "r.txt").write_text("ab\naabb\naaabbb\n", encoding="utf-8")
    source = file_source(tmp_path / "r.txt", point)
    assert source.ids.take(slice(None)).tolist() == [0, 2, 3, 0, 2, 2, 3, 3, 0, 2, 2, 2, 3, 3, 3, 0]
    result = evaluate_sources(point, [source])
    assert result.total.chars == 15  # 12 letters and 3 <eos>
    # not "15 characters", where `data info` and training's start line count 12
    assert result.lines()[0].startswith(f"{tmp_path / 'r.txt'}: 15 symbols (characters and each record's <eos>)")


def test_several_files_total_weighs_by_characters(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    (tmp_path / "a.txt").write_text("hello" * 30, encoding="utf-8")
    (tmp_path / "b.txt").write_text("olleh" * 3, encoding="utf-8")
    result = evaluate_sources(point, [file_source(tmp_path / n, point) for n in ("a.txt", "b.txt")], compressors=True)
    a, b = (p.score for p in result.parts)
    assert (a.chars, b.chars, result.total.chars) == (150, 15, 165)
    assert result.total.nll == pytest.approx((a.nll * 150 + b.nll * 15) / 165)
    assert [len(p["source"]) > 0 for p in result.as_dict()["parts"]] == [True, True]
    assert result.lines()[-3].startswith("total: 165 characters")


def test_empty_file_is_an_error(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    (tmp_path / "e.txt").write_text("", encoding="utf-8")
    with pytest.raises(RnnlmError, match="no characters to score"):
        file_source(tmp_path / "e.txt", point)


def test_compressor_bits_per_character():
    rng = random.Random(1)
    text = "".join(rng.choice("ab") for _ in range(20_000))
    bpc = compressor_bpc([text])
    assert set(bpc) == {"gzip", "bz2", "xz"}
    assert all(0.95 < v < 1.5 for v in bpc.values())  # one random bit per character, and a little overhead
    four = "".join(rng.choice("abcd") for _ in range(20_000))
    assert all(1.9 < v < 2.8 for v in compressor_bpc([four]).values())  # two random bits per character
    assert compressor_bpc(["é" * 1000])["gzip"] < 0.5  # per character, not per UTF-8 byte
    assert compressor_bpc([four[:7], four[7:12345], four[12345:]]) == compressor_bpc([four])  # pieces: the same


def test_the_compressors_read_a_text_a_piece_at_a_time(tmp_path, monkeypatch):
    """--compare-compressors decoded a text whole (four bytes a character, then a string and its UTF-8 bytes): for
    a split of the kernel, gigabytes. It reads store.PIECE_CHARS characters at a time."""
    monkeypatch.setattr(store_mod, "PIECE_CHARS", 1 << 14)
    rng = random.Random(2)
    text = "".join(rng.choice("abcdé\n") for _ in range(1 << 20))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="abcd", chars="abcdé\n"))
    source = file_source(tmp_path / "t.txt", point)

    def peak(pieces):  # the most memory the compressors took: xz -9e's own buffers count, whatever the text
        tracemalloc.start()
        try:
            compressor_bpc(pieces)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert compressor_bpc(source.characters()) == compressor_bpc([text])  # the text scored, every character of it
    held = peak(source.characters()) - peak(["a"])
    assert held < len(text), held  # under a byte a character: held whole, it takes over four


def test_split_scores_reproduce_the_training_validation_loss(tmp_path):
    from rnnlm.corpus import Prepared, evaluate_split, prepare

    for dataset, mode in (("hello", "pack"), ("anbn", "pack"), ("anbn", "pad")):
        point = ckpt.load(make_checkpoint(tmp_path / f"{dataset}-{mode}.pt", dataset=dataset, records_mode=mode,
                                          chars="ab" if dataset == "anbn" else "helo"))
        model = load_model(point)
        prepared: Prepared = prepare(point.config, vocab=point.vocab)
        expected = evaluate_split(model, point.config, prepared, "val")
        got = evaluate_sources(point, [split_source(point, "val")]).total
        assert (got.chars, got.unk) == (expected.chars, expected.unk) and got.nll == pytest.approx(expected.nll, abs=1e-9)


def test_every_split_can_be_scored_and_an_unknown_one_is_an_error(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    assert split_source(point, "train").name == "hello train split"
    for split in ("train", "val", "test"):
        scored = evaluate_sources(point, [split_source(point, split)]).total
        assert scored.chars > 0 and math.isfinite(scored.nll), split
    with pytest.raises(RnnlmError, match="choose train, val or test"):
        split_source(point, "dev")


def test_vocab_of_the_test_file_can_exceed_the_model(tmp_path):
    # a character above every vocabulary code point must not fall off the end of the lookup
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    source = file_source_text(tmp_path, point, "hello\U0001F600")
    assert source.unknown == ["\U0001F600"] and int((source.ids.take(slice(None)) == 1).sum()) == 1


def file_source_text(tmp_path, point, text):
    (tmp_path / "x.txt").write_text(text, encoding="utf-8")
    return file_source(tmp_path / "x.txt", point)


def test_a_file_is_scored_whatever_it_is_read_from(tmp_path):
    """A pad records model's file (its offsets were read after the temporary store was gone), a pipe (read twice,
    the second time empty: nan), /dev/null (was scored as nan, not refused), a binary file's message."""
    import subprocess
    import sys

    from helpers import REPO

    pad = ckpt.load(make_checkpoint(tmp_path / "pad.pt", dataset="anbn", chars="ab", records_mode="pad"))
    (tmp_path / "ab.txt").write_text("ab\naabb\n", encoding="utf-8")
    part = evaluate_sources(pad, [file_source(tmp_path / "ab.txt", pad)]).parts[0]
    assert part.score.chars == 8 and math.isfinite(part.score.nll)  # 6 characters and 2 <eos>
    hello = make_checkpoint(tmp_path / "hello.pt", dataset="hello", chars="helo")
    (tmp_path / "h.txt").write_text("hello hello", encoding="utf-8")
    by_file = evaluate_sources(ckpt.load(hello), [file_source(tmp_path / "h.txt", ckpt.load(hello))]).total
    piped = subprocess.run(f"{sys.executable} -m rnnlm eval {hello} --file <(cat {tmp_path / 'h.txt'}) --json",
                           shell=True, executable="/bin/bash", capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["nll"] == pytest.approx(by_file.nll) and json.loads(piped.stdout)["chars"] == 11
    with pytest.raises(RnnlmError, match="/dev/null: no characters to score"):
        file_source(Path("/dev/null"), ckpt.load(hello))
    (tmp_path / "b.bin").write_bytes(b"PDF\0x")
    with pytest.raises(RnnlmError, match="a binary file, not text .*; give a UTF-8 text file"):
        file_source(tmp_path / "b.bin", ckpt.load(hello))


def test_a_kill_while_a_file_is_prepared_leaves_no_temporary_store(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO

    hello = make_checkpoint(tmp_path / "hello.pt", dataset="hello", chars="helo")
    big = tmp_path / "big.txt"
    big.write_bytes(b"hello hello hello\n" * 2_500_000)  # 45 MB: a while to prepare
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "rnnlm", "eval", str(hello), "--file", str(big)],
                            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temporary)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(".tmp-" in p.name for p in temporary.glob("rnnlm-eval-*/.store-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert list(temporary.iterdir()) == []


def test_context_scoring_of_many_records_costs_their_bounds_not_an_object_each(tmp_path):
    """`eval --context` built a tensor, a tuple and a padded row per record at once: 400,000 names took 865 MB
    against 287 MB without --context, 4 million over 6 GB."""
    model = make_checkpoint(tmp_path / "pad.pt", dataset="anbn", chars="ab", records_mode="pad")
    lines = tmp_path / "names.txt"
    lines.write_bytes(b"ab\naabb\nabab\n" * 70_000)
    peaks = {}
    for how, more in (("plain", []), ("context", ["--context", "3"])):  # one thread: its buffers, the same each time
        (status, _, err), peaks[how] = measured("eval", model, "--file", lines, "--threads", "1", *more)
        assert status == 0, err
    assert peaks["context"] - peaks["plain"] < 60, peaks  # MB


def test_a_large_vocabulary_reads_fewer_steps_a_call_down_to_one():
    """At least 16 steps a call were read whatever the model: 128 rows of 63,713 symbols made 130 M floats of logits
    a call (2 GB), eight times CALL_FLOATS."""
    assert ev.steps_per_call(128, "lstm", 64, 63_713) == 2  # 2 x 128 x (4 x 64 + 63,713) floats <= 16 M
    assert ev.steps_per_call(128, "lstm", 64, 150_000) == 1
    assert ev.steps_per_call(128, "lstm", 64, 100) == ev.CHUNK


def test_context_windows_of_a_large_vocabulary_stay_within_the_call_budget(monkeypatch):
    """The windows a --context call reads were counted in ids alone (POSITIONS): with 63,713 symbols, 21,845 windows
    of 3 made 5.6 GB of logits a call. Fewer windows a call score the same."""
    model = random_model(vocab_size=40)
    ids = torch.randint(0, 40, (600,), generator=torch.Generator().manual_seed(2))
    whole = score_stream(model, ids, context=3)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x, s=None: calls.append(x.shape) or forward(x, s))
    width = 4 * 16 + 40
    monkeypatch.setattr(ev, "CALL_FLOATS", 3 * width * 50)  # 50 windows of 3 a call
    small = score_stream(model, ids, context=3)
    assert max(rows * steps for rows, steps in calls) * width <= 3 * width * 50
    assert small.chars == whole.chars and small.nll == pytest.approx(whole.nll, abs=1e-6)


def test_a_long_line_among_short_records_is_scored_in_a_batch_of_its_own(tmp_path, monkeypatch):
    """A padded-records model padded 256 records to the length of the longest in their batch: one line of 2 million
    characters among names took 7 GB and did not finish in 2 minutes (a user trial)."""
    model = make_checkpoint(tmp_path / "pad.pt", dataset="anbn", chars="ab", records_mode="pad")
    lines = tmp_path / "names.txt"
    lines.write_bytes(b"ab\naabb\n" * 1000 + b"ab" * 100_000 + b"\n")
    (status, out, err), peak = measured("eval", model, "--file", lines, "--json")
    assert status == 0, err
    assert json.loads(out)["chars"] == 1000 * (3 + 5) + 200_001
    assert peak < 700, peak  # MB: torch and the model; 256 rows of 200,000 ids padded were 800 MB more
    net = load_model(ckpt.load(model))
    records = [torch.tensor([2, 3]), torch.tensor([2, 2, 3, 3]), torch.tensor([2, 3] * 3000)]
    alone = [score_records(net, [r]) for r in records]
    monkeypatch.setattr(ev, "RECORD_IDS", 64)  # the long one in a batch of its own, the short ones together
    together = score_records(net, records)
    assert together.chars == sum(s.chars for s in alone)
    assert together.nll * together.chars == pytest.approx(sum(s.nll * s.chars for s in alone), rel=1e-6)


def test_the_scoring_bar_shows_on_a_terminal_that_says_it_is_0_wide(monkeypatch):
    """A fresh pseudo-terminal (`script`) says it has 0 columns: training's line was drawn at 80 there, but the bars
    of scoring, preparing a corpus and downloading drew nothing (a Linux trial sat silent while the kernel was read)."""
    import pty
    import select
    import sys
    import time

    main, side = pty.openpty()  # 0 x 0 until someone sets its size
    with open(side, "w", encoding="utf-8", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        with ev._bar(True, 10) as bar:
            time.sleep(1.1)  # bars are drawn after a second of work
            bar.update(5)
            terminal.flush()
            shown = os.read(main, 1 << 16) if select.select([main], [], [], 5)[0] else b""
    os.close(main)
    assert b"scoring" in shown and b"5.00/10.0" in shown, shown
