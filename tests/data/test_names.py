"""`names` on the real file from the data mirror (../shared/data beside the repo): never the network."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, load_corpus
from rnnlm.data.download import sha256_file
from rnnlm.data.names import NAMES
from corpus_fixtures import data_mirror



def load(tmp_path: Path, mirror: Path, seed: int = 1337) -> tuple[list[str], list[list[str]]]:
    corpus = load_corpus(DataConfig(dataset="names"), seed, DataRoot(tmp_path / "data", mirror=mirror))
    assert corpus.records
    lines = (mirror / "names" / "names.txt").read_text(encoding="utf-8").splitlines()
    return lines, [corpus.train, corpus.val, corpus.test]


def test_every_name_is_one_record_in_exactly_one_split(tmp_path: Path) -> None:
    mirror = data_mirror()
    lines, splits = load(tmp_path, mirror)
    assert len(lines) == 32033
    assert [len(s) for s in splits] == [28830, 1602, 1601]
    # Disjoint and complete as records: the three splits together are the file's lines, each used once
    # (the file lists 2,539 names twice, for boys and for girls; both copies are records).
    assert sum((Counter(s) for s in splits), Counter()) == Counter(lines)
    assert all(record and "\n" not in record and "<eos>" not in record for s in splits for record in s)


def test_the_seed_decides_the_shuffle(tmp_path: Path) -> None:
    mirror = data_mirror()
    _, a = load(tmp_path, mirror, seed=1)
    _, b = load(tmp_path, mirror, seed=1)
    _, c = load(tmp_path, mirror, seed=2)
    assert a == b and a != c


def test_the_copy_in_the_data_root_is_the_published_file(tmp_path: Path) -> None:
    mirror = data_mirror()
    load(tmp_path, mirror)
    assert sha256_file(tmp_path / "data" / NAMES.relpath) == NAMES.sha256


def test_every_record_ends_in_eos_when_encoded(tmp_path: Path) -> None:
    mirror = data_mirror()
    from rnnlm.vocab import EOS_ID, Vocab

    _, (train, _, _) = load(tmp_path, mirror)
    vocab = Vocab.from_texts(train)
    ids = vocab.encode_records(train[:50]).tolist()
    assert ids.count(EOS_ID) == 51 and ids[-1] == EOS_ID  # one before the first record, one after each
