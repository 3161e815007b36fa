"""`shakespeare` on the real file from the data mirror (../shared/data beside the repo): never the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, load_corpus
from rnnlm.data import shakespeare as shakespeare_mod
from rnnlm.data.download import Remote
from rnnlm.errors import RnnlmError
from corpus_fixtures import data_mirror, refused_url


def test_splits_are_contiguous_spans_of_the_whole_play_text(tmp_path: Path) -> None:
    mirror = data_mirror()
    corpus = load_corpus(DataConfig(dataset="shakespeare"), 0, DataRoot(tmp_path / "data", mirror=mirror))
    text = (mirror / "shakespeare" / "input.txt").read_text(encoding="utf-8")
    assert len(text) == 1115394
    train, val, test = corpus.train[0], corpus.val[0], corpus.test[0]
    assert train + val + test == text
    assert (len(train), len(val), len(test)) == (1003855, 55770, 55769)
    assert (tmp_path / "data" / "shakespeare" / "input.txt").is_file()


def test_max_bytes_keeps_the_start(tmp_path: Path) -> None:
    mirror = data_mirror()
    corpus = load_corpus(DataConfig(dataset="shakespeare", max_bytes=1000, splits=(0.8, 0.1, 0.1)), 0,
                         DataRoot(tmp_path / "data", mirror=mirror))
    assert "".join(corpus.train + corpus.val + corpus.test) == (mirror / "shakespeare" / "input.txt").read_text()[:1000]


def test_offline_with_no_mirror_the_loader_says_how_to_get_the_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    offline_url = refused_url()
    offline = Remote("shakespeare/input.txt", offline_url, shakespeare_mod.SHAKESPEARE.sha256)
    monkeypatch.setattr(shakespeare_mod, "SHAKESPEARE", offline)
    with pytest.raises(RnnlmError) as e:
        load_corpus(DataConfig(dataset="shakespeare"), 0, DataRoot(tmp_path / "data"))
    message = str(e.value)
    assert len(message.splitlines()) <= 5
    assert str(tmp_path / "data" / "shakespeare" / "input.txt") in message and "RNNLM_DATA_MIRROR" in message
