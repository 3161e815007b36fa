"""`text`: a file, a folder or a glob of UTF-8 files, and the errors a person gets for anything else."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from helpers import cli
from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, load_corpus, open_corpus
from rnnlm.data.text import decode_utf8, read_records, read_text, read_utf8, text_files
from rnnlm.errors import RnnlmError


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def load(tmp_path: Path, path: str, **kw: object) -> str:
    cfg = DataConfig(dataset="text", path=path, splits=(1.0, 0.0, 0.0), **kw)  # type: ignore[arg-type]
    corpus = load_corpus(cfg, 0, DataRoot(tmp_path / "data"))
    return corpus.train[0]


def test_a_file_is_read_whole(tmp_path: Path) -> None:
    f = write(tmp_path / "notes.txt", "héllo\r\nworld\n")
    assert load(tmp_path, str(f)) == "héllo\r\nworld\n"


def test_a_folder_is_read_in_sorted_path_order_without_hidden_files(tmp_path: Path) -> None:
    folder = tmp_path / "essays"
    write(folder / "b.txt", "B")
    write(folder / "a" / "z.txt", "AZ")
    write(folder / "a.txt", "A")
    write(folder / ".draft.txt", "hidden")
    write(folder / ".git" / "config", "hidden")
    # Sorted as path strings, as for linux: "a.txt" < "a/z.txt" since "." (0x2e) sorts before "/" (0x2f).
    assert load(tmp_path, str(folder)) == "A" + "AZ" + "B"


def test_binary_files_in_a_folder_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "papers"
    write(folder / "notes.md", "# notes\n")
    write(folder / "paper.pdf", b"%PDF-1.5\n\x00\x01\x02")
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path, str(folder)) == "# notes\n"
    assert "paper.pdf" in caplog.text


def test_a_glob_reads_its_matches_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "tex" / "ch2.tex", "two ")
    write(tmp_path / "tex" / "ch1.tex", "one ")
    write(tmp_path / "tex" / "sub" / "ch3.tex", "three")
    write(tmp_path / "tex" / "refs.bib", "not matched")
    assert load(tmp_path, str(tmp_path / "tex" / "**" / "*.tex")) == "one two three"


def test_max_bytes_spans_files_and_never_cuts_a_character(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write(folder / "1.txt", "abc")
    write(folder / "2.txt", "dé")  # é is two bytes
    write(folder / "3.txt", "never read")
    assert read_text(str(folder), max_bytes=4) == "abcd"
    assert read_text(str(folder), max_bytes=5) == "abcd"  # the limit falls inside é: it is dropped
    assert read_text(str(folder), max_bytes=6) == "abcdé"
    assert read_text(str(folder / "1.txt"), max_bytes=2) == "ab"


def test_a_binary_file_in_a_folder_is_skipped_wherever_its_nul_lies(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a file's first piece (4 MB) was looked at: a log with a NUL past it ended the whole preparation with
    "a binary file, not text ... give a UTF-8 text file", though the file was found in a folder."""
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "PIECE_BYTES", 8)
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.log").write_bytes(b"line one\nline two\n" * 3 + b"\0")
    write(folder / "b.txt", "kept\n")
    assert read_text(str(folder)) == "kept\n"


def test_max_bytes_reads_no_more_of_a_folder_than_it_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Looking for a NUL byte in a folder's file read all of it, whatever data.max_bytes took: now its first piece
    at most (PIECE_BYTES, made small here), or what the limit takes if that is more."""
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "PIECE_BYTES", 500)
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"x" * 3_000_000)
    read = []
    opened = text_mod._open_binary

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            block = self.f.read(n)
            read.append(len(block))
            return block

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(text_mod, "_open_binary", lambda path: Counting(opened(path)))
    assert read_text(str(folder), max_bytes=1000) == "x" * 1000
    assert sum(read) <= 2000  # looked at, then taken


def test_a_binary_file_is_skipped_however_little_of_max_bytes_is_left(tmp_path: Path) -> None:
    """The file was tested for NUL bytes in as much of it as the byte limit left: with 50 bytes left, a binary file
    whose NUL came at byte 100 was read as 50 characters of text, silently."""
    folder = tmp_path / "mb"
    folder.mkdir()
    (folder / "a.dat").write_bytes(b"A" * 100 + b"\0")
    write(folder / "b.txt", "hello\n" * 20)
    assert read_text(str(folder), max_bytes=50) == ("hello\n" * 9)[:50]
    named = folder / "a.dat"  # a file named on its own is read up to the limit: its NUL lies past it
    assert read_text(str(named), max_bytes=50) == "A" * 50


@pytest.mark.parametrize(("content", "expected"), [
    (b"PK\x03\x04\x00\x00binary", "binary file, not text (NUL byte at offset 4)"),
    (b"", "the file is empty"),
    # iconv without -f takes the locale's encoding, UTF-8, and refused the very byte the message named
    (b"caf\xe9 au lait", "not UTF-8 text (byte offset 3: b'\\xe9'); convert it: iconv -f LATIN1 -t UTF-8 "),
    (b"caf\xc3", "ends inside a UTF-8 character (byte offset 3): a copy cut short (copy it again), or another "
                 "encoding (convert it: iconv -f LATIN1 -t UTF-8 "),  # Latin-1's "cafÃ" ends so too
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path: Path, content: bytes, expected: str) -> None:
    f = write(tmp_path / "input.txt", content)
    with pytest.raises(RnnlmError) as e:
        load(tmp_path, str(f))
    assert str(f) in str(e.value) and expected in str(e.value)
    if "iconv" in expected:  # a command to run as it is
        # in place: a file of a folder or glob replaced, not joined by a converted copy beside it
        assert f"iconv -f LATIN1 -t UTF-8 {f} > {f}.utf8 && mv {f}.utf8 {f} (LATIN1, CP1252" in str(e.value)


def test_not_utf8_inside_a_folder_names_the_file_and_offset(tmp_path: Path) -> None:
    write(tmp_path / "d" / "ok.txt", "fine")
    bad = write(tmp_path / "d" / "latin1.txt", b"na\xefve")
    with pytest.raises(RnnlmError) as e:
        load(tmp_path, str(tmp_path / "d"))
    assert str(bad) in str(e.value) and "byte offset 2" in str(e.value)


def test_a_folder_with_no_text_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "empty").mkdir()
    for folder in ("d", "empty"):
        with pytest.raises(RnnlmError, match="no text to read"):
            load(tmp_path, str(tmp_path / folder))


def test_missing_path_and_empty_glob_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RnnlmError, match="no such file or directory"):
        load(tmp_path, str(tmp_path / "nope.txt"))
    os.mkfifo(tmp_path / "fifo")  # there, but not a file a corpus can be read from twice
    with pytest.raises(RnnlmError, match="fifo: not a regular file; data.path takes a file, a directory or a glob"):
        load(tmp_path, str(tmp_path / "fifo"))
    with pytest.raises(RnnlmError, match="matches no file"):
        load(tmp_path, str(tmp_path / "*.nope"))
    with pytest.raises(RnnlmError, match="needs data.path"):
        load_corpus(DataConfig(dataset="text"), 0, DataRoot(tmp_path))


def test_a_list_of_files_for_data_path_is_told_to_use_a_folder_or_a_glob(tmp_path: Path) -> None:
    """A list was told to check its pattern (on a command line) or to put it in quotes (in a file, where quoting it
    led to the pattern advice): data.path is one file, folder or glob."""
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "b.txt", "b")
    given = f"data.path=[{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}]"
    status, _, err = cli("data", "info", "text", given, "--data-dir", tmp_path / "data")
    assert status == 2 and err.strip().endswith("matches no file; a list is read as a pattern here: for several "
                                                 "files, give their folder or a glob (notes/*.txt)"), err
    config = write(tmp_path / "c.yaml", "data:\n  path: [a.txt, b.txt]\n")
    status, _, err = cli("config", config)
    assert status == 2 and "data.path is one file, folder or glob; for several files, give their folder or a " \
                           "glob (notes/*.txt)" in err, err


def test_records_are_lines_without_their_endings(tmp_path: Path) -> None:
    f = write(tmp_path / "words.txt", "emma\r\nolivia\nava\n")
    assert read_records(f) == ["emma", "olivia", "ava"]
    f = write(tmp_path / "no-final-newline.txt", "emma\nolivia")
    assert read_records(f) == ["emma", "olivia"]
    f = write(tmp_path / "a-carriage-return-inside.txt", "em\rma\nolivia\n")  # one stray CR: a character of its record
    assert read_records(f) == ["em\rma", "olivia"]


def test_a_byte_limit_never_cuts_a_record(tmp_path: Path) -> None:
    f = write(tmp_path / "words.txt", "emma\nolivia\nava\n")
    assert read_records(f, max_bytes=8) == ["emma"]
    assert read_records(f, max_bytes=12) == ["emma", "olivia"]
    # a limit between a CR LF's two bytes: the cut line is dropped (it was refused as CR-only line endings)
    f = write(tmp_path / "crlf.txt", "ann\r\nbob\r\n")
    assert read_records(f, max_bytes=9) == ["ann"]
    with pytest.raises(RnnlmError, match=r"^data.max_bytes=4 ends inside the first line"):
        read_records(f, max_bytes=4)
    f = write(tmp_path / "cr.txt", "ann\rbob\rcat\rdan\r")  # CR alone: said so under a limit too
    with pytest.raises(RnnlmError, match="carriage return alone"):
        read_records(f, max_bytes=8)


def test_an_empty_line_in_a_line_corpus_is_an_error_naming_it(tmp_path: Path) -> None:
    f = write(tmp_path / "words.txt", "emma\nolivia\n\nava\n\n")
    with pytest.raises(RnnlmError) as e:
        read_records(f)
    assert "line 3 is empty (and 1 more)" in str(e.value) and str(f) in str(e.value)


@pytest.mark.parametrize(("content", "expected"), [
    (b"emma\nol\x00ivia\n", "binary file, not text (NUL byte at offset 7)"),
    (b"emma\n" * 5 + b"caf\xe9\n", "not UTF-8 text (byte offset 28"),
    (b"emma\n" * 5 + b"\xe6\x97", "ends inside a UTF-8 character (byte offset 25): a copy cut short"),
    (b"emma\r\n\r\nava\n", "line 2 is empty; a line corpus holds one record per line: remove the empty lines, e.g. "
                              "sed -i '/^\\r\\?$/d'"),  # which removes CR LF ones too
    (b"\n", "line 1 is empty"),
    (b"emma\rolivia\rava\r", "its lines end in a carriage return alone (classic Mac OS line endings), which a line "
                              "corpus does not read as line ends; make them newlines, e.g. tr '\\r' '\\n' <"),
])
def test_a_bad_line_corpus_is_named_with_what_is_wrong(tmp_path: Path, content: bytes, expected: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnlm.data import text as text_mod
    monkeypatch.setattr(text_mod, "PIECE_BYTES", 8)  # checked in pieces: the offset is still the file's
    f = write(tmp_path / "words.txt", content)
    with pytest.raises(RnnlmError) as e:
        read_records(f)
    assert str(f) in str(e.value) and expected in str(e.value)


def test_a_byte_limit_checks_what_it_read_and_drops_the_line_it_cut(tmp_path: Path) -> None:
    f = write(tmp_path / "words.txt", b"emma\nzo\xc3\xab\nolivia\xff\n")
    assert read_records(f, max_bytes=12) == ["emma", "zo\u00eb"]  # the bad byte lies past the limit
    assert read_records(f, max_bytes=8) == ["emma"]  # the limit cuts \xc3\xab in half: dropped with its line
    with pytest.raises(RnnlmError, match="byte offset 16"):  # read, though in the line the limit drops
        read_records(f, max_bytes=18)
    with pytest.raises(RnnlmError, match="data.max_bytes=3 ends inside the first line"):
        read_records(f, max_bytes=3)


def test_a_line_file_cut_short_after_it_was_read_changes_nothing_read(tmp_path: Path) -> None:
    """The records are a copy: a map of the file killed the process (SIGBUS) once a generator rewrote it shorter."""
    from rnnlm.data.text import line_records

    f = write(tmp_path / "words.txt", "emma\nolivia\n" * 5000)
    records = line_records(f)
    f.write_text("x\n")
    texts = records.texts()
    assert len(texts) == 10000 and texts[:3] == ["emma", "olivia", "emma"]


def test_a_folder_over_a_whole_project_leaves_out_what_rnnlm_wrote_there(tmp_path: Path) -> None:
    """`data.path=.` in the folder a user trains from: its data root and runs (text files, most of them) are not
    read, or every run would train on the stores and logs of the runs before it."""
    write(tmp_path / "notes" / "a.txt", "mine")
    write(tmp_path / "config.yaml", "model: {cell: gru}\n")  # the user's own: no run's lock or metrics beside it
    root = DataRoot(tmp_path / "data")
    open_corpus(DataConfig(dataset="text", path=str(tmp_path / "notes")), 0, root, progress=False)  # marks the root
    write(tmp_path / "data" / "shakespeare" / "input.txt", "a download, no store yet")
    write(tmp_path / "data" / "book.txt", "the user's own text in the data root, as char-rnn keeps it")
    for run, marker in (("cli", ".lock"), ("api", "metrics.jsonl")):  # `rnnlm train` locks its runs; train() does not
        write(tmp_path / "checkpoints" / run / "config.yaml", "{}")
        write(tmp_path / "checkpoints" / run / marker, "")
        write(tmp_path / "checkpoints" / run / "status.json", "{}")
    write(tmp_path / "exp1" / "config.yaml", "lr: 1\n")  # another tool's experiment: the user's text
    write(tmp_path / "exp1" / "metrics.jsonl", "{}\n")
    mine = [tmp_path / "config.yaml", tmp_path / "data" / "book.txt", tmp_path / "exp1" / "config.yaml",
            tmp_path / "exp1" / "metrics.jsonl", tmp_path / "notes" / "a.txt"]
    assert text_files(str(tmp_path)) == mine
    assert text_files(str(tmp_path / "**" / "*")) == mine
    # a folder named, or a pattern's own folder, is read: only what rnnlm wrote below it is left out
    assert text_files(str(tmp_path / "checkpoints" / "cli" / "*.json")) == [tmp_path / "checkpoints" / "cli" /
                                                                           "status.json"]



def test_a_path_written_differently_is_the_same_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`data info text data.path=./a.txt` and a run (which records the path absolute) share one prepared store."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.txt", "some text to read\n" * 50)
    folders = {open_corpus(DataConfig(dataset="text", path=spec), 0, DataRoot(tmp_path / "d"), progress=False).folder
               for spec in ("./a.txt", "a.txt", str(tmp_path / "a.txt"), f"{tmp_path}/./a.txt")}
    assert len(folders) == 1


def test_the_cli_says_which_binary_files_it_skipped_as_a_warning_line_every_time(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Every time, from the store prepared the first time too (it was said once, then never), with the paths whole
    (every spelling of a path shares the store)."""
    write(tmp_path / "notes" / "a.txt", "hello there\n" * 50)
    write(tmp_path / "notes" / "b.bin", b"x\0y")
    monkeypatch.chdir(tmp_path)
    warning = f"warning: skipped 1 binary file(s) under {tmp_path / 'notes'}: {tmp_path / 'notes' / 'b.bin'}"
    for spec in ("notes", str(tmp_path / "notes")):
        status, _, err = cli("data", "info", "text", f"data.path={spec}", "--data-dir", tmp_path / "d")
        assert status == 0 and err.splitlines().count(warning) == 1, err


def test_symlinks_neither_loop_nor_repeat_a_file_and_folder_and_glob_agree(tmp_path: Path) -> None:
    """A glob with ** followed symlinked folders: a link to its own folder read a file 41 times, two such links never
    ended. Symlinked folders are not followed, by a folder read or a glob, and a file met again through a symlink to
    it is read once."""
    notes = tmp_path / "notes"
    write(notes / "a.txt", "AAAA\n")
    write(notes / "real" / "b.txt", "BBBB\n")
    (notes / "loop").symlink_to(".")  # (a second such link made glob's walk exponential: a hang, not a failure)
    (notes / "link").symlink_to("real")
    (notes / "same.txt").symlink_to("a.txt")
    assert read_text(str(notes)) == read_text(str(notes / "**" / "*.txt")) == "AAAA\nBBBB\n"
    assert text_files(str(notes / "*")) == [notes / "a.txt", notes / "real" / "b.txt"]  # a folder matched: read whole


def test_a_glob_matches_as_glob_does_but_says_which_symlinked_folders_it_left_out(tmp_path: Path, caplog) -> None:
    notes = tmp_path / "notes"
    for name in ("top.md", ".dot.md", "sub/one.md", "sub/.hid/h.md", ".hid/h.md"):
        write(notes / name, name)
    write(tmp_path / "shared" / "z.md", "z")
    (notes / "link").symlink_to(tmp_path / "shared")
    with caplog.at_level(logging.WARNING, logger="rnnlm.data.text"):
        assert text_files(str(notes / "**" / "*.md")) == [notes / "sub" / "one.md", notes / "top.md"]
    assert f"1 symlinked folder(s) under {notes / '**' / '*.md'} left out: {notes / 'link'}" in caplog.text
    assert text_files(str(notes / ".*.md")) == [notes / ".dot.md"]  # a pattern may name hidden files
    assert text_files(str(notes / "**" / ".hid" / "*.md")) == [notes / ".hid" / "h.md", notes / "sub" / ".hid" / "h.md"]
    assert text_files(str(notes / "*") + "/") == [notes / "sub" / "one.md"]  # a trailing slash: folders only
    with pytest.raises(RnnlmError, match="matches no file"):
        text_files(str(tmp_path / "nothere" / "*.md"))


def test_binary_files_a_folder_skips_cost_nothing_of_max_bytes(tmp_path: Path) -> None:
    write(tmp_path / "t" / "a.pdf", b"PDF\0junk" * 200)
    write(tmp_path / "t" / "b.txt", "x" * 2000)
    assert read_text(str(tmp_path / "t"), max_bytes=1950) == "x" * 1950


def test_a_folder_that_cannot_be_listed_is_an_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    secret = tmp_path / "notes" / "secret"
    write(tmp_path / "notes" / "a.txt", "visible")
    write(secret / "b.txt", "hidden from this user")
    scandir = os.scandir

    def refuse(path):  # as for a folder of another user's, mode 700 (the tests run as root, which reads anything)
        if Path(path) == secret:
            raise PermissionError(13, "Permission denied", str(secret))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)
    for spec in (str(tmp_path / "notes"), str(tmp_path / "notes" / "**" / "*.txt")):
        with pytest.raises(RnnlmError, match=f"{secret}: cannot read this folder \\(Permission denied\\)"):
            text_files(spec)


def test_the_users_text_in_the_data_root_is_read_and_rnnlms_folders_there_are_not(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """`data.path=.` in a project whose data/ folder holds the user's text (char-rnn's data/input.txt) and becomes
    the data root: the text is read on the first run and on the next, which finds it unchanged (the store the first
    wrote into data/text is left out) and does not prepare it again."""
    write(tmp_path / "notes.txt", "n\n")
    write(tmp_path / "data" / "input.txt", "about my data\n")  # the folder the data root will be
    monkeypatch.chdir(tmp_path)
    first = open_corpus(DataConfig(dataset="text", path="."), 0, DataRoot(Path("data")), progress=False)
    assert (tmp_path / "data" / DataRoot.MARK).exists() and (tmp_path / "data" / "text").is_dir()
    again = open_corpus(DataConfig(dataset="text", path="."), 0, DataRoot(Path("data")), progress=False)
    assert first.text("train") + first.text("val") + first.text("test") == "about my data\nn\n"
    assert again.folder == first.folder


def test_a_byte_limit_inside_the_first_character_says_so(tmp_path: Path) -> None:
    f = write(tmp_path / "music.txt", "𝄞 clef")  # four bytes
    with pytest.raises(RnnlmError, match="data.max_bytes=2 ends inside the first character"):
        read_text(str(f), max_bytes=2)


def test_a_byte_order_mark_is_not_read_as_a_character(tmp_path: Path) -> None:
    """Windows editors write U+FEFF first: it says the file is UTF-8, it is not text. Read as a character it became
    one of the vocabulary's, one in the middle of the stream for every file of a folder after the first."""
    bom = "\ufeff".encode()
    for name in ("a.txt", "b.txt"):
        write(tmp_path / "notes" / name, bom + f"{name} says hello\n".encode())
    write(tmp_path / "names.txt", bom + b"anna\nbob\ncarl\n")
    assert read_text(str(tmp_path / "notes")) == "a.txt says hello\nb.txt says hello\n"
    assert read_text(str(tmp_path / "notes"), max_bytes=8) == "a.txt"  # the mark's 3 bytes count, as on disk
    assert read_records(tmp_path / "names.txt") == ["anna", "bob", "carl"]
    assert read_utf8(tmp_path / "names.txt") == "anna\nbob\ncarl\n"  # --prime-file, viz --file
    assert decode_utf8(bom + b"ROMEO:", "standard input") == "ROMEO:"  # --prime-file -
    write(tmp_path / "bad.txt", bom + b"anna\nb\xe9b\n")  # Latin-1: an error at the file's own offset
    with pytest.raises(RnnlmError, match="byte offset 9"):
        read_records(tmp_path / "bad.txt")
    corpus = load_corpus(DataConfig(dataset="text", path=str(tmp_path / "notes"), splits=(1.0, 0.0, 0.0)), 0,
                         DataRoot(tmp_path / "data"))
    assert "\ufeff" not in "".join(corpus.train)
