"""The preparation cache: reused on the next run, rebuilt when the source or the settings change.

The Linux corpus through the cache is tested in test_linux.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rnnlm.data.cache import cached_text


def test_cached_text_is_reused_until_identity_or_settings_change(tmp_path: Path) -> None:
    builds: list[str] = []

    def build(text: str) -> Callable[[], str]:
        def make() -> str:
            builds.append(text)
            return text
        return make

    folder = tmp_path / "cache"
    assert cached_text(folder, "src", "v1", {"limit": 1}, build("one")) == "one"
    assert cached_text(folder, "src", "v1", {"limit": 1}, build("two")) == "one"  # reused
    assert cached_text(folder, "src", "v2", {"limit": 1}, build("three")) == "three"  # the source changed
    assert cached_text(folder, "src", "v2", {"limit": 2}, build("four")) == "four"  # other settings, other file
    assert cached_text(folder, "src", "v2", {"limit": 1}, build("five")) == "three"  # the first settings' file is kept
    assert builds == ["one", "three", "four"]
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".json", ".txt", ".txt"]  # nothing stale or partial


def test_a_cache_with_damaged_metadata_is_rebuilt(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    cached_text(folder, "src", "v1", {}, lambda: "text\r\n")
    for meta in folder.glob("*.json"):
        meta.write_text("{not json")
    assert cached_text(folder, "src", "v1", {}, lambda: "rebuilt") == "rebuilt"
    assert cached_text(folder, "src", "v1", {}, lambda: "again") == "rebuilt"
