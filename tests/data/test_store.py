"""The prepared token store: exact round trips, the smallest integer type, record boundaries, and stores that are
stale, damaged, prepared twice at once or interrupted."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import shutil
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, measured
from rnnlm.atomic import exclusive
from rnnlm.config import load_config
from rnnlm.data import DataRoot, load_corpus, open_corpus, source_for
from rnnlm.data import store as store_mod
from rnnlm.errors import RnnlmError
from rnnlm.vocab import EOS_ID, UNK_ID


def text_cfg(path: Path, *more: str):
    return load_config(None, ["data.dataset=text", f"data.path={path}", *more]).data


def open_text(tmp_path: Path, text: str, *more: str, name: str = "corpus.txt"):
    """The store of `text`, written to a file first unless the file already holds it."""
    path = tmp_path / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return open_corpus(text_cfg(path, *more), 0, DataRoot(tmp_path / "data"), progress=False)


def test_every_split_reads_back_exactly_and_in_the_old_proportions(tmp_path):
    text = "".join(chr(0x41 + (i * 7919) % 26) + ("é" if i % 17 == 0 else "") + ("\n" if i % 61 == 0 else "")
                   for i in range(5000))
    store = open_text(tmp_path, text)
    n = len(text)
    a = round(n * 0.9)
    b = a + round(n * 0.05)
    assert [store.text(s) for s in ("train", "val", "test")] == [text[:a], text[a:b], text[b:]]
    assert store.manifest["splits"]["train"]["characters"] == a
    assert sum(store.counts["val"].values()) == b - a


def test_chunks_cut_anywhere_give_the_same_store(tmp_path, monkeypatch):
    """Text is read in chunks and pieces that may split a multi-byte character: the store does not depend on it."""
    text = "αβγ δ€𝄞 " * 3000
    whole = open_text(tmp_path, text)
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 37)
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "PIECE_BYTES", 11)
    again = open_text(tmp_path, text, "data.max_bytes=1000000")  # other settings: another store, built in pieces
    assert again.folder != whole.folder
    assert [again.text(s) for s in ("train", "val", "test")] == [whole.text(s) for s in ("train", "val", "test")]
    assert again.symbols == whole.symbols
    assert again.counts == whole.counts == {s: dict(Counter(whole.text(s))) for s in ("train", "val", "test")}


def test_the_smallest_integer_type_that_holds_the_symbols(tmp_path, monkeypatch):
    assert open_text(tmp_path, "abc" * 100, name="a.txt").ids("train").dtype == np.uint8
    many = "".join(chr(0x4E00 + k) for k in range(300)) * 3  # 300 CJK characters: more than 255 symbols
    store = open_text(tmp_path, many, name="b.txt")
    assert store.ids("train").dtype == np.uint16 and store.text("train") + store.text("val") + store.text(
        "test") == many
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "PIECE_BYTES", 11)  # pieces of plain ASCII among the rest: read as bytes
    mixed = "plain ascii text\n" * 50 + many + "more ascii ~{|}\n" * 50
    store = open_text(tmp_path, mixed, name="c.txt")
    assert store.ids("train").dtype == np.uint16
    assert store.text("train") + store.text("val") + store.text("test") == mixed


def test_the_model_vocabulary_is_the_training_characters_and_others_read_as_unk(tmp_path):
    store = open_text(tmp_path, "ab" * 100 + "z" * 20)  # z only past the training span
    vocab = store.vocab()
    assert vocab.itos == ("<eos>", "<unk>", "a", "b")
    ids = store.lut(vocab)[np.asarray(store.ids("test"))]
    assert set(ids.tolist()) == {UNK_ID}


def test_records_keep_their_boundaries_and_the_old_shuffle(tmp_path):
    names = [f"name{k:03d}" for k in range(200)]
    (tmp_path / "n.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    cfg = load_config(None, ["data.dataset=names", f"data.path={tmp_path / 'n.txt'}"]).data
    store = open_corpus(cfg, 7, DataRoot(tmp_path / "data"), progress=False)
    import random
    shuffled = list(names)
    random.Random(7).shuffle(shuffled)  # how records were split before the store
    assert store.record_texts("train") + store.record_texts("val") + store.record_texts("test") == shuffled
    ids, offsets = np.asarray(store.ids("val")), store.offsets("val")
    assert (ids[offsets] == EOS_ID).all() and len(offsets) == len(store.record_texts("val")) + 1
    first = "".join(store.symbols[i] for i in ids[offsets[0] + 1:offsets[1]])
    assert first == store.record_texts("val")[0]


def test_records_gathered_in_small_pieces_read_back_in_the_old_shuffle(tmp_path, monkeypatch):
    """Records are gathered from the file in chunks of a few records: with chunks of 3 records or 16 bytes, CRLF
    endings, a CR inside a record, characters of 1-4 bytes and no final newline, every split is still the records
    shuffled as a list of strings was, each character counted once."""
    monkeypatch.setattr(store_mod, "GATHER_RECORDS", 3)
    monkeypatch.setattr(store_mod, "GATHER_BYTES", 16)
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 8)
    kinds = ["émile", "zoë\rx", "日本", "a" * 40, "😀", "ab"]
    names = [kinds[k % len(kinds)] + str(k) for k in range(301)]
    (tmp_path / "n.txt").write_bytes("\r\n".join(names).encode())
    cfg = load_config(None, ["data.dataset=names", f"data.path={tmp_path / 'n.txt'}"]).data
    store = open_corpus(cfg, 3, DataRoot(tmp_path / "data"), progress=False)
    import random
    shuffled = list(names)
    random.Random(3).shuffle(shuffled)
    splits = [store.record_texts(s) for s in ("train", "val", "test")]
    assert splits[0] + splits[1] + splits[2] == shuffled and [len(s) for s in splits] == [271, 15, 15]
    for split, records in zip(("train", "val", "test"), splits):
        ids, offsets = np.asarray(store.ids(split)), store.offsets(split)
        assert (ids[offsets] == EOS_ID).sum() == len(offsets) == len(records) + 1 == (ids == EOS_ID).sum()
        assert store.counts[split] == dict(sorted(Counter("".join(records)).items()))


def test_a_line_corpus_is_prepared_in_a_few_bytes_a_character(tmp_path):
    """Preparing a line corpus holds its records' bounds and order (a few bytes a record) and the file's pages,
    not a Python string per record: 2 million short records cost less than 8 bytes a character at the peak."""
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text("ab\ncd\n", encoding="ascii")
    digits = np.char.zfill(np.arange(2_000_000).astype("U7"), 7).astype("S7")  # 0000000 ... 1999999
    big.write_bytes(np.char.add(digits, b"\n").tobytes())
    peaks = []
    for path in (small, big):
        result, peak = measured("data", "info", "names", f"data.path={path}", "--data-dir", tmp_path / path.stem)
        assert result[0] == 0, result[2]
        peaks.append(peak)
    assert (peaks[1] - peaks[0]) * 2**20 / big.stat().st_size < 8


def test_many_small_files_with_rare_characters_cost_no_table_per_file(tmp_path):
    """Each file's characters were counted into a table of every code point below its highest (1.1 M entries for a
    file with one character of the last plane), and an ASCII file's with torch, imported for it: 8.6 s and 257 MB
    for 3,000 such files, where one table of the characters present costs nothing."""
    small, many = tmp_path / "small", tmp_path / "many"
    for folder, count in ((small, 2), (many, 600)):
        folder.mkdir()
        for k in range(count):
            (folder / f"{k:04d}.txt").write_text("hello world " if k % 2 and folder == many else "h\U0010FFFD ",
                                                 encoding="utf-8")
    peaks = []
    for folder in (small, many):
        result, peak = measured("data", "info", "text", f"data.path={folder}", "--data-dir", tmp_path / folder.name)
        assert result[0] == 0, result[2]
        peaks.append(peak)
    assert peaks[1] - peaks[0] < 40, peaks  # MB: torch alone is about 170


@pytest.mark.parametrize("splits", ["[0.9,0.1,0.0]", "[0.5,0.5,0.0]"])
def test_split_fractions_that_round_up_stay_within_the_text(tmp_path, splits):
    """0.9 and 0.1 of 20015 characters round to 18014 and 2002, one past the end: val counted a character it did
    not hold and test had -1 (reading it raised)."""
    for n in (20015, 7):
        store = open_text(tmp_path, "abcdefg" * (n // 7) + "abcdefg"[:n % 7], f"data.splits={splits}",
                          name=f"{n}.txt")
        sizes = [store.manifest["splits"][s]["symbols"] for s in ("train", "val", "test")]
        assert sum(sizes) == n and min(sizes) >= 0
        assert [len(store.ids(s)) for s in ("train", "val", "test")] == sizes


def test_a_store_prepared_again_while_a_run_reads_it_reads_as_it_was(tmp_path):
    """A run maps its store's splits; another run prepares the store again (the text was edited) or `data clean`
    removes it: the first run's validation split, mapped at its first evaluation, came from the new store (wrong
    characters, or an index out of bounds) or was gone."""
    old = "abcdefghij" * 1000
    store = open_text(tmp_path, old)
    store.ids("train")  # what a trainer reads at its start
    edited = "ÄÖÜ" * 300 + "".join(chr(0x4E00 + i) for i in range(400)) * 20
    again = open_text(tmp_path, edited)
    assert again.folder == store.folder and again.text("val") != store.text("val")
    assert store.text("val") == old[round(len(old) * 0.9):round(len(old) * 0.95)]
    shutil.rmtree(again.folder)
    assert store.text("test") == old[round(len(old) * 0.95):]


def test_a_lock_file_removed_while_a_build_waits_on_it_still_keeps_builds_apart(tmp_path):
    """`rnnlm data clean` removes the lock file of a store that is gone, holding it; a build already waiting on
    that file then locked the removed file, while the next build locked a new one: two builds of one store at once
    (one removed the other's temporary folder)."""
    lock = tmp_path / ".store-k.lock"
    inside: list[tuple[str, float, float]] = []

    def build(name: str) -> None:
        with exclusive(lock):
            start = time.monotonic()
            time.sleep(0.3)
            inside.append((name, start, time.monotonic()))

    clean = open(lock, "a+")
    fcntl.flock(clean, fcntl.LOCK_EX)
    waiting = threading.Thread(target=build, args=("waiting",))
    waiting.start()
    time.sleep(0.2)  # it has opened the file and waits for the lock
    lock.unlink()
    fcntl.flock(clean, fcntl.LOCK_UN)
    clean.close()
    later = threading.Thread(target=build, args=("later",))
    later.start()
    waiting.join()
    later.join()
    (_, a0, a1), (_, b0, b1) = sorted(inside, key=lambda t: t[1])
    assert a1 <= b0, inside  # one after the other


def test_a_changed_source_is_prepared_again(tmp_path, capsys):
    path = tmp_path / "corpus.txt"
    path.write_text("one " * 200, encoding="utf-8")
    root = DataRoot(tmp_path / "data")
    first = open_corpus(text_cfg(path), 0, root, progress=False)
    assert first.text("train").startswith("one")
    path.write_text("two " * 300, encoding="utf-8")
    again = open_corpus(text_cfg(path), 0, root, progress=False)
    assert again.text("train").startswith("two") and again.folder == first.folder
    assert "changed since" in capsys.readouterr().err
    assert len(list((root.path / "text").glob("store-*"))) == 1  # rebuilt in place, no stale copy


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "manifest list", "manifest without files",
                                    "negative split", "manifest without dtype", "manifest without corpus",
                                    "manifest without records"])
def test_a_damaged_store_is_noticed_and_prepared_again(tmp_path, capsys, damage):
    text = "hello world, " * 500
    store = open_text(tmp_path, text)
    ids = store.folder / "train.ids"
    if damage == "truncate":
        os.truncate(ids, ids.stat().st_size // 2)
    elif damage == "flip":
        raw = bytearray(ids.read_bytes())
        raw[100] ^= 0xFF
        ids.write_bytes(bytes(raw))
    elif damage == "manifest":
        (store.folder / "manifest.json").write_text("{not json", encoding="utf-8")
    elif damage == "manifest list":
        (store.folder / "manifest.json").write_text("[]", encoding="utf-8")
    else:  # "negative split": what an older rnnlm's rounding wrote (see the test above)
        manifest = json.loads((store.folder / "manifest.json").read_text(encoding="utf-8"))
        if damage.startswith("manifest without"):
            del manifest[damage.split()[-1]]
        else:
            manifest["splits"]["test"]["symbols"] = -1
        (store.folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    again = open_text(tmp_path, text)
    assert again.text("train") + again.text("val") + again.text("test") == text
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "preparing it again" in err and any(
        w in err for w in ("damaged", "manifest", "negative"))


def test_a_stopped_preparation_leaves_nothing_that_is_trusted(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("abc " * 1000, encoding="utf-8")
    root = DataRoot(tmp_path / "data")
    real = store_mod._write_symbols

    def interrupted(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_write_symbols", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_corpus(text_cfg(path), 0, root, progress=False)
    assert not list((root.path / "text").glob("store-*"))  # nothing in place, and no temporary folder left
    assert not list((root.path / "text").glob(".store-*.tmp-*"))
    monkeypatch.setattr(store_mod, "_write_symbols", real)
    assert open_corpus(text_cfg(path), 0, root, progress=False).text("train").startswith("abc ")


def _open_in_a_process(args: tuple[str, str, int]) -> tuple[str, list[int]]:
    path, data, _ = args
    store = open_corpus(text_cfg(Path(path)), 0, DataRoot(Path(data)), progress=False)
    return store.text("train")[:20], np.asarray(store.ids("train")[:50]).tolist()


def test_two_processes_preparing_one_store_at_once_agree(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox " * 20000, encoding="utf-8")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_open_in_a_process, [(str(path), str(tmp_path / "data"), k) for k in range(3)])
    assert len({repr(r) for r in results}) == 1
    stores = list((tmp_path / "data" / "text").glob("store-*"))
    assert len(stores) == 1 and not list((tmp_path / "data" / "text").glob(".store-*.tmp-*"))


def test_ctrl_c_while_preparing_then_a_later_run_prepares_it(tmp_path):
    """A real process interrupted part way through preparing leaves a temporary folder at most, which the next
    run removes before it prepares the store. The child stops at its writing pass until the signal comes (a fast
    preparation could otherwise finish first on a busy machine), in short sleeps: a signal the kernel hands to
    another thread reaches Python's handler only when the main thread next runs bytecode."""
    path = tmp_path / "big.txt"
    path.write_text("abcdefghij" * 300_000, encoding="utf-8")
    data, ready = tmp_path / "data", tmp_path / "writing"
    # A shell that starts the suite in the background (CI's `... &`) passes SIGINT ignored; Ctrl-C at a terminal is
    # Python's default handler, which the child puts back.
    script = ("import signal, sys, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from pathlib import Path; from rnnlm.config import load_config; "
              "from rnnlm.data import DataRoot, open_corpus, store; "
              f"store._encode = lambda *a, **k: (Path('{ready}').touch(), [time.sleep(0.1) for _ in range(1200)]); "
              f"open_corpus(load_config(None, ['data.dataset=text', 'data.path={path}']).data, 0, DataRoot(Path('{data}')), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ready.exists():
        time.sleep(0.01)
    assert list((data / "text").glob(".store-*.tmp-*")), "the child never began to write"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list((data / "text").glob("store-*"))
    store = open_corpus(text_cfg(path), 0, DataRoot(data), progress=False)
    assert store.manifest["splits"]["train"]["characters"] == 2_700_000
    assert not list((data / "text").glob(".store-*.tmp-*"))


def test_a_prepared_store_is_opened_without_reading_the_text_again(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("some text " * 1000, encoding="utf-8")
    root = DataRoot(tmp_path / "data")
    open_corpus(text_cfg(path), 0, root, progress=False)
    source = source_for(text_cfg(path), 0, root)
    assert store_mod._problem(root.path / "text" / f"store-{store_mod.store_key(source)}", source) is None
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "text_pieces", lambda *a: pytest.fail("the text was read again"))
    assert open_corpus(text_cfg(path), 0, root, progress=False).text("val")


def test_load_corpus_gives_the_splits_as_text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("xyz" * 1000, encoding="utf-8")
    corpus = load_corpus(text_cfg(path), 0, DataRoot(tmp_path / "data"))
    assert "".join(corpus.train + corpus.val + corpus.test) == "xyz" * 1000


def mount(*args: str) -> bool:
    """Whether `mount ARGS` worked: it needs root (CI's container has it)."""
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        (tmp_path / "big.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 5000, encoding="utf-8")
        with pytest.raises(RnnlmError) as failed:
            open_corpus(text_cfg(tmp_path / "big.txt"), 0, DataRoot(disk / "data"), progress=False)
        assert str(failed.value).startswith(f"cannot write the corpus store in {disk / 'data' / 'text'}: No space "
                                            "left on device; free space, or point --data-dir")
        assert [p.name for p in (disk / "data" / "text").iterdir() if not p.name.endswith(".lock")] == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("error, advice", [(errno.ENOSPC, "No space left on device; free space, or point"),
                                           (errno.EFBIG, "File too large; raise the file size limit (ulimit -f), or "
                                                         "point")])
def test_a_store_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, error, advice):
    """A full disk (or a quota) when the store's temporary folder is made was a traceback; it is the message the
    same failure one file later gives. A file size limit (ulimit -f) was told to free space."""
    (tmp_path / "t.txt").write_text("some text to prepare\n" * 50, encoding="utf-8")
    made = Path.mkdir

    def full(self, *args, **kwargs):
        if self.name.startswith(".store-"):
            raise OSError(error, os.strerror(error), str(self))
        return made(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(RnnlmError, match=rf"^cannot write the corpus store in .*: {re.escape(advice)}"):
        open_corpus(text_cfg(tmp_path / "t.txt"), 0, DataRoot(tmp_path / "data"), progress=False)


def test_a_ready_store_on_a_read_only_data_root_is_read(tmp_path):
    open_text(tmp_path, "hello there, general kenobi\n" * 100)  # prepared in tmp_path / "data"
    ro = tmp_path / "ro"
    ro.mkdir()
    if not mount("--bind", "-o", "ro", str(tmp_path / "data"), str(ro)):
        pytest.skip("cannot bind-mount read-only here")
    try:
        if os.access(ro, os.W_OK) and subprocess.run(["touch", str(ro / "probe")], capture_output=True).returncode == 0:
            pytest.skip("the bind mount is not read-only here")
        store = open_corpus(text_cfg(tmp_path / "corpus.txt"), 0, DataRoot(ro), progress=False)
        assert store.text("train").startswith("hello there")
    finally:
        subprocess.run(["umount", "--lazy", str(ro)], check=True)  # the store's maps may still be open


def test_a_file_written_to_while_it_is_prepared_is_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    """The two passes over a file that changes between them disagree (its new characters read as <eos>): refused,
    so that no run trains on such a store and the next one prepares it again."""
    path = tmp_path / "log.txt"
    path.write_text("abc\n" * 1000, encoding="utf-8")
    write_stream = store_mod._write_stream

    def appended_to_meanwhile(source, tmp, progress):
        manifest = write_stream(source, tmp, progress)
        with open(path, "a", encoding="utf-8") as f:
            f.write("éxyz\n")
        return manifest

    monkeypatch.setattr(store_mod, "_write_stream", appended_to_meanwhile)
    with pytest.raises(RnnlmError, match=f"{path} changed while the text store was prepared from it"):
        open_corpus(text_cfg(path), 0, DataRoot(tmp_path / "data"), progress=False)
    assert [p.name for p in (tmp_path / "data" / "text").iterdir() if p.name.startswith(("store-", ".store-"))
            and not p.name.endswith(".lock")] == []
    monkeypatch.setattr(store_mod, "_write_stream", write_stream)
    store = open_corpus(text_cfg(path), 0, DataRoot(tmp_path / "data"), progress=False)
    assert store.text("train") + store.text("val") + store.text("test") == "abc\n" * 1000 + "éxyz\n"
