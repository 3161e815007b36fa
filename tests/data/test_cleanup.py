"""`rnnlm data clean`: the stores no run can use again go, the others stay."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from helpers import cli
from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, open_corpus


def prepare(root: Path, text: Path) -> Path:
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 50, encoding="utf-8")
    open_corpus(DataConfig(dataset="text", path=str(text)), 0, DataRoot(root), progress=False)
    return next(p for p in (root / "text").glob("store-*") if str(text) in (p / "manifest.json").read_text())


def test_clean_removes_the_stores_whose_text_is_gone_and_nothing_else(tmp_path):
    """A corpus file deleted or renamed left its store behind for good (a kernel's is 2.3 GB)."""
    root = tmp_path / "data"
    kept, gone = prepare(root, tmp_path / "kept.txt"), prepare(root, tmp_path / "gone.txt")
    (tmp_path / "gone.txt").unlink()
    status, out, err = cli("data", "clean", "--dry-run", "--data-dir", root)
    assert status == 0, err
    assert out.splitlines()[0].startswith(f"would remove text/{gone.name} (") and out.splitlines()[0].endswith(
        f"): its text is gone ({tmp_path / 'gone.txt'})")
    assert gone.is_dir() and kept.is_dir()  # a dry run removes nothing
    status, out, err = cli("data", "clean", "--data-dir", root)
    assert status == 0 and out.splitlines()[-1].startswith("freed "), err
    assert not gone.exists() and kept.is_dir() and not (root / "text" / f".{gone.name}.lock").exists()
    assert cli("data", "clean", "--data-dir", root)[1] == (f"nothing to remove in {root} (--all removes every "
                                                           "prepared store)\n")


def test_clean_all_leaves_a_store_being_prepared(tmp_path):
    root = tmp_path / "data"
    busy, idle = prepare(root, tmp_path / "busy.txt"), prepare(root, tmp_path / "idle.txt")
    with open(root / "text" / f".{busy.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a run preparing it holds it
        status, out, err = cli("data", "clean", "--all", "--data-dir", root)
    assert status == 0, err
    assert busy.is_dir() and not idle.exists()
    assert f"removed text/{idle.name}" in out and busy.name not in out


def dead_pid() -> int:
    """The process id of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_clean_removes_what_killed_downloads_and_preparations_left(tmp_path):
    """A kernel tarball's preparation killed outright left its spill (1.2 GB for the kernel) and a download its
    temporary file, for good: `data clean` said there was nothing to remove. A living process's files stay."""
    root = tmp_path / "data"
    (root / "linux").mkdir(parents=True)
    (root / "shakespeare").mkdir()
    spill = root / "linux" / f".spill.tmp-{dead_pid()}"
    spill.write_bytes(b"x" * 3000)
    download = root / "shakespeare" / f".input.txt.tmp-{dead_pid()}"
    download.write_bytes(b"y" * 500)
    killed_lock = root / "shakespeare" / ".input.txt.lock"  # a download's lock file, which it leaves
    killed_lock.touch()
    living = root / "linux" / ".linux-6.1.tar.xz.tmp-1"  # pid 1 runs as long as the machine does
    living.write_bytes(b"z")
    elsewhere = root / "linux" / f".spill.tmp-{dead_pid()}"  # no such process here: a writer on another machine
    elsewhere.write_bytes(b"w")
    with open(elsewhere, "rb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)  # as its writer holds it (atomic.held)
        status, out, err = cli("data", "clean", "--dry-run", "--data-dir", root)
        assert status == 0, err
        assert sorted(out.splitlines()[:3]) == [
            f"would remove linux/{spill.name} (3.0 KB): left by a download or preparation that was stopped",
            "would remove shakespeare/.input.txt.lock (0 B): the lock of a download that is over",
            f"would remove shakespeare/{download.name} (500 B): left by a download or preparation that was stopped"]
        assert spill.exists() and download.exists() and killed_lock.exists()
        status, out, err = cli("data", "clean", "--data-dir", root)
    assert status == 0 and not spill.exists() and not download.exists() and not killed_lock.exists(), err
    assert living.exists() and elsewhere.exists()
    fetching = root / "linux" / ".linux-6.1.tar.xz.lock"
    with open(fetching, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a download under way holds it
        status, out, err = cli("data", "clean", "--data-dir", root)
    assert status == 0 and fetching.exists(), err


def test_a_data_root_or_mirror_that_is_not_there_is_a_mistake_said(tmp_path):
    """`data clean --data-dir /typo` said "nothing to remove", `data list --mirror /typo` listed every corpus as a
    download (a user trial)."""
    from helpers import assert_user_error

    typo = tmp_path / "typo"
    assert_user_error(cli("data", "clean", "--data-dir", typo), f"--data-dir {typo}: no such folder")
    assert_user_error(cli("data", "list", "--mirror", typo), f"--mirror {typo}: no such folder")
    assert not (tmp_path / "typo").exists()


def test_clean_lists_and_removes_the_folders_of_stopped_store_builds(tmp_path):
    """A torchrun job killed while it prepared a 68 MB text left .store-KEY.tmp-PID folders (61 MB, 7.8 MB) that
    `data clean --dry-run` did not list: only preparing the same text again removed them. One being built stays."""
    root = tmp_path / "data"
    (root / "text").mkdir(parents=True)
    stopped = root / "text" / f".store-abc123.tmp-{dead_pid()}"
    stopped.mkdir()
    (stopped / "ids.bin").write_bytes(b"x" * 2000)
    building = root / "text" / f".store-def456.tmp-{dead_pid()}"
    building.mkdir()
    with open(root / "text" / ".store-def456.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # its build holds the lock
        status, out, err = cli("data", "clean", "--dry-run", "--data-dir", root)
        assert status == 0 and out.splitlines()[0] == (
            f"would remove text/{stopped.name} (2.0 KB): left by a preparation that was stopped"), out
        assert building.name not in out and stopped.is_dir()
        status, out, err = cli("data", "clean", "--data-dir", root)
    assert status == 0 and not stopped.exists() and building.is_dir(), err
