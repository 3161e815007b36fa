"""Where training records go: `metrics.jsonl`, one JSON object per line, flushed as written.

Training records carry `step`, `epoch`, `train_loss`, `lr`, `grad_norm`, `chars_per_sec`, `elapsed`;
evaluation records carry `step`, `val_loss`, `bpc`, `perplexity`, `elapsed`. Scripts and tests read
the file back with `read_metrics`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

METRICS = "metrics.jsonl"


class MetricLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JsonlLogger:
    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics file (a line cut off by a crash is skipped)."""
    records = []
    if path.is_dir():
        path = path / METRICS
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the checkpoint a run resumes from), atomically."""
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    os.replace(tmp, path)
