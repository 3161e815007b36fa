"""The Linux reader on a small kernel-like tree and tarballs made here: sorted path order, only .c and .h,
the subdirs filter, the byte limit, and where the source is looked for."""

from __future__ import annotations

import hashlib
import io
import logging
import lzma
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, load_corpus
from rnnlm.data import linux as linux_mod
from rnnlm.data.download import Remote
from rnnlm.data.linux import normalise_subdirs, read_tarball, read_tree
from rnnlm.errors import RnnlmError
from corpus_fixtures import refused_url

# Path -> content. Listed out of order on purpose; "a-b/", "a/" and "a.c" probe how paths sort.
TREE = {
    "mm/mmap.c": "// mmap\nint do_mmap(void);\n",
    "kernel/sched/core.c": "// scheduler core\nvoid schedule(void) {}\n",
    "Makefile": "obj-y += kernel/\n",
    "kernel/fork.c": "// fork\nlong do_fork(void) { return 0; }\n",
    "include/linux/mm.h": "#ifndef _LINUX_MM_H\n#define _LINUX_MM_H\n#endif\n",
    "arch/x86/boot/header.S": "# assembly, not C\n",
    "drivers/net/loopback.c": "// loopback\n",
    "drivers/gpu/drm.c": "// drm\n",
    "Documentation/process.rst": "not source\n",
    "a-b/x.c": "// a-b\n",
    "a/x.c": "// a\n",
    "a.c": "// a.c\n",
    "kernel/sched.h": "// sched.h\n",
}
SOURCES = sorted(p for p in TREE if p.endswith((".c", ".h")))
FULL = "".join(TREE[p] for p in SOURCES)


def make_tree(folder: Path) -> Path:
    for rel, text in TREE.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    (folder / ".git").mkdir()
    (folder / ".git" / "hook.c").write_text("// hidden folder: not read\n")
    (folder / "kernel" / "link.c").symlink_to(folder / "kernel" / "fork.c")  # a symlink: not read twice
    return folder


def make_tarball(path: Path, top: str = "linux-9.9", shuffle: int | None = 0,
                 extra: dict[str, bytes] | None = None) -> Path:
    """A tarball of TREE under `top/`, its members written in a shuffled order (None: sorted)."""
    members = [(rel, text.encode()) for rel, text in TREE.items()] + list((extra or {}).items())
    if shuffle is None:
        members.sort()
    else:
        random.Random(shuffle).shuffle(members)
    with tarfile.open(path, "w:xz" if path.name.endswith(".xz") else "w:gz") as tar:
        folder = tarfile.TarInfo(top)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for rel, data in members:
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tree_is_all_c_and_h_files_in_sorted_path_order(tmp_path: Path) -> None:
    text, _ = read_tree(make_tree(tmp_path / "linux"), (), None)
    assert SOURCES[:4] == ["a-b/x.c", "a.c", "a/x.c", "drivers/gpu/drm.c"]  # plain string order of the paths
    assert text == FULL
    assert "assembly" not in text and "not source" not in text and "hidden" not in text


@pytest.mark.parametrize("name", ["linux-9.9.tar.xz", "linux-9.9.tar.gz"])
def test_tarball_gives_the_same_text_as_the_tree_whatever_its_member_order(tmp_path: Path, name: str) -> None:
    for shuffle in (None, 0, 1):
        text, _ = read_tarball(make_tarball(tmp_path / name, shuffle=shuffle), (), None)
        assert text == FULL


def test_subdirs_keep_only_those_folders(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    tarball = make_tarball(tmp_path / "linux.tar.gz")
    want = "".join(TREE[p] for p in SOURCES if p.startswith(("kernel/", "drivers/net/")))
    for subdirs in (("drivers/net", "kernel"), ("kernel/", "drivers/net")):
        for source in (tree, tarball):
            cfg = DataConfig(dataset="linux", path=str(source), subdirs=subdirs, splits=(1.0, 0.0, 0.0))
            assert load_corpus(cfg, 0, DataRoot(tmp_path / "data")).train[0] == want


def test_a_subdir_with_no_sources_is_an_error_listing_the_top_folders(tmp_path: Path) -> None:
    hidden = {".git/hook.c": b"// hidden folder: not read\n"}
    for source in (make_tree(tmp_path / "linux"), make_tarball(tmp_path / "linux.tar.gz", extra=hidden)):
        with pytest.raises(RnnlmError) as e:
            load_corpus(DataConfig(dataset="linux", path=str(source), subdirs=("kernl",)), 0, DataRoot(tmp_path / "d"))
        assert "kernl" in str(e.value) and "kernel" in str(e.value) and "mm" in str(e.value)
        assert ".git" not in str(e.value)  # never read, so no folder to suggest


def test_byte_limit_is_the_prefix_of_the_sorted_text_for_tree_and_shuffled_tarball(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "linux")
    tarball = make_tarball(tmp_path / "linux.tar.xz", shuffle=3)
    for limit in range(1, len(FULL) + 5, 3):
        assert read_tree(tree, (), limit)[0] == FULL[:limit]
        assert read_tarball(tarball, (), limit)[0] == FULL[:limit]


def test_reading_a_tree_stops_at_the_byte_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tree = make_tree(tmp_path / "linux")
    (tree / "mm" / "zzz.c").write_bytes(b"caf\xe9")  # not UTF-8: would be reported if it were read
    with caplog.at_level(logging.WARNING):
        read_tree(tree, (), 10)
    assert "zzz.c" not in caplog.text
    with caplog.at_level(logging.WARNING):
        text, scan = read_tree(tree, (), None)
    assert scan.skipped == ["mm/zzz.c"]
    assert text == FULL


@pytest.mark.parametrize("kind", ["tarball", "folder"])
def test_non_utf8_sources_are_left_out_with_a_warning_said_again_by_the_store(tmp_path: Path, kind: str,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Said once while the store is prepared (it reads the files twice), and again each time the store is used: a
    folder's store said nothing after the first time."""
    latin1 = b"/* M\xfcller */\n"
    if kind == "tarball":
        source = make_tarball(tmp_path / "linux.tar.gz", extra={"fs/latin1.c": latin1})
    else:
        source = make_tree(tmp_path / "linux")
        (source / "fs").mkdir()
        (source / "fs" / "latin1.c").write_bytes(latin1)
    for _ in range(2):  # and again from the store the first read prepared
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            corpus = load_corpus(DataConfig(dataset="linux", path=str(source), splits=(1.0, 0.0, 0.0)), 0,
                                 DataRoot(tmp_path / "data"))
        assert corpus.train[0] == FULL
        assert [r.getMessage() for r in caplog.records] == [
            f"left out 1 source file(s) of {source} that are not UTF-8 text: fs/latin1.c"]


def test_tarball_with_two_top_level_folders_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "two.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("one/a.c", "two/b.c"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(RnnlmError, match="both at the top"):
        read_tarball(path, (), None)


def test_damaged_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    for kind in ("xz", "gz"):
        good = make_tarball(tmp_path / f"linux.tar.{kind}").read_bytes()
        (tmp_path / f"cut.tar.{kind}").write_bytes(good[: len(good) // 2])  # an interrupted copy
    (tmp_path / "notes.txt").write_text("not a tarball")
    plain = make_tarball(tmp_path / "linux.tar.xz")
    with tarfile.open(plain) as tar:  # the same tree as an uncompressed tar, cut at a member's header
        members = tar.getmembers()
        uncompressed = lzma.decompress(plain.read_bytes())
    (tmp_path / "cut.tar").write_bytes(uncompressed[:members[len(members) // 2].offset])
    for name in ("cut.tar.xz", "cut.tar.gz", "cut.tar"):
        with pytest.raises(RnnlmError, match="not a readable tarball, or a damaged one"):
            read_tarball(tmp_path / name, (), None)
    (tmp_path / "fork.c").write_text(TREE["kernel/fork.c"])
    for name in ("notes.txt", "fork.c"):  # not a tarball at all: perhaps text of the user's own
        with pytest.raises(RnnlmError) as e:
            read_tarball(tmp_path / name, (), None)
        assert str(e.value) == (f"{tmp_path / name}: not a tarball; the linux corpus reads a kernel source folder or "
                                f"a .tar.xz/.tar.gz tarball (for files of your own: data.dataset=text "
                                f"data.path={tmp_path / name})")
    with pytest.raises(RnnlmError, match="no such file or directory"):
        load_corpus(DataConfig(dataset="linux", path=str(tmp_path / "nope.tar.xz")), 0, DataRoot(tmp_path / "d"))


@pytest.mark.parametrize("fmt", ["v7", "gnu", "pax"])
def test_an_uncompressed_tarball_of_any_format_is_read(tmp_path: Path, fmt: str) -> None:
    """v7 headers have no "ustar" magic: a tar is told from other files by its first header's checksum."""
    import subprocess

    tree = make_tree(tmp_path / "linux-9.9")
    (tree / ".git" / "hook.c").unlink()
    (tree / ".git").rmdir()
    (tree / "kernel" / "link.c").unlink()
    subprocess.run(["tar", f"--format={fmt}", "-cf", str(tmp_path / "k.tar"), "linux-9.9"], cwd=tmp_path, check=True)
    assert read_tarball(tmp_path / "k.tar", (), None)[0] == FULL


def test_source_order_data_root_then_installed_tarball_then_download(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    offline_url = refused_url()
    installed = tmp_path / "usr-src"
    installed.mkdir()
    monkeypatch.setattr(linux_mod, "SYSTEM_TARBALLS", str(installed / "linux-source-*.tar.xz"))
    monkeypatch.setattr(linux_mod, "KERNEL_RELEASE", Remote("linux/linux-9.9.tar.xz", offline_url, "0" * 64))
    root = DataRoot(tmp_path / "data")
    cfg = DataConfig(dataset="linux")
    # Nothing anywhere: the download fails (nothing listens there), and the message says what else works.
    with pytest.raises(RnnlmError) as e:
        linux_mod.locate_source(cfg, root)
    assert "data.path" in str(e.value) and "apt-get install linux-source" in str(e.value)
    # An installed tarball is used, the newest version when there are several.
    make_tarball(installed / "linux-source-6.1.tar.xz")
    make_tarball(installed / "linux-source-6.10.tar.xz")
    assert linux_mod.locate_source(cfg, root) == installed / "linux-source-6.10.tar.xz"
    # data.path wins over everything.
    assert linux_mod.locate_source(DataConfig(dataset="linux", path=str(tmp_path)), root) == tmp_path


def test_the_pinned_release_in_the_data_root_comes_before_an_installed_tarball(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    offline_url = refused_url()
    installed = tmp_path / "usr-src"
    installed.mkdir()
    make_tarball(installed / "linux-source-6.1.tar.xz")
    monkeypatch.setattr(linux_mod, "SYSTEM_TARBALLS", str(installed / "linux-source-*.tar.xz"))
    root = DataRoot(tmp_path / "data")
    pinned = make_tarball(tmp_path / "pinned.tar.xz", shuffle=5)
    digest = hashlib.sha256(pinned.read_bytes()).hexdigest()
    monkeypatch.setattr(linux_mod, "KERNEL_RELEASE", Remote("linux/linux-9.9.tar.xz", offline_url, digest))
    (root.path / "linux").mkdir(parents=True)
    pinned.rename(root.path / "linux" / "linux-9.9.tar.xz")
    assert linux_mod.locate_source(DataConfig(dataset="linux"), root) == root.path / "linux" / "linux-9.9.tar.xz"


# -- the store ---------------------------------------------------------------------------------------

def load_linux(tarball: Path, root: DataRoot, subdirs: tuple[str, ...] = ()) -> str:
    cfg = DataConfig(dataset="linux", path=str(tarball), subdirs=subdirs, splits=(1.0, 0.0, 0.0))
    return load_corpus(cfg, 0, root).train[0]


def test_linux_tarball_is_streamed_once_then_read_from_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = make_tarball(tmp_path / "linux-9.9.tar.xz")
    root = DataRoot(tmp_path / "data")
    (root.path / "linux").mkdir(parents=True)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = root.path / "linux" / f".spill.tmp-{int(ended.stdout)}"  # a preparation killed outright left it
    killed.write_bytes(b"int x;\n")
    assert load_linux(tarball, root) == FULL
    assert len(list((root.path / "linux").glob("store-*"))) == 1
    assert not list((root.path / "linux").glob(".spill*"))  # the spill of the tarball's files is gone, and the old one

    def no_streaming(*args: object) -> None:
        raise AssertionError("the tarball was read again")

    real_stream = linux_mod._tar_sources
    monkeypatch.setattr(linux_mod, "_tar_sources", no_streaming)
    assert load_linux(tarball, root) == FULL

    # New settings: streamed again, into a second store.
    monkeypatch.setattr(linux_mod, "_tar_sources", real_stream)
    assert load_linux(tarball, root, subdirs=("kernel",)) == "".join(TREE[p] for p in SOURCES if p.startswith("kernel/"))
    assert len(list((root.path / "linux").glob("store-*"))) == 2


def test_linux_store_is_rebuilt_when_the_tarball_changes(tmp_path: Path) -> None:
    tarball = make_tarball(tmp_path / "linux-9.9.tar.gz")
    root = DataRoot(tmp_path / "data")
    assert load_linux(tarball, root) == FULL
    make_tarball(tarball, extra={"zz/new.c": b"// new file\n"})
    stat = tarball.stat()
    os.utime(tarball, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a different mtime even on a coarse clock
    assert load_linux(tarball, root) == FULL + "// new file\n"
    assert len(list((root.path / "linux").glob("store-*"))) == 1  # rebuilt in place, no stale copy


def test_subdirs_are_checked_when_the_config_is_read() -> None:
    from rnnlm.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="only data.dataset=linux"):
        load_config(None, ["data.dataset=text", "data.subdirs=[kernel]"])
    for bad in ("[../etc]", "[/usr/src]", "['']"):
        with pytest.raises(ConfigError, match="folders inside the kernel tree"):
            load_config(None, ["data.dataset=linux", f"data.subdirs={bad}"])
    assert load_config(None, ["data.dataset=linux", "data.subdirs=[kernel, drivers/net]"]).data.subdirs == (
        "kernel", "drivers/net")


def test_a_tree_skips_fifos_credits_nested_subdirs_and_names_what_it_cannot_read(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    tree = make_tree(tmp_path / "linux")
    os.mkfifo(tree / "kernel" / "pipe.c")  # read, it would block for ever
    assert read_tree(tree, (), None)[0] == FULL
    text, _ = read_tree(tree, ("kernel", "kernel/sched"), None)  # both hold sched/core.c: neither is "empty"
    assert text == "".join(TREE[p] for p in SOURCES if p.startswith("kernel/"))
    unreadable = tree / "mm" / "mmap.c"
    real_read = Path.read_bytes

    def refuse(path: Path) -> bytes:  # as for another user's file (the tests run as root)
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(RnnlmError, match=f"{unreadable}: cannot read it \\(Permission denied\\)"):
        load_corpus(DataConfig(dataset="linux", path=str(tree), subdirs=()), 0, DataRoot(tmp_path / "d"))


def test_a_tarball_made_inside_the_tree_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "k.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in ((".", None), ("./kernel/a.c", b"int a;\n")):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RnnlmError, match="holds a tree's files at its top, not in one folder"):
        read_tarball(path, (), None)


def test_subdirs_are_read_however_a_path_is_written() -> None:
    """`./kernel` was refused as holding no source while `kernel/` was read: both name the same folder."""
    assert normalise_subdirs(["./kernel", "mm/", "drivers//net", "kernel"]) == ("drivers/net", "kernel", "mm")
    assert normalise_subdirs(["./", "kernel"]) == ()  # the whole tree
