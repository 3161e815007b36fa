"""`rnnlm data list|fetch|info`, run as a user would (a subprocess), on the data mirror."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers import REPO, run_cli
from corpus_fixtures import data_mirror


def test_fetch_then_list_then_info(tmp_path: Path) -> None:
    mirror = data_mirror()
    data = tmp_path / "data"
    fetched = run_cli("data", "fetch", "shakespeare", "--data-dir", str(data), env={"RNNLM_DATA_MIRROR": str(mirror)})
    assert fetched.returncode == 0, fetched.stderr
    assert (data / "shakespeare" / "input.txt").stat().st_size == 1115394
    fetched = run_cli("data", "fetch", "names", "--data-dir", str(data), env={"RNNLM_DATA_MIRROR": str(mirror)})
    assert fetched.returncode == 0, fetched.stderr
    assert (data / "names" / "names.txt").stat().st_size == 228145

    listed = run_cli("data", "list", "--data-dir", str(data), "--mirror", str(mirror))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if not line.startswith(" ")}
    assert "present" in rows["shakespeare"] and "present" in rows["names"]

    info = run_cli("data", "info", "names", "--data-dir", str(data), "--mirror", str(mirror))
    assert info.returncode == 0, info.stderr
    assert "32,033" in info.stdout and "'a' 33,885" in info.stdout


def test_unknown_corpus_is_one_line_and_status_2(tmp_path: Path) -> None:
    result = run_cli("data", "fetch", "shakespear", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "did you mean 'shakespeare'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_mirror_given_as_a_url_is_refused(tmp_path: Path) -> None:
    """--mirror takes a folder; the option reads a Path, which makes http://host of a URL http:/host."""
    result = run_cli("data", "list", "--mirror", "http://127.0.0.1:8765/", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: the data mirror http:/127.0.0.1:8765 (--mirror, RNNLM_DATA_MIRROR) is a URL; a mirror is a local "
        "folder holding the corpora's files as a data root does (shakespeare/input.txt, ...)"]


def kernel_like_tarball(path: Path, files: int = 300) -> Path:
    """A release-shaped tarball (linux-9.9/...) with enough C in kernel/ and mm/ for the shipped config's batches."""
    with tarfile.open(path, "w:xz") as tar:
        for i in range(files):
            folder = ("kernel", "mm", "drivers")[i % 3]
            code = (f"// SPDX-License-Identifier: GPL-2.0\n#include <linux/{folder}.h>\n\n"
                    f"static int {folder}_step_{i}(struct task_struct *p, int n)\n{{\n"
                    f"\tif (n < {i})\n\t\treturn -EINVAL;\n\treturn n * {i + 1};\n}}\n").encode()
            info = tarfile.TarInfo(f"linux-9.9/{folder}/file_{i:03d}.c")
            info.size = len(code)
            tar.addfile(info, io.BytesIO(code))
    return path


def test_the_shipped_configs_train_on_their_corpora(tmp_path: Path) -> None:
    # The corpora issue's "done when": shakespeare_lstm.yaml with train.max_steps=50 from the mirror, and
    # linux_lstm.yaml on a kernel tarball given as data.path; each run then samples from its config's prime.
    data, runs = str(tmp_path / "data"), str(tmp_path / "runs")
    env = {"RNNLM_DATA_MIRROR": str(data_mirror())}
    tarball = kernel_like_tarball(tmp_path / "linux-9.9.tar.xz")
    shakespeare, linux = (run_cli("train", str(REPO / "configs" / config), *overrides, "--data-dir", data, "--out", runs,
                                  "--name", config, "-q", env=env)
                          for config, overrides in [  # steps, not the configs' time budgets: a busy machine is slow
                              ("shakespeare_lstm.yaml", ["train.max_steps=50", "train.max_time=null"]),
                              ("linux_lstm.yaml", [f"data.path={tarball}", "train.max_steps=10", "train.max_time=null"])])
    for result, config, steps, prime in [(shakespeare, "shakespeare_lstm.yaml", 50, "ROMEO:"),
                                         (linux, "linux_lstm.yaml", 10, "static int ")]:
        assert result.returncode == 0, result.stderr
        assert f"done at step {steps}: val loss" in result.stderr
        sampled = run_cli("sample", f"{runs}/{config}", "--length", "80", "--seed", "1")
        assert sampled.returncode == 0 and sampled.stdout.startswith(prime) and len(sampled.stdout) > len(prime) + 40
    corpus = tmp_path / "data" / "shakespeare" / "input.txt"  # the downloaded text is the run's, kept whole
    refused = run_cli("sample", f"{runs}/shakespeare_lstm.yaml", "--length", "5", "--out", str(corpus))
    assert refused.returncode == 2 and "part of the text the run trained on" in refused.stderr, refused.stderr
    assert corpus.stat().st_size == 1115394
    text = linux_text(tmp_path / "data")
    assert "kernel_step_" in text and "mm_step_" in text and "drivers_step_" not in text


def linux_text(data: Path) -> str:
    """The Linux text the run prepared into its store in the data root (kernel/ and mm/ only, per the config)."""
    from rnnlm.data.store import _load

    (folder,) = (data / "linux").glob("store-*")
    store = _load(folder)
    return "".join(store.text(split) for split in ("train", "val", "test"))


def test_a_kill_while_a_tarball_is_read_removes_its_spill(tmp_path: Path) -> None:
    """SIGTERM (a plain `kill`) unwinds as Ctrl-C does: the spill file the tarball's sources are gathered in (as
    big as the kernel's text) is removed, not left for nothing to clean."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tarball = kernel_like_tarball(tmp_path / "linux-9.9.tar.xz")
    # the store's first pass over the spill waits: the kill lands while the spill is there, however fast the
    # machine reads the tarball (racing a real one, the run sometimes ended before the kill was sent). It waits in
    # slices: a signal the kernel hands to another thread (numpy's BLAS workers) runs Python's handler only when the
    # main thread next runs bytecode, and one 60 s sleep once outlasted the test's patience.
    script = ("import runpy, sys, time\n"
              "from rnnlm.data import linux\n"
              "pieces = linux.TarballPieces._pieces\n"
              "def waiting(self):\n"
              "    for _ in range(600):\n"
              "        time.sleep(0.1)\n"
              "    yield from pieces(self)\n"
              "linux.TarballPieces._pieces = waiting\n"
              "sys.argv = ['rnnlm', *sys.argv[1:]]\n"
              "runpy.run_module('rnnlm', run_name='__main__')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script, "data", "info", "linux", f"data.path={tarball}",
                                "--data-dir", str(tmp_path / "data")], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "data" / "linux").glob(".spill.tmp-*")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert [p.name for p in (tmp_path / "data" / "linux").iterdir() if not p.name.startswith(".store-")] == []


def test_a_spill_that_cannot_be_written_is_one_line_and_left_nowhere(tmp_path: Path) -> None:
    """A file size limit (or a full disk) while the spill was written: closing it flushed the failed write again, a
    traceback, and the spill stayed (1.2 GB for the kernel)."""
    import os
    import resource
    import subprocess
    import sys

    tarball = kernel_like_tarball(tmp_path / "linux-9.9.tar.xz", files=3000)  # about 300 KB of C
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "rnnlm", "data", "info", "linux", f"data.path={tarball}",
                           "--data-dir", str(tmp_path / "data")], env=env, capture_output=True, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().endswith("File too large; raise the file size limit (ulimit -f), or point --data-dir "
                                        "(or RNNLM_DATA_DIR) at a writable folder"), done.stderr
    assert [p.name for p in (tmp_path / "data" / "linux").iterdir() if not p.name.startswith(".store-")] == []


def test_fetch_with_your_own_file_fetches_nothing(tmp_path: Path) -> None:
    """`data fetch names data.path=mine.txt` downloaded the published names anyway (and failed offline)."""
    from helpers import assert_user_error, cli

    mine = tmp_path / "mine.txt"
    mine.write_text("emma\nava\n", encoding="utf-8")
    status, out, _ = cli("data", "fetch", "names", f"data.path={mine}", "--data-dir", tmp_path / "data")
    assert status == 0 and "nothing to fetch" in out and not (tmp_path / "data").exists()
    assert_user_error(cli("data", "fetch", "linux", f"data.path={tmp_path / 'nope.tar.xz'}", "--data-dir",
                          tmp_path / "data"), "no such file or directory")


def test_fetch_takes_a_file_whose_name_looks_like_a_pattern(tmp_path: Path) -> None:
    from helpers import cli

    mine = tmp_path / "my[1].txt"
    mine.write_text("emma\n", encoding="utf-8")
    status, out, err = cli("data", "fetch", "names", f"data.path={mine}", "--data-dir", tmp_path / "data")
    assert status == 0 and "nothing to fetch" in out, err


def test_the_data_commands_that_prepare_nothing_start_without_torch(tmp_path: Path) -> None:
    """`rnnlm data list` and `fetch` answer in half a second: importing torch would take five (vocab.py imported
    it for its encoders, which these commands never call)."""
    script = ("import runpy, sys\nsys.argv = ['rnnlm', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('rnnlm', run_name='__main__')\n"
              "finally:\n    print('torch' in sys.modules, file=sys.__stderr__)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RNNLM_DATA_MIRROR": str(data_mirror())}
    for args in (["list"], ["fetch", "names"]):
        done = subprocess.run([sys.executable, "-c", script, "data", *args, "--data-dir", str(tmp_path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stderr.splitlines()[-1] == "False", (args, done.stderr)


def test_out_never_replaces_the_mirror_copy_a_corpus_came_from(tmp_path: Path) -> None:
    """`sample RUN --out MIRROR/names/names.txt` replaced the data mirror's copy (its mode too), and every later
    fetch from the mirror failed its checksum."""
    import shutil

    mirror = tmp_path / "mirror"
    (mirror / "names").mkdir(parents=True)
    shutil.copyfile(data_mirror() / "names" / "names.txt", mirror / "names" / "names.txt")  # writable
    env = {"RNNLM_DATA_MIRROR": str(mirror)}
    trained = run_cli("train", str(REPO / "configs" / "tiny.yaml"), "data.dataset=names", "train.max_steps=2",
                      "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path), "--name", "r", "-q", env=env)
    assert trained.returncode == 0, trained.stderr
    target = mirror / "names" / "names.txt"
    refused = run_cli("sample", str(tmp_path / "r"), "-N", "2", "--out", str(target), env=env)
    assert refused.returncode == 2 and "part of the text the run trained on" in refused.stderr, refused.stderr
    assert target.stat().st_size == 228145
