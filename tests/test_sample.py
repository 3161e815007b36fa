"""Sampling: reproducible, batched like single runs, top-k/top-p exact, records end at <eos>, novelty counted."""

import dataclasses
import functools
import io
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers import constant_logits, make_checkpoint
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.data import load_corpus
from rnnlm.errors import RnnlmError
from rnnlm.model import CharRNN
from rnnlm.sample import MAX_DRAWS, PAST_THE_CAP, SampleOptions, choose, filter_logits, generate, read_prime, sample_checkpoint
from rnnlm.vocab import EOS_ID, UNK_ID, Vocab


def random_model(vocab_size=8, cell="lstm", seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, [f"model.cell={cell}", "model.hidden_size=16", "model.num_layers=2"]).model
    return CharRNN(vocab_size, cfg).eval()


VOCAB = Vocab.from_texts(["abcdef\n"])  # 9 ids: <eos>, <unk>, \n, a..f


def test_fixed_seed_gives_identical_samples():
    model = random_model(len(VOCAB))
    opts = SampleOptions(length=60, temperature=1.0, num_samples=3, seed=11)
    first = generate(model, VOCAB, "ab", opts)
    assert generate(model, VOCAB, "ab", opts) == first
    assert generate(model, VOCAB, "ab", SampleOptions(length=60, temperature=1.0, num_samples=3, seed=12)) != first


MODELS = {cell: random_model(len(VOCAB), cell=cell, seed=3) for cell in ("lstm", "gru", "rnn")}


def test_a_banned_character_is_never_drawn_however_likely_the_model_makes_it():
    """<unk> with an infinite logit (a broken model sampled with --force) is banned as any other: adding -inf to it
    made NaN, and NaN drew <unk> at --temp 0 and other characters than the model's at --temp 1."""
    model = random_model(len(VOCAB), cell="gru", seed=4)
    opts = [SampleOptions(length=30, temperature=t, seed=2) for t in (0.0, 1.0)]
    usual = [generate(model, VOCAB, "ab", o) for o in opts]
    with torch.no_grad():
        model.decoder.bias[UNK_ID] = math.inf
    assert [generate(model, VOCAB, "ab", o) for o in opts] == usual


@pytest.mark.parametrize("records", [False, True])
def test_ids_handed_to_on_step_are_not_kept_as_well(records):
    """With on_step (what `rnnlm sample` writes from) each step's ids go there alone: a sample of --length 10**8 kept
    all its ids in lists as well, 800 MB of them. They are the ids generate returns without it, <eos> marking a
    finished record."""
    opts = SampleOptions(length=40, temperature=1.0, num_samples=3, seed=5)
    whole = generate(MODELS["gru"], VOCAB, "ab", opts, records=records)
    steps = []
    assert generate(MODELS["gru"], VOCAB, "ab", opts, records=records, on_step=steps.append) == [[], [], []]
    handed = [[ids[i] for ids in steps if ids[i] != PAST_THE_CAP] for i in range(3)]
    assert [row[:row.index(EOS_ID)] if EOS_ID in row else row for row in handed] == whole


@settings(max_examples=30, deadline=None)
@given(cell=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 2**31), temperature=st.floats(0.05, 3.0),
       top_k=st.none() | st.integers(1, 9), top_p=st.none() | st.floats(0.05, 1.0), n=st.integers(1, 4),
       prime=st.text("abcdef\n", max_size=5), records=st.booleans())
def test_sampling_with_a_fixed_seed_is_deterministic(cell, seed, temperature, top_k, top_p, n, prime, records):
    opts = SampleOptions(length=25, temperature=temperature, top_k=top_k, top_p=top_p, num_samples=n, seed=seed)
    first = generate(MODELS[cell], VOCAB, prime, opts, records=records)
    torch.manual_seed(seed + 1)  # the global generator must play no part
    assert generate(MODELS[cell], VOCAB, prime, opts, records=records) == first
    assert len(first) == n


def test_top_k_1_equals_argmax():
    model = random_model(len(VOCAB))
    greedy = generate(model, VOCAB, "a", SampleOptions(length=40, temperature=0, seed=1))
    assert generate(model, VOCAB, "a", SampleOptions(length=40, temperature=1.5, top_k=1, seed=1)) == greedy
    logits = torch.randn(50, 9, generator=torch.Generator().manual_seed(0))
    generators = [torch.Generator().manual_seed(i) for i in range(50)]
    assert torch.equal(choose(logits, SampleOptions(temperature=2.0, top_k=1), generators), logits.argmax(-1))


@pytest.mark.parametrize("p, kept", [(0.3, 1), (0.5, 1), (0.6, 2), (0.75, 2), (0.8, 3), (0.875, 3), (0.9, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([[0.125, 0.5, 0.125, 0.25]])  # exact in binary: the sums have no rounding
    filtered = filter_logits(probs.log(), None, p)
    survivors = torch.isfinite(filtered[0]).nonzero().flatten().tolist()
    assert survivors == sorted([1, 3, 0, 2][:kept]) or (kept == 3 and survivors in ([0, 1, 3], [1, 2, 3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-6, 6), min_size=2, max_size=12), st.floats(0.01, 1.0))
def test_top_p_property(logits, p):
    logits_t = torch.tensor([logits], dtype=torch.float32)
    probs = logits_t.softmax(-1)[0].double()
    ordered = probs.sort(descending=True).values
    reach = ordered.cumsum(0)
    assume(all(abs(float(c) - p) > 1e-5 for c in reach))  # no ties with p within float rounding
    smallest = next(m for m in range(1, len(logits) + 1) if reach[m - 1] >= p)
    kept = torch.isfinite(filter_logits(logits_t, None, p)[0])
    assert int(kept.sum()) >= smallest  # ties in probability may keep a few more, never fewer
    assert float(probs[kept].min()) >= float(probs[~kept].max()) if (~kept).any() else True
    assert int(kept.sum()) == smallest or math.isclose(float(ordered[smallest - 1]), float(ordered[smallest]),
                                                       rel_tol=1e-6)


@pytest.mark.parametrize("records, packed", [(False, False), (True, False), (True, True)])
def test_a_batch_of_n_is_n_single_samples_with_seeds_seed_plus_i(records, packed):
    model = random_model(len(VOCAB), cell="gru")
    batch = generate(model, VOCAB, "ca", SampleOptions(length=30, temperature=1.0, top_p=0.95, num_samples=5, seed=40),
                     records=records, packed=packed)
    singles = [generate(model, VOCAB, "ca", SampleOptions(length=30, temperature=1.0, top_p=0.95, seed=40 + i),
                        records=records, packed=packed)[0] for i in range(5)]
    assert batch == singles
    assert len(set(map(tuple, batch))) > 1


def test_samples_never_contain_unk_and_streams_never_eos():
    model = random_model(len(VOCAB))
    with torch.no_grad():
        model.decoder.bias[[EOS_ID, UNK_ID]] += 50  # the model wants nothing else
    for sample in generate(model, VOCAB, "", SampleOptions(length=50, temperature=1.0, num_samples=4, seed=0)):
        assert len(sample) == 50 and EOS_ID not in sample and UNK_ID not in sample


def test_records_end_at_eos_one_per_line(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(a=0.0, eos=0.0)))
    out = io.StringIO()
    report = sample_checkpoint(point, SampleOptions(length=200, temperature=1.0, num_samples=20, seed=5), "", out)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines[:-1]) == 20  # one record per line, each ended
    assert all(set(line) <= {"a"} for line in lines[:-1]) and report.cut == 0
    assert len({len(line) for line in lines}) > 3  # the lengths vary: each record stopped at its own <eos>


def test_records_cut_at_the_length_limit_are_counted(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(a=5.0, eos=-5.0)))
    out = io.StringIO()
    report = sample_checkpoint(point, SampleOptions(length=7, temperature=0, num_samples=2), "", out)
    assert out.getvalue() == "aaaaaaa\naaaaaaa\n" and report.cut == 2
    assert "2 reached the length limit" in report.summary()


def chain(model, vocab):
    """A `setup` (a vanilla RNN with 4 units, one per id) whose next character follows from the last one alone:
    after <eos> 'a', after 'a' 'b', after 'b' <eos>, so every record is "ab"."""
    model.rnn.weight_ih_l0.copy_(5 * torch.eye(len(vocab)))  # the unit of the character just read turns on
    model.rnn.weight_hh_l0.zero_()
    model.rnn.bias_ih_l0.zero_()
    model.rnn.bias_hh_l0.zero_()
    a, b = vocab.itos.index("a"), vocab.itos.index("b")
    model.decoder.weight.zero_()
    model.decoder.bias.zero_()
    for now, after in ((EOS_ID, a), (a, b), (b, EOS_ID)):
        model.decoder.weight[after, now] = 20.0


@pytest.mark.parametrize("length", [1, 2, 3])
def test_a_packed_records_sample_starts_at_a_record_whatever_the_length(tmp_path, length):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", cell="rnn", hidden_size=4, setup=chain))
    out = io.StringIO()
    report = sample_checkpoint(point, SampleOptions(length=length, temperature=0, num_samples=3), "", out)
    assert out.getvalue() == ("ab"[:length] + "\n") * 3  # a record's start (the record thrown away was not cut)
    assert report.cut == (0 if length >= 2 else 3)  # "ab" then <eos>: whole at a length of 2 too


def test_only_the_records_that_met_the_length_limit_are_counted_as_cut(tmp_path):
    """Records are written in order: one that has ended waits behind one still being written, and when the limit
    cuts that one, the one waiting was not cut."""
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(a=0.0, eos=0.0)))
    at_most_3 = functools.partial(SampleOptions, length=3, temperature=1.0)
    for seed in range(20):
        together = sample_checkpoint(point, at_most_3(num_samples=4, seed=seed), "", io.StringIO()).cut
        alone = [sample_checkpoint(point, at_most_3(seed=seed + i), "", io.StringIO()).cut for i in range(4)]
        assert together == sum(alone), (seed, alone)


@pytest.mark.parametrize("temperature", [1e-40, 1e-38, 1e-20, 1e20, 1e39, 1e300])
def test_extreme_temperatures_tend_to_greedy_and_to_uniform(tmp_path, temperature):
    # the model likes 'b' by far; a tiny temperature always takes it, a huge one draws every character alike
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="abcd",
                                      setup=constant_logits(a=1.0, b=8.0, c=1.0, d=1.0)))
    out = io.StringIO()
    sample_checkpoint(point, SampleOptions(length=2000, temperature=temperature, seed=0), "", out)
    counts = {c: out.getvalue().count(c) for c in "abcd"}
    if temperature < 1:
        assert counts == {"a": 0, "b": 2000, "c": 0, "d": 0}
    else:
        assert all(400 < n < 600 for n in counts.values()), counts


def test_novelty_count_on_a_crafted_case(tmp_path):
    # After the prime "aab" the model writes b or <eos> with probability 1/2 each: the records are aab b^k.
    # The anbn training split holds only a^n b^n, so exactly the records other than "aabb" are novel.
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(b=0.0, eos=0.0)))
    training = set(load_corpus(point.config.data, point.config.train.seed).train)
    assert "aabb" in training
    opts = SampleOptions(length=50, temperature=1.0, num_samples=40, seed=3)
    out = io.StringIO()
    report = sample_checkpoint(point, opts, "aab", out)
    records = out.getvalue().splitlines()
    assert len(records) == 40 and all(r.startswith("aab") and set(r[3:]) <= {"b"} for r in records)
    expected_novel = sum(r != "aabb" for r in records)
    assert 0 < expected_novel < 40
    assert (report.samples, report.novel, report.distinct) == (40, expected_novel, len(set(records)))
    assert f"{expected_novel} novel" in report.summary()

    kept = io.StringIO()
    filtered = sample_checkpoint(point, opts, "aab", kept, unique=True, novel=True)
    lines, first = kept.getvalue().splitlines(), list(dict.fromkeys(r for r in records if r != "aabb"))
    # The first 40 draws are the unfiltered run's; then it draws more until 40 pass, and gives up at 400, since
    # records aab b^k beyond a dozen b's are rarer than one in 4000.
    assert lines[:len(first)] == first and len(set(lines)) == len(lines) and "aabb" not in lines
    assert filtered.written == len(lines) < 40 and filtered.samples == MAX_DRAWS * 40  # at most 10 N drawn in all
    assert "fewer than the 40 asked for" in filtered.summary()


def test_an_empty_record_is_not_a_novel_name(tmp_path):
    """The model ends a record at once half the time: the empty records are written (one empty line each) but are
    not counted novel, and --novel leaves them out (no training record is empty: a records corpus refuses them)."""
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(a=0.0, eos=0.0)))
    opts = SampleOptions(length=50, temperature=1.0, num_samples=40, seed=3)
    out = io.StringIO()
    report = sample_checkpoint(point, opts, "", out)
    records = out.getvalue().split("\n")[:-1]
    assert len(records) == 40 and 0 < records.count("") < 40  # a^k, never a training a^n b^n
    assert report.novel == 40 - records.count("")
    kept = io.StringIO()
    sample_checkpoint(point, opts, "", kept, novel=True)
    assert "" not in kept.getvalue().split("\n")[:-1] and len(kept.getvalue().split("\n")[:-1]) == 40


def test_a_records_model_never_writes_a_line_break(tmp_path):
    """A records model fine-tuned from a stream model keeps the stream's line break in its vocabulary: a record is
    one line, so -N 20 prints 20 lines, however much the model wants to write one."""
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", chars="ab\n", setup=constant_logits(**{"\n": 5.0, "a": 0.0,
                                                                                                "eos": 0.0})))
    out = io.StringIO()
    sample_checkpoint(point, SampleOptions(length=30, temperature=1.0, num_samples=20, seed=1), "", out)
    lines = out.getvalue().split("\n")[:-1]
    assert len(lines) == 20 and all(set(line) <= {"a"} for line in lines)


def test_novel_needs_a_records_corpus(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    with pytest.raises(RnnlmError, match="line-per-record"):
        sample_checkpoint(point, SampleOptions(length=5), "", io.StringIO(), novel=True)


def test_novelty_unknown_when_the_corpus_cannot_be_read(tmp_path):
    path = make_checkpoint(tmp_path / "m.pt", dataset="names", chars="abc", setup=constant_logits(a=0.0, eos=0.0))
    point = ckpt.load(path)
    point.config.data.path = str(tmp_path / "gone.txt")
    report = sample_checkpoint(point, SampleOptions(length=20, num_samples=3, seed=0), "", io.StringIO())
    assert report.novel is None and "novelty not checked" in report.summary() and "gone.txt" in report.summary()
    with pytest.raises(RnnlmError, match="--novel needs the training split"):
        sample_checkpoint(point, SampleOptions(length=20), "", io.StringIO(), novel=True)


class FlushLog(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def flush(self) -> None:
        self.seen.append(self.getvalue())


def test_one_sample_is_written_character_by_character(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    out = FlushLog()
    sample_checkpoint(point, SampleOptions(length=25, temperature=1.0, seed=2), "he", out)
    text = out.getvalue()
    assert len(text) == 2 + 25 + 1 and text.startswith("he") and text.endswith("\n")
    grown = [b for a, b in zip(out.seen, out.seen[1:]) if b != a]
    assert len(grown) >= 25 and all(len(b) - len(a) == 1 for a, b in zip(out.seen[1:], out.seen[2:]) if b != a)


def test_stream_samples_are_separated(tmp_path):
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo"))
    out = io.StringIO()
    sample_checkpoint(point, SampleOptions(length=10, temperature=1.0, num_samples=3, seed=2), "", out)
    pieces = out.getvalue().split("\n---\n")
    assert len(pieces) == 3 and all(len(p.strip("\n")) == 10 for p in pieces)


def test_unknown_prime_characters_are_counted_and_named():
    prime = read_prime(VOCAB, "ab€x€")
    assert prime.unknown == ["€", "x"] and prime.unknown_count == 3
    assert "3 character(s)" in prime.warning() and "'€', 'x'" in prime.warning()
    with pytest.raises(RnnlmError, match="--strict"):
        read_prime(VOCAB, "ab€", strict=True)
    model = random_model(len(VOCAB))  # read as <unk>: generation goes on
    assert len(generate(model, VOCAB, prime.text, SampleOptions(length=5, seed=0))[0]) == 5
    assert read_prime(VOCAB, "abc", strict=True).warning() is None


def test_prime_file_and_default(tmp_path):
    (tmp_path / "p.txt").write_text("cab\n", encoding="utf-8")
    assert read_prime(VOCAB, path=tmp_path / "p.txt").text == "cab\n"
    assert read_prime(VOCAB, default="fa").text == "fa" and read_prime(VOCAB, "", default="fa").text == ""
    with pytest.raises(RnnlmError, match="no such file"):
        read_prime(VOCAB, path=tmp_path / "missing.txt")
    with pytest.raises(RnnlmError, match="not both"):
        read_prime(VOCAB, "a", tmp_path / "p.txt")


def test_a_prime_that_is_not_utf8_is_an_error():
    # a terminal in another encoding: Python keeps the bytes it cannot decode as lone surrogates
    with pytest.raises(RnnlmError, match=r"^--prime: not UTF-8 text \(character 4 is not\)"):
        read_prime(VOCAB, "caf\udce9")


@pytest.mark.parametrize("kwargs, message", [
    ({"length": 0}, "--length 0"), ({"length": -3}, "--length -3"), ({"temperature": -0.1}, "--temp -0.1"),
    ({"top_p": 0.0}, "--top-p 0.0"), ({"top_p": 1.01}, "--top-p 1.01"), ({"top_k": 0}, "--top-k 0"),
    ({"num_samples": 0}, "--num-samples 0")])
def test_bad_options_are_errors(kwargs, message):
    with pytest.raises(RnnlmError, match=message):
        SampleOptions(**kwargs)


def test_a_stream_model_writes_from_the_state_its_training_carried(tmp_path):
    # A memory of one unit: tanh(2 h) keeps h near 0.96 once it is positive, and stays at 0 from zero.
    # The decoder writes 'b' while the unit is on and 'a' while it is off, so the text shows the start state.
    def memory(model, vocab):
        for p in model.parameters():
            p.zero_()
        model.rnn.weight_hh_l0[0, 0] = 2.0
        model.decoder.weight[vocab.itos.index("b"), 0] = 60.0  # with its bias -30: above a's 10 while h > 2/3
        model.decoder.bias.fill_(-30.0)
        model.decoder.bias[vocab.itos.index("a")] = 10.0

    path = make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="ab\n", cell="rnn", setup=memory)
    point = ckpt.load(path)
    opts = SampleOptions(length=12, temperature=1.0, num_samples=2, seed=0)

    def sample(point):
        out = io.StringIO()
        sample_checkpoint(point, opts, "ab", out)
        return out.getvalue().split("\n---\n")

    assert sample(point) == ["ab" + "a" * 12, "ab" + "a" * 12 + "\n"]  # no carried state: from zero
    carried = torch.zeros(1, 4, 8)
    carried[0, 0, 0] = 3.0  # training's first row ended with the unit on (the other rows do not matter)
    carried[0, 1:, 0] = -3.0
    warm = dataclasses.replace(point, train=ckpt.TrainingState({}, {}, None, {"torch": [], "cuda": []}, carried))
    assert sample(warm) == ["ab" + "b" * 12, "ab" + "b" * 12 + "\n"]
    # random windows: every window was read from zero in training, so sampling starts there too
    cfg = dataclasses.replace(point.config, train=dataclasses.replace(point.config.train, batching="random"))
    assert sample(dataclasses.replace(warm, config=cfg)) == sample(point)


def test_a_draw_of_exactly_zero_never_writes_a_character_of_probability_zero(monkeypatch):
    """One draw in 2**24 is exactly 0: it must land on the first character that can be written, not on a banned
    <eos> (stream) or <unk> before it."""
    logits = torch.tensor([[float("-inf"), float("-inf"), 1.0, 2.0]])
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.zeros(1))
    assert choose(logits, SampleOptions(temperature=1.0), [torch.Generator()]).tolist() == [2]


def test_the_largest_seed_draws_every_sample_of_a_filtered_run(tmp_path):
    """Sample i is seeded seed + i: a seed near 2**63 was refused halfway through a --unique run (its later batches
    start past it) and at a training preview of five records seeded by train.seed = 2**63 - 1."""
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(b=0.0, eos=0.0)))
    top = 2**63 - 1
    out = io.StringIO()
    report = sample_checkpoint(point, SampleOptions(length=50, temperature=1.0, num_samples=5, seed=top), "aab", out,
                               unique=True)
    assert report.samples > 5 and report.written == len(out.getvalue().splitlines()) > 0
    assert len(generate(random_model(len(VOCAB)), VOCAB, "", SampleOptions(length=5, num_samples=5, seed=top))) == 5


def test_a_sample_without_a_seed_leaves_torchs_generator_as_it_was():
    """Drawing the seed from torch.seed() reseeded torch's global generator: a caller's training after it was no
    longer reproducible."""
    model = random_model(len(VOCAB))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    generate(model, VOCAB, "ab", SampleOptions(length=5, temperature=1.0, seed=None))
    assert torch.equal(torch.rand(3), expected)


def test_a_record_cut_by_the_length_limit_is_never_counted_novel():
    """`-N 6 --length 3 --novel` kept fragments ("kee") as new names, and counted them in the novelty figure."""
    import io

    from rnnlm.data.novelty import Known
    from rnnlm.sample import _Printer

    vocab = Vocab.from_texts(["kea"])
    k, e, a = (vocab.itos.index(c) for c in "kea")
    out = io.StringIO()
    printer = _Printer(vocab, "", out, 2, records=True, unique=False, novel=True, training=Known(["ka"]))
    printer.begin(2)
    for step in ([k, k], [e, e], [e, a], [EOS_ID, PAST_THE_CAP]):  # row 0 "kee" whole, row 1 "kea" cut
        printer.step(step)
    printer.finish()
    assert out.getvalue() == "kee\n" and (printer.novel_records, printer.cut) == (1, 1)
    out = io.StringIO()  # a fragment is no name a whole record repeats (--unique dropped "kee", never printed)
    printer = _Printer(vocab, "", out, 2, records=True, unique=True, novel=True, training=Known(["ka"]))
    printer.begin(2)
    for step in ([k, k], [e, e], [e, e], [PAST_THE_CAP, EOS_ID]):  # row 0 "kee" cut, row 1 "kee" whole
        printer.step(step)
    printer.finish()
    assert out.getvalue() == "kee\n" and (printer.novel_records, len(printer.seen)) == (1, 1)


def test_records_cut_by_the_length_limit_count_among_the_distinct_ones():
    """`-N 8 --length 4` printed 8 different names, 6 of them cut, and the summary said "2 distinct": a cut record
    was left out of the distinct count (it is still left out of the novel one)."""
    import io

    from rnnlm.data.novelty import Known
    from rnnlm.sample import SampleReport, _Printer

    vocab = Vocab.from_texts(["kea"])
    k, e, a = (vocab.itos.index(c) for c in "kea")
    out = io.StringIO()
    printer = _Printer(vocab, "", out, 3, records=True, unique=False, novel=False, training=Known([]))
    printer.begin(3)
    for step in ([k, k, k], [e, a, e], [PAST_THE_CAP, PAST_THE_CAP, EOS_ID]):  # "ke", "ka" cut; "ke" whole
        printer.step(step)
    printer.finish()
    assert out.getvalue() == "ke\nka\nke\n"
    report = SampleReport(3, printer.written, True, distinct=len(printer.seen), novel=printer.novel_records,
                          cut=printer.cut, corpus="names")
    assert report.summary() == ("3 records generated, 2 distinct, 1 novel (not in the names training split); 2 reached "
                                "the length limit before <eos> (raise --length)")


def test_novel_records_that_the_validation_or_test_split_holds_are_counted_apart(tmp_path):
    """makemore tells a sample that is a name of its test split from a new one; --novel's count (not in the training
    split) did not say how many of its "novel" names were real names held out from training."""
    (tmp_path / "names.txt").write_text("".join("a" * n + "\n" for n in range(1, 13) if n != 3), encoding="utf-8")
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="names", chars="a",
                                      setup=constant_logits(a=0.0, eos=0.0)))  # a^k, one half as likely as a^(k-1)
    point.config.data.path, point.config.data.splits = str(tmp_path / "names.txt"), (0.4, 0.3, 0.3)
    corpus = load_corpus(point.config.data, point.config.train.seed)
    out = io.StringIO()
    report = sample_checkpoint(point, SampleOptions(length=50, temperature=1.0, num_samples=200, seed=3), "", out)
    records = out.getvalue().split("\n")[:-1]
    novel = [r for r in records if r and r not in set(corpus.train)]
    held_out = sum(r in set(corpus.val) | set(corpus.test) for r in novel)
    assert 0 < held_out < len(novel) and report.novel == len(novel) and report.held_out == held_out
    assert f"{len(novel)} novel (not in the names training split; {held_out} of them in its validation or test " \
           "split)" in report.summary()


def test_too_few_novel_records_because_length_cut_them_says_to_raise_length(tmp_path):
    """Every record ran past --length 2, so --novel kept none: the summary blamed the model repeating itself and
    advised a higher --temp."""
    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", setup=constant_logits(a=0.0, b=0.0)))  # never <eos>
    opts = SampleOptions(length=2, temperature=1.0, num_samples=3, seed=1)
    report = sample_checkpoint(point, opts, "", io.StringIO(), novel=True)
    assert report.written == 0 and report.summary().endswith(
        "fewer than the 3 asked for: after 30 drawn most records dropped were cut by --length before their <eos> "
        "(raise --length)") and report.summary().count("raise --length") == 1
