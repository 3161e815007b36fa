"""The library side of `rnnlm data list|fetch|info`."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot
from rnnlm.data import catalog
from rnnlm.data import linux as linux_mod
from rnnlm.data.catalog import corpus_info, fetch_corpus, format_info, format_listing, list_corpora
from rnnlm.errors import RnnlmError
from corpus_fixtures import data_mirror


@pytest.fixture
def no_installed_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine may have /usr/src/linux-source-*.tar.xz; the tests must not depend on it."""
    monkeypatch.setattr(linux_mod, "SYSTEM_TARBALLS", str(tmp_path / "no-such-dir" / "*.tar.xz"))


def test_list_shows_every_corpus_and_whether_it_is_here(tmp_path: Path, no_installed_kernel: None) -> None:
    mirror = data_mirror()
    root = DataRoot(tmp_path / "data", mirror=mirror)
    before = {e.name: e for e in list_corpora(root)}
    assert set(before) >= {"shakespeare", "names", "linux", "text", "hello", "anbn"}
    assert before["shakespeare"].status == "in mirror" and before["shakespeare"].size == 1115394
    assert before["linux"].status == "download"
    assert before["hello"].status == "built in" and before["text"].status == "your files"
    fetch_corpus(DataConfig(dataset="shakespeare"), root)
    after = {e.name: e for e in list_corpora(root)}
    assert after["shakespeare"].status == "present"
    assert after["shakespeare"].location == str(root.path / "shakespeare" / "input.txt")
    assert "shakespeare" in format_listing(list(after.values()))
    (root.path / "shakespeare" / "input.txt").write_text("edited", encoding="utf-8")
    assert {e.name: e for e in list_corpora(root)}["shakespeare"].status == "changed"  # a run would refuse it


def test_list_names_the_kernel_source_a_run_would_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a pinned release in the mirror and a tarball installed, a run copies the mirror's: list says so."""
    installed = tmp_path / "usr-src" / "linux-source-6.1.tar.xz"
    installed.parent.mkdir()
    installed.write_bytes(b"an installed tarball")
    monkeypatch.setattr(linux_mod, "SYSTEM_TARBALLS", str(installed.parent / "linux-source-*.tar.xz"))
    mirror = tmp_path / "mirror"
    (mirror / linux_mod.KERNEL_RELEASE.relpath).parent.mkdir(parents=True)
    (mirror / linux_mod.KERNEL_RELEASE.relpath).write_bytes(b"the pinned release")
    root = DataRoot(tmp_path / "data", mirror=mirror)
    entry = {e.name: e for e in list_corpora(root)}["linux"]
    # not the published bytes: listed as changed, which a run refuses; where it would come from all the same
    assert (entry.status, entry.location) == ("changed", str(mirror / linux_mod.KERNEL_RELEASE.relpath))
    published = dataclasses.replace(linux_mod.KERNEL_RELEASE, sha256=hashlib.sha256(b"the pinned release").hexdigest())
    monkeypatch.setattr(catalog, "KERNEL_RELEASE", published)
    entry = {e.name: e for e in list_corpora(root)}["linux"]
    assert (entry.status, entry.location) == ("in mirror", str(mirror / linux_mod.KERNEL_RELEASE.relpath))
    assert linux_mod.locate_source(DataConfig(dataset="linux"), DataRoot(tmp_path / "d2")) == installed


def test_fetch_puts_the_checked_file_in_the_data_root(tmp_path: Path) -> None:
    mirror = data_mirror()
    root = DataRoot(tmp_path / "data", mirror=mirror)
    assert fetch_corpus(DataConfig(dataset="names"), root) == (root.path / "names" / "names.txt", "fetched, checksum ok")
    assert fetch_corpus(DataConfig(dataset="names"), root) == (root.path / "names" / "names.txt",
                                                               "already present, checksum ok")  # said, not redone
    assert fetch_corpus(DataConfig(dataset="hello"), root)[0] is None  # built in: nothing to fetch
    with pytest.raises(RnnlmError, match="did you mean 'names'"):
        fetch_corpus(DataConfig(dataset="nmaes"), root)


def test_info_counts_characters_vocabulary_splits_and_records(tmp_path: Path) -> None:
    mirror = data_mirror()
    root = DataRoot(tmp_path / "data", mirror=mirror)
    info = corpus_info(DataConfig(dataset="shakespeare"), 0, root)
    assert info.characters == 1115394 and len(info.vocabulary) == 65
    assert info.vocabulary[0] == (" ", 169892)
    assert info.split_characters == {"train": 1003855, "val": 55770, "test": 55769}
    assert info.split_records is None

    names = corpus_info(DataConfig(dataset="names"), 0, root)
    assert names.records and names.split_records == {"train": 28830, "val": 1602, "test": 1601}
    assert sorted(ch for ch, _ in names.vocabulary) == list("abcdefghijklmnopqrstuvwxyz")
    text = format_info(names)
    assert "32,033" in text and "<eos>" in text


def test_info_of_a_vocabulary_of_thousands_shows_the_most_frequent(tmp_path: Path) -> None:
    """A corpus of 74,882 distinct characters printed 12,485 lines of them."""
    text = tmp_path / "cjk.txt"
    text.write_text("".join(chr(0x4E00 + k) * (1 + (k < 10)) for k in range(3000)), encoding="utf-8")
    info = corpus_info(DataConfig(dataset="text", path=str(text), splits=(1.0, 0.0, 0.0)), 0, DataRoot(tmp_path / "d"))
    lines = format_info(info).splitlines()
    assert len(lines) < 120 and "  ... and 2,400 rarer characters" in lines
    assert repr(chr(0x4E00)) in lines[3]  # the most frequent first
