"""`names`: 32,033 US baby names, one record per line (makemore's data set).

Each name is one record, ended by `<eos>` when encoded, so a model learns where a name stops.
Splits are by record, shuffled with the seed: no name is cut across two splits, and the same seed
gives the same splits. `data.path` may name your own line-per-record file (words, titles, SMILES ...)
to use instead; see `line_records` for how lines become records (an empty line is an error).
"""

from __future__ import annotations

from pathlib import Path

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, register
from rnnlm.data.download import Remote, fetch
from rnnlm.data.store import Source
from rnnlm.data.text import READING, files_identity, line_records

NAMES = Remote(
    relpath="names/names.txt",
    url="https://raw.githubusercontent.com/karpathy/makemore/master/names.txt",
    sha256="0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d",
    size=228_145,
)


@register("names")
def names(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    path = Path(cfg.path).expanduser() if cfg.path else fetch(NAMES, root)
    if not path.is_file():
        line_records(path)  # the message for a path that is missing or not a file
    return Source("names", {"files": files_identity([path])},
                  {"path": str(path.resolve()), "max_bytes": cfg.max_bytes, **READING}, cfg.splits,
                  records=lambda: line_records(path, cfg.max_bytes), seed=seed)
