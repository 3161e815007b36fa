"""`rnnlm data list|fetch|info`, run as a user would (a subprocess), on the data mirror."""

from __future__ import annotations

from pathlib import Path

from conftest import run_cli
from corpus_fixtures import data_mirror


def test_fetch_then_list_then_info(tmp_path: Path) -> None:
    mirror = data_mirror()
    data = tmp_path / "data"
    fetched = run_cli("data", "fetch", "shakespeare", "--data-dir", str(data), env={"RNNLM_DATA_MIRROR": str(mirror)})
    assert fetched.returncode == 0, fetched.stderr
    assert (data / "shakespeare" / "input.txt").stat().st_size == 1115394

    listed = run_cli("data", "list", "--data-dir", str(data), "--mirror", str(mirror))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if not line.startswith(" ")}
    assert "present" in rows["shakespeare"] and "in mirror" in rows["names"]

    info = run_cli("data", "info", "names", "--data-dir", str(data), "--mirror", str(mirror))
    assert info.returncode == 0, info.stderr
    assert "32,033" in info.stdout and "'a' 33,885" in info.stdout


def test_unknown_corpus_is_one_line_and_status_2(tmp_path: Path) -> None:
    result = run_cli("data", "fetch", "shakespear", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "did you mean 'shakespeare'" in result.stderr
    assert "Traceback" not in result.stderr
