"""The character vocabulary: the characters of the training split plus two specials.

    id 0  <eos>  end of a record (line-per-record corpora); also the "start" input of a record
    id 1  <unk>  any character the training split never showed
    id 2… the training characters, sorted by code point

A vocabulary is saved inside every checkpoint as a plain list of strings, so a checkpoint is
readable without this code and loads without unpickling objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EOS = "<eos>"
UNK = "<unk>"
EOS_ID = 0
UNK_ID = 1


@dataclass(frozen=True)
class Vocab:
    itos: tuple[str, ...]
    _codes: np.ndarray = field(init=False, repr=False, compare=False)  # sorted code points of itos[2:]

    def __post_init__(self) -> None:
        if self.itos[:2] != (EOS, UNK) or any(len(c) != 1 for c in self.itos[2:]):
            raise ValueError("a vocabulary is <eos>, <unk>, then single characters")
        codes = np.array([ord(c) for c in self.itos[2:]], dtype=np.int64)
        if np.any(np.diff(codes) <= 0):
            raise ValueError("vocabulary characters must be sorted and distinct")
        object.__setattr__(self, "_codes", codes)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Vocab":
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls((EOS, UNK, *sorted(chars)))

    @classmethod
    def from_list(cls, itos: Sequence[str]) -> "Vocab":
        return cls(tuple(itos))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """Characters -> int64 ids; unseen characters become <unk>. Vectorised (no Python loop per character)."""
        import torch  # here, not above: the data commands read vocabularies, and they run without torch

        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(self._codes) == 0:
            return torch.full((len(points),), UNK_ID, dtype=torch.long)
        pos = np.minimum(np.searchsorted(self._codes, points), len(self._codes) - 1)
        return torch.from_numpy(np.where(self._codes[pos] == points, pos + 2, UNK_ID))

    def encode_records(self, records: Sequence[str]) -> torch.Tensor:
        """One stream `<eos> r1 <eos> r2 ... <eos>`: each record is read from the <eos> before it and ends in one."""
        import torch

        lengths = np.array([len(r) for r in records], dtype=np.int64)
        out = torch.full((int(lengths.sum()) + len(records) + 1,), EOS_ID, dtype=torch.long)
        # character j of the joined text belongs to record k and lands after k + 1 <eos> ids
        shift = np.repeat(np.arange(len(records)), lengths) + 1
        out[torch.from_numpy(np.arange(int(lengths.sum())) + shift)] = self.encode("".join(records))
        return out

    def encode_split(self, texts: Sequence[str], records: bool, records_mode: str = "pack") -> torch.Tensor | list[torch.Tensor]:
        """A split's texts as a model reads them: a stream corpus as one stream of ids; records packed into one
        stream (`encode_records`), or with `records_mode` "pad" as one tensor of ids per record."""
        if not records:
            return self.encode("".join(texts))
        if records_mode == "pad":  # one vectorised encode, cut into records (views of it)
            import torch

            return list(torch.split(self.encode("".join(texts)), [len(r) for r in texts]))
        return self.encode_records(texts)

    def lacking(self, counts: dict[str, int]) -> dict[str, int]:
        """Of a split's character counts, those of the characters the vocabulary lacks (read as <unk>)."""
        known = set(self.itos[2:])
        return {c: n for c, n in counts.items() if n and c not in known}

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` the vocabulary lacks, in order of first appearance."""
        known = set(self.itos[2:])
        return list(dict.fromkeys(c for c in text if c not in known))

    def decode(self, ids: Iterable[int], eos: str = "\n", unk: str = "\ufffd") -> str:
        return "".join(eos if i == EOS_ID else unk if i == UNK_ID else self.itos[i] for i in ids)


SHOWN_UNKNOWN = 20
"""Characters a warning of characters a model never saw names; more are `...`."""


def listed(chars: Sequence[str]) -> str:
    """Characters as a warning names them: one by one, quoted (a tab, a CR or a U+2028 shows as what it is)."""
    more = ", ..." if len(chars) > SHOWN_UNKNOWN else ""
    return ", ".join(map(repr, chars[:SHOWN_UNKNOWN])) + more
