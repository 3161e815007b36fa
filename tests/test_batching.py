import copy

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnlm.batching import (IGNORE, RandomWindows, RecordBatches, Records, SequentialStreams, Tokens, WindowLengths,
                            pad_records, truncate)
from rnnlm.errors import RnnlmError
from rnnlm.vocab import EOS_ID


def lengths(seq_len, bptt="fixed", seed=0):
    return WindowLengths(seq_len, bptt, torch.Generator().manual_seed(seed))


def test_sequential_streams_continue_each_row_exactly():
    tokens = torch.arange(100)
    b = SequentialStreams(tokens, 4, lengths(5), torch.Generator().manual_seed(0))
    first, second = b.next(), b.next()
    offset = int(first.inputs[0, 0])
    row_len = (100 - offset - 1) // 4
    assert 0 <= offset < 5
    # row r starts at offset + r * row_len; minibatch 2 continues where minibatch 1 stopped
    for r in range(4):
        start = offset + r * row_len
        assert first.inputs[r].tolist() == list(range(start, start + 5))
        assert second.inputs[r].tolist() == list(range(start + 5, start + 10))
    assert torch.equal(first.targets, first.inputs + 1)
    assert not first.carry and second.carry


def test_sequential_epoch_covers_each_stream_contiguously_then_restarts():
    tokens = torch.arange(50)
    b = SequentialStreams(tokens, 3, lengths(4), torch.Generator().manual_seed(1))
    rows = [[] for _ in range(3)]
    batch = b.next()
    while batch.epoch == 0:
        for r in range(3):
            rows[r] += batch.inputs[r].tolist()
        batch = b.next()
    assert not batch.carry  # a new epoch starts from a zero state
    for r in range(3):
        assert rows[r] == list(range(rows[r][0], rows[r][0] + len(rows[r])))  # contiguous
    assert rows[0][-1] < rows[1][0] and rows[1][-1] < rows[2][0]  # disjoint, in order


def test_random_windows_are_shifted_by_one_and_reset_the_state():
    tokens = torch.arange(1000)
    b = RandomWindows(tokens, 8, lengths(10), torch.Generator().manual_seed(0))
    batch = b.next()
    assert batch.inputs.shape == (8, 10)
    assert torch.equal(batch.targets, batch.inputs + 1)
    assert not batch.carry
    diffs = batch.inputs[:, 1:] - batch.inputs[:, :-1]
    assert bool((diffs == 1).all())  # each window is a contiguous span


def test_random_windows_read_every_grid_window_once_per_epoch():
    tokens = torch.arange(203)
    b = RandomWindows(tokens, 2, lengths(10), torch.Generator().manual_seed(3))
    starts = []
    batch = b.next()
    while batch.epoch == 0:
        starts += batch.inputs[:, 0].tolist()
        batch = b.next()
    offset = min(starts) % 10
    grid = range(offset, 203 - 1 - 10, 10)  # every window start that fits, 10 apart from the epoch's offset
    assert len(set(starts)) == len(starts) and set(starts) <= set(grid)
    assert len(starts) == len(grid) // 2 * 2  # all of them but the last partial minibatch's


def test_random_bptt_varies_the_length_around_seq_len():
    w = lengths(20, "random", seed=5)
    drawn = [w.draw() for _ in range(400)]
    assert len(set(drawn)) > 3
    assert 17 <= sum(drawn) / len(drawn) <= 21
    assert min(drawn) >= 1 and max(drawn) <= 40


def test_record_batches_pad_and_mask():
    inputs, targets = pad_records([torch.tensor([5, 6]), torch.tensor([7])])
    assert inputs.tolist() == [[EOS_ID, 5, 6], [EOS_ID, 7, EOS_ID]]
    assert targets.tolist() == [[5, 6, EOS_ID], [7, EOS_ID, IGNORE]]


def test_record_batches_visit_every_record_once_per_epoch():
    records = [torch.tensor([i + 2]) for i in range(10)]
    b = RecordBatches(records, 5, torch.Generator().manual_seed(0), torch.device("cpu"))
    seen = b.next().inputs[:, 1].tolist() + b.next().inputs[:, 1].tolist()
    assert sorted(seen) == list(range(2, 12))
    assert b.next().epoch == 1


def test_too_small_corpus_is_a_clear_error():
    with pytest.raises(RnnlmError, match="too few for train.batch_size=64"):
        SequentialStreams(torch.arange(100), 64, lengths(16), torch.Generator())
    with pytest.raises(RnnlmError, match="lower train.batch_size or train.seq_len"):
        RandomWindows(torch.arange(100), 8, lengths(16), torch.Generator())


def test_truncate_keeps_values_and_cuts_the_graph():
    h = torch.ones(2, 3, requires_grad=True) * 2
    state = truncate((h, h + 1))
    assert not state[0].requires_grad and torch.equal(state[1], h.detach() + 1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(30, 300), batch=st.integers(1, 4), seq=st.integers(1, 8), bptt=st.sampled_from(["fixed", "random"]),
       kind=st.sampled_from([SequentialStreams, RandomWindows]), seed=st.integers(0, 99))
def test_targets_are_inputs_shifted_and_stay_inside_the_split(n, batch, seq, bptt, kind, seed):
    tokens = torch.arange(n)
    # what each batcher needs (too little is an error, tested above): every stream one window, or B windows
    assume((n - seq) // batch >= seq if kind is SequentialStreams else (n - seq) // seq >= batch)
    b = kind(tokens, batch, lengths(seq, bptt, seed), torch.Generator().manual_seed(seed))
    previous = None
    for _ in range(30):
        x = b.next()
        assert torch.equal(x.targets, x.inputs + 1)
        assert int(x.inputs.min()) >= 0 and int(x.targets.max()) < n
        if x.carry:  # sequential: each row picks up exactly where it stopped, so carrying its state is right
            assert kind is SequentialStreams and torch.equal(x.inputs[:, 0], previous.targets[:, -1])
        previous = x


@pytest.mark.parametrize("seq", [1, 2, 3, 8])
def test_a_random_window_as_long_as_the_split_reads_inside_it(seq):
    """A split of 2T ids passes the size check, and a random bptt length may be drawn up to 2T: that window
    wrapped around the text's end (inputs [3, 0, 1, 2] for targets [0, 1, 2, 3])."""
    generator = torch.Generator().manual_seed(0)
    b = RandomWindows(Tokens(torch.arange(2 * seq)), 1, WindowLengths(seq, "random", generator), generator)
    for _ in range(200):
        x = b.next()
        assert torch.equal(x.targets, x.inputs + 1) and int(x.inputs.min()) >= 0


@settings(max_examples=40, deadline=None)
@given(lengths_=st.lists(st.integers(1, 9), min_size=1, max_size=25), batch=st.integers(1, 6), seed=st.integers(0, 99))
def test_padded_record_batches_predict_each_record_then_eos_and_nothing_else(lengths_, batch, seed):
    records = [torch.full((k,), 2 + i) for i, k in enumerate(lengths_)]  # record i: k copies of id 2 + i
    if batch > len(records):
        counted = f"has {len(records)} record{'s' * (len(records) > 1)}, fewer than train.batch_size={batch}"
        with pytest.raises(RnnlmError, match=counted):
            RecordBatches(records, batch, torch.Generator().manual_seed(seed), torch.device("cpu"))
        return
    b = RecordBatches(records, batch, torch.Generator().manual_seed(seed), torch.device("cpu"))
    for _ in range(12):
        x = b.next()
        scored = x.targets != IGNORE
        assert x.chars == int(scored.sum())  # what the loss is divided by
        assert torch.equal(x.inputs[:, 0], torch.full((batch,), EOS_ID))  # each record is read from <eos>
        assert torch.equal(x.inputs[:, 1:][scored[:, :-1]], x.targets[:, :-1][scored[:, :-1]])  # shifted by one
        for row in range(batch):
            target = x.targets[row][scored[row]].tolist()
            assert target[-1] == EOS_ID and target[:-1] == records[target[0] - 2].tolist()  # one whole record
            assert scored[row, :len(target)].all() and not scored[row, len(target):].any()  # then only padding


def test_state_dict_resumes_the_same_batches():
    tokens = torch.arange(500)
    gen = torch.Generator().manual_seed(2)
    a = RandomWindows(tokens, 4, WindowLengths(7, "random", gen), gen)
    for _ in range(9):
        a.next()
    saved = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()}
    expected = [a.next().inputs for _ in range(30)]
    gen = torch.Generator()
    b = RandomWindows(tokens, 4, WindowLengths(7, "random", gen), gen)
    b.load_state_dict(saved)
    assert all(torch.equal(e, b.next().inputs) for e in expected)


@pytest.mark.parametrize("kind", [SequentialStreams, RandomWindows])
def test_batches_from_the_store_equal_batches_from_encoded_text(tmp_path, kind):
    """The store's memory map through its lookup gives the very minibatches the encoded text gave before it."""
    from rnnlm.config import load_config
    from rnnlm.data import DataRoot, open_corpus

    text = "".join(chr(97 + (i * i) % 23) for i in range(20_000))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    cfg = load_config(None, ["data.dataset=text", f"data.path={tmp_path / 't.txt'}"])
    store = open_corpus(cfg.data, 0, DataRoot(tmp_path / "data"), progress=False)
    vocab = store.vocab()
    from_store = Tokens(store.ids("train"), store.lut(vocab))
    in_memory = vocab.encode(text[:store.manifest["splits"]["train"]["characters"]])
    a = kind(from_store, 8, lengths(20, "random", seed=3), torch.Generator().manual_seed(3))
    b = kind(in_memory, 8, lengths(20, "random", seed=3), torch.Generator().manual_seed(3))
    for _ in range(200):
        x, y = a.next(), b.next()
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets) and x.carry == y.carry


def test_record_batches_read_records_from_the_store(tmp_path):
    from rnnlm.config import load_config
    from rnnlm.data import DataRoot, open_corpus

    names = [f"n{k}" * (1 + k % 3) for k in range(100)]
    (tmp_path / "n.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    cfg = load_config(None, ["data.dataset=names", f"data.path={tmp_path / 'n.txt'}"])
    store = open_corpus(cfg.data, 0, DataRoot(tmp_path / "data"), progress=False)
    vocab = store.vocab()
    records = Records(Tokens(store.ids("train"), store.lut(vocab)), store.offsets("train"))
    assert [vocab.decode(records[k].tolist()) for k in range(len(records))] == store.record_texts("train")
    batch = RecordBatches(records, 4, torch.Generator().manual_seed(0)).next()
    drawn = [vocab.decode([t for t in row.tolist() if t != IGNORE]).rstrip("\n") for row in batch.targets]
    assert len(set(drawn)) == 4 and set(drawn) <= set(store.record_texts("train"))
    assert (batch.inputs[:, 0] == EOS_ID).all()


@pytest.mark.parametrize("n", [40, 41, 43, 500])
def test_an_epoch_of_random_windows_reads_to_the_end_but_less_than_a_window(n):
    """The grid of window starts left out its last start: with 40 ids and windows of 4 from offset 3, the window
    predicting ids 36..39 was never read."""
    gen = torch.Generator().manual_seed(0)
    windows = RandomWindows(torch.arange(n), 1, WindowLengths(4, "fixed", gen), gen)
    for _ in range(6):  # six epochs, six offsets drawn
        first = windows.next()
        targets = [first.targets] + [windows.next().targets for _ in range(len(windows.order) - 1)]
        read = torch.cat(targets, 1).flatten()
        assert len(set(read.tolist())) == len(read)  # each id predicted once in an epoch
        assert n - 1 - int(read.max()) < 4 and int(read.min()) <= 4  # all but less than a window at either end


@pytest.mark.parametrize("kind", ["windows", "records"])
def test_a_checkpoint_keeps_where_an_epoch_started_not_its_order(kind):
    """The order of a billion characters' windows is 80 MB in every checkpoint: what is kept is the generator's
    state at the epoch's start, from which a resume draws the same order, across epochs too; a state written with
    the order itself (before) resumes as it did, and passes its order on."""
    def make():
        gen = torch.Generator().manual_seed(5)
        if kind == "windows":
            return RandomWindows(torch.arange(20_000), 8, WindowLengths(10, "random", gen), gen)
        return RecordBatches([torch.full((1 + i % 5,), 2 + i) for i in range(300)], 8, gen)

    a = make()
    for _ in range(3 * len(a.order) // 8 + 5):  # into the fourth epoch
        a.next()
    saved = copy.deepcopy(a.state_dict())
    assert "order" not in saved and sum(v.numel() for v in saved.values() if isinstance(v, torch.Tensor)) < 20_000
    before = copy.deepcopy({**saved, "order": a.order})
    del before["epoch_start"]
    expected = [a.next().inputs for _ in range(2 * len(a.order) // 8)]  # into the sixth
    for state in (saved, before):
        b = make()
        b.load_state_dict(state)
        assert all(torch.equal(e, b.next().inputs) for e in expected[:5])
        c = make()
        c.load_state_dict(copy.deepcopy(b.state_dict()))
        assert all(torch.equal(e, c.next().inputs) for e in expected[5:])
