import torch
from hypothesis import given
from hypothesis import strategies as st

from rnnlm.vocab import EOS_ID, UNK_ID, Vocab


def test_specials_come_first_and_characters_are_sorted():
    v = Vocab.from_texts(["hello"])
    assert v.itos == ("<eos>", "<unk>", "e", "h", "l", "o")


def test_unseen_characters_become_unk():
    v = Vocab.from_texts(["hello"])
    assert v.encode("help").tolist() == [3, 2, 4, UNK_ID]
    assert v.unknown("help!p") == ["p", "!"]


def test_records_are_read_from_eos_and_end_in_eos():
    v = Vocab.from_texts(["ab"])
    assert v.encode_records(["ab", "b"]).tolist() == [EOS_ID, 2, 3, EOS_ID, 3, EOS_ID]


@given(st.text())
def test_encode_decode_round_trip_on_arbitrary_unicode(text):
    v = Vocab.from_texts([text])
    assert v.decode(v.encode(text).tolist()) == text


@given(st.lists(st.text(min_size=0, max_size=8), max_size=10))
def test_encode_records_matches_a_plain_loop(records):
    v = Vocab.from_texts(records)
    expected = [EOS_ID]
    for r in records:
        expected += v.encode(r).tolist() + [EOS_ID]
    assert v.encode_records(records).tolist() == expected
    assert v.encode_records(records).dtype == torch.long
