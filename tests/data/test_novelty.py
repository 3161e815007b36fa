"""`rnnlm sample --novel`'s question, whether a record is one of the training split's, answered from hashes."""

from __future__ import annotations

import random
from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, open_corpus
from rnnlm.data import novelty
from rnnlm.data.novelty import SplitRecords
from corpus_fixtures import data_mirror


def test_the_training_names_are_in_and_nothing_else_is(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(novelty, "CHUNK", 1000)  # hashed a few hundred records at a time
    store = open_corpus(DataConfig(dataset="names"), 1337, DataRoot(tmp_path / "data", mirror=data_mirror()),
                        progress=False)
    train = set(store.record_texts("train"))
    seen = SplitRecords(store, "train")
    assert all(name in seen for name in train)
    rng = random.Random(0)
    others = [name for name in store.record_texts("val") if name not in train]
    others += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(5000)]
    others += ["", "émile", "a" * 60, "anna" + "\n"]  # empty, a character names lack, longer than any, a newline
    assert [name for name in others if name not in train and name in seen] == []
    assert "anna" in seen and "Anna" not in seen  # exact, not a loose match


def test_an_empty_split_holds_nothing(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("alpha\nbeta\n", encoding="utf-8")
    cfg = DataConfig(dataset="names", path=str(words), splits=(1.0, 0.0, 0.0))
    store = open_corpus(cfg, 0, DataRoot(tmp_path / "data"), progress=False)
    assert "alpha" in SplitRecords(store, "train") and "alpha" not in SplitRecords(store, "val")


def test_records_whose_hashes_collide_are_told_apart(tmp_path: Path) -> None:
    """A Thue-Morse string and its complement share their hash modulo 2^64 whatever the base: a match is confirmed
    against the store, so the complement is still novel."""
    bits = [0]
    while len(bits) < 1024:
        bits += [1 - b for b in bits]
    record, complement = "".join("ab"[b] for b in bits), "".join("ba"[b] for b in bits)
    words = tmp_path / "words.txt"
    words.write_text(f"{record}\nab\nba\n", encoding="utf-8")
    cfg = DataConfig(dataset="names", path=str(words), splits=(1.0, 0.0, 0.0))
    seen = SplitRecords(open_corpus(cfg, 0, DataRoot(tmp_path / "data"), progress=False), "train")
    assert record in seen and complement not in seen and "ab" in seen and "aab" not in seen
