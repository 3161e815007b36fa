"""`shakespeare`: tiny Shakespeare, the 1 MB char-rnn corpus of plays, as one stream.

Downloaded once into `<data root>/shakespeare/input.txt` (or copied from the mirror) and checked
against its published sha256. Splits are contiguous spans, so val and test are later scenes that
training never reads.
"""

from __future__ import annotations

from rnnlm.config import DataConfig
from rnnlm.data import DataRoot, register
from rnnlm.data.download import Remote, fetch
from rnnlm.data.store import Source
from rnnlm.data.text import stream_source

SHAKESPEARE = Remote(
    relpath="shakespeare/input.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    size=1_115_394,
)


@register("shakespeare")
def shakespeare(cfg: DataConfig, seed: int, root: DataRoot) -> Source:
    path = fetch(SHAKESPEARE, root)
    return stream_source("shakespeare", str(path), cfg, [path])
