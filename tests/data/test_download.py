"""The real download code against a local HTTP server on 127.0.0.1: nothing here touches the network."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rnnlm.data import DataRoot
from rnnlm.data import download
from rnnlm.data.download import Remote, fetch
from rnnlm.errors import RnnlmError
from corpus_fixtures import refused_url
from helpers import REPO

BODY = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode() * 200
DIGEST = hashlib.sha256(BODY).hexdigest()
ASKED: dict[str, list[str]] = {}  # a server's URL: the paths it was asked for


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves the files the test wrote into `self.server.folder`; `/drop/NAME` stops halfway through, `/trickle/NAME`
    sends a byte every 20 ms (never a pause long enough for a read to time out), `/slow/NAME` waits half a second first.
    The paths asked for are kept in `self.server.asked` (ASKED)."""

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.server.asked.append(self.path)  # type: ignore[attr-defined]
        how, _, name = self.path.lstrip("/").rpartition("/")
        if how == "slow":  # long enough for a second process to ask meanwhile
            time.sleep(0.5)
        path = self.server.folder / name  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.close_connection = how != ""
        if how != "trickle":
            self.wfile.write(body[: len(body) // 2] if how == "drop" else body)
            return
        with contextlib.suppress(OSError):  # until the client gives up
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.02)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """Base URL of a server on 127.0.0.1 serving tmp_path/served."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "input.txt").write_bytes(BODY)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.folder = folder  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.asked = ASKED[url] = []  # type: ignore[attr-defined]
    yield url
    httpd.shutdown()
    httpd.server_close()


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_download_succeeds_and_is_reused(server: str, tmp_path: Path) -> None:
    offline_url = refused_url()
    root = DataRoot(tmp_path / "data")
    got = fetch(Remote("corpus/input.txt", f"{server}/input.txt", DIGEST), root, timeout=5)
    assert got == root.path / "corpus" / "input.txt"
    assert got.read_bytes() == BODY
    assert sorted(leftovers(root.path)) == [root.path / DataRoot.MARK, got]  # no temporary file left beside it
    # The second time the file is already there: no network needed.
    again = fetch(Remote("corpus/input.txt", offline_url, DIGEST), root, timeout=5)
    assert again == got


def test_processes_fetching_one_file_at_once_download_it_once(server: str, tmp_path: Path) -> None:
    """torchrun's ranks each open the corpus: each downloaded it (eight ranks, the kernel tarball eight times over).
    The first downloads, the others wait for it and read its file."""
    script = ("import sys, time\nfrom pathlib import Path\nfrom rnnlm.data import DataRoot\n"
              "from rnnlm.data.download import Remote, fetch\n"
              "time.sleep(max(0.0, float(sys.argv[4]) - time.time()))\n"  # all three ask at once, however loaded
              "print(fetch(Remote('corpus/input.txt', sys.argv[2], sys.argv[3]), DataRoot(Path(sys.argv[1])), "
              "timeout=10, progress=False))\n")
    args = [sys.executable, "-c", script, str(tmp_path / "data"), f"{server}/slow/input.txt", DIGEST,
            str(time.time() + 5)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ranks = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outcomes = [rank.communicate(timeout=60) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0, 0], outcomes
    target = tmp_path / "data" / "corpus" / "input.txt"
    assert {out.strip() for out, _ in outcomes} == {str(target)} and target.read_bytes() == BODY
    lock = target.with_name(".input.txt.lock")  # made again by a waiter, kept: `rnnlm data clean` removes it
    assert sorted(leftovers(tmp_path / "data")) == [tmp_path / "data" / DataRoot.MARK, lock, target]
    assert ASKED[server] == ["/slow/input.txt"]


def test_checksum_mismatch_names_both_digests_and_keeps_nothing(server: str, tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "data")
    wrong = "0" * 64
    with pytest.raises(RnnlmError) as e:
        fetch(Remote("corpus/input.txt", f"{server}/input.txt", wrong), root, timeout=5)
    assert DIGEST in str(e.value) and wrong in str(e.value)
    assert leftovers(root.path) == []


def test_http_404_is_a_short_error(server: str, tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "data")
    url = f"{server}/no-such-file.txt"
    with pytest.raises(RnnlmError) as e:
        fetch(Remote("corpus/input.txt", url, DIGEST), root, timeout=5)
    message = str(e.value)
    assert "HTTP 404" in message and url in message
    assert leftovers(root.path) == []


def test_connection_dropped_mid_file_keeps_nothing(server: str, tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "data")
    with pytest.raises(RnnlmError) as e:
        fetch(Remote("corpus/input.txt", f"{server}/drop/input.txt", DIGEST), root, timeout=5)
    assert f"dropped after {len(BODY) // 2} of {len(BODY)} bytes" in str(e.value)
    assert leftovers(root.path) == []


def test_a_server_that_trickles_fails_at_the_overall_deadline(server: str, tmp_path: Path, monkeypatch) -> None:
    """Each byte comes in time for the read timeout; the whole file would take minutes, past the deadline of
    timeout + size / MIN_SPEED (here 1 + 1 s)."""
    monkeypatch.setattr(download, "MIN_SPEED", len(BODY))
    root = DataRoot(tmp_path / "data")
    with pytest.raises(RnnlmError, match=r"is too slow \(([\d,]+) of 12,200 bytes after 2 s\); nothing was saved") as e:
        fetch(Remote("corpus/input.txt", f"{server}/trickle/input.txt", DIGEST), root, timeout=1)
    received = int(re.search(r"\(([\d,]+) of", str(e.value)).group(1).replace(",", ""))
    assert received < len(BODY) // 2  # seen while it trickled, not after a read that waited for the whole file
    assert leftovers(root.path) == []


def test_server_that_never_answers_fails_after_the_timeout(tmp_path: Path) -> None:
    # A listening socket that never accepts: the connection is made, the request sent, and no reply comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/input.txt"
        root = DataRoot(tmp_path / "data")
        with pytest.raises(RnnlmError) as e:
            fetch(Remote("corpus/input.txt", url, DIGEST), root, timeout=0.5)
    assert "timed out" in str(e.value) or "sent nothing" in str(e.value)
    assert leftovers(root.path) == []


def test_offline_without_mirror_says_what_where_url_and_mirror(tmp_path: Path) -> None:
    offline_url = refused_url()
    root = DataRoot(tmp_path / "data")
    url = offline_url
    with pytest.raises(RnnlmError) as e:
        fetch(Remote("shakespeare/input.txt", url, DIGEST), root, timeout=5)
    message = str(e.value)
    assert len(message.splitlines()) <= 5
    assert "shakespeare/input.txt" in message  # what is missing
    assert str(root.path / "shakespeare" / "input.txt") in message  # where to put it
    assert url in message and DIGEST in message  # where to get it, and how to check it
    assert "RNNLM_DATA_MIRROR" in message and "--mirror" in message


def test_a_mirror_that_is_not_there_is_called_so(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    for mirror, note in ((tmp_path / "mirror", "has none"), (tmp_path / "nope", "is no folder here")):
        with pytest.raises(RnnlmError) as e:
            fetch(Remote("shakespeare/input.txt", refused_url(), DIGEST), DataRoot(tmp_path / "data", mirror), timeout=5)
        assert f"(the mirror {mirror} {note})" in str(e.value)


def test_mirror_is_tried_before_the_network(tmp_path: Path) -> None:
    offline_url = refused_url()
    mirror = tmp_path / "mirror"
    (mirror / "corpus").mkdir(parents=True)
    (mirror / "corpus" / "input.txt").write_bytes(BODY)
    root = DataRoot(tmp_path / "data", mirror=mirror)
    got = fetch(Remote("corpus/input.txt", offline_url, DIGEST), root, timeout=5)
    assert got.read_bytes() == BODY
    assert (mirror / "corpus" / "input.txt").exists()  # copied, not moved


def test_mirror_file_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    offline_url = refused_url()
    mirror = tmp_path / "mirror"
    (mirror / "corpus").mkdir(parents=True)
    (mirror / "corpus" / "input.txt").write_bytes(BODY + b"edited")
    root = DataRoot(tmp_path / "data", mirror=mirror)
    with pytest.raises(RnnlmError) as e:
        fetch(Remote("corpus/input.txt", offline_url, DIGEST), root, timeout=5)
    assert str(mirror / "corpus" / "input.txt") in str(e.value) and DIGEST in str(e.value)
    assert leftovers(root.path) == []


def test_mirror_without_the_file_falls_back_to_the_network(server: str, tmp_path: Path) -> None:
    root = DataRoot(tmp_path / "data", mirror=tmp_path / "empty-mirror")
    got = fetch(Remote("corpus/input.txt", f"{server}/input.txt", DIGEST), root, timeout=5)
    assert got.read_bytes() == BODY


def test_damaged_file_in_the_data_root_is_an_error_not_reused(tmp_path: Path) -> None:
    offline_url = refused_url()
    root = DataRoot(tmp_path / "data")
    (root.path / "corpus").mkdir(parents=True)
    (root.path / "corpus" / "input.txt").write_bytes(BODY[:-10])
    with pytest.raises(RnnlmError, match="Delete it.*or use data.dataset=text data.path=FILE for your own text"):
        fetch(Remote("corpus/input.txt", offline_url, DIGEST), root, timeout=5)
    (root.path / "names").mkdir()
    (root.path / "names" / "names.txt").write_bytes(BODY[:-10])  # a list of one's own: still one record per line
    with pytest.raises(RnnlmError, match="or give your own list with data.path=FILE \\(one record per line\\)"):
        fetch(Remote("names/names.txt", offline_url, DIGEST), root, timeout=5)
    (root.path / "linux").mkdir()
    (root.path / "linux" / "linux-6.1.tar.xz").write_bytes(BODY[:-10])  # a tarball of one's own where the pin goes
    with pytest.raises(RnnlmError, match="or give your own kernel tree or tarball with data.path=PATH"):
        fetch(Remote("linux/linux-6.1.tar.xz", offline_url, DIGEST), root, timeout=5)


def test_a_mirror_given_as_a_url_is_refused_naming_what_a_mirror_is(tmp_path: Path) -> None:
    with pytest.raises(RnnlmError, match="the data mirror http://127.0.0.1:8765/ .* is a URL; a mirror is a local "
                                         "folder"):
        DataRoot.resolve(tmp_path, "http://127.0.0.1:8765/")


@pytest.mark.parametrize("blocking", ["the data root is a file", "a file where the corpus folder goes",
                                      "a folder where the corpus file goes"])
def test_a_data_root_the_file_cannot_go_in_is_one_error_naming_it(tmp_path: Path, blocking: str) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "corpus").mkdir(parents=True)
    (mirror / "corpus" / "input.txt").write_bytes(BODY)
    root = DataRoot(tmp_path / "data", mirror=mirror)
    if blocking == "the data root is a file":
        root.path.write_text("x")
    elif blocking == "a file where the corpus folder goes":
        root.path.mkdir()
        (root.path / "corpus").write_text("x")
    else:
        (root.path / "corpus" / "input.txt").mkdir(parents=True)
    with pytest.raises(RnnlmError, match=r"^cannot write .*\(.*\); choose a writable data root"):
        fetch(Remote("corpus/input.txt", refused_url(), DIGEST), root, timeout=5)


def test_a_file_size_limit_is_one_error_naming_the_file(tmp_path: Path) -> None:
    """`ulimit -f` (EFBIG) ended the copy from the mirror with a traceback."""
    mirror = tmp_path / "mirror"
    (mirror / "corpus").mkdir(parents=True)
    (mirror / "corpus" / "input.txt").write_bytes(BODY)
    script = ("import resource, sys\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
              "from pathlib import Path\n"
              "from rnnlm.data import DataRoot\n"
              "from rnnlm.data.download import Remote, fetch\n"
              "from rnnlm.errors import RnnlmError\n"
              "try:\n"
              f"    fetch(Remote('corpus/input.txt', sys.argv[3], '{DIGEST}'), DataRoot(Path(sys.argv[1]), "
              "Path(sys.argv[2])), timeout=5)\n"
              "except RnnlmError as e:\n"
              "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data"), str(mirror), refused_url()],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert re.match(r"^cannot write .*input\.txt.* \(File too large\); choose a writable data root", done.stdout), \
        done.stdout
    assert not list((tmp_path / "data" / "corpus").iterdir())  # nothing half-written is left


def test_a_corpus_file_that_cannot_be_read_is_one_error_naming_it(tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "corpus").mkdir(parents=True)
    (mirror / "corpus" / "input.txt").write_bytes(BODY)
    opened = Path.open

    def refuse(path: Path, *args, **kwargs):  # as for another user's file, mode 600 (the tests run as root)
        if path.name == "input.txt" and "r" in (args[0] if args else kwargs.get("mode", "r")):
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    for root in (DataRoot(tmp_path / "data", mirror=mirror), DataRoot(mirror.parent / "mirror")):
        with pytest.raises(RnnlmError, match=r"input.txt: cannot read it \(Permission denied\)"):
            fetch(Remote("corpus/input.txt", refused_url(), DIGEST), root, timeout=5)
