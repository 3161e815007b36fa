"""The recurrent state, and the one place that handles its two shapes.

A vanilla RNN's or a GRU's state is one tensor h (layers, rows, hidden); an LSTM's is the pair (h, c). Code that
moves, cuts, gathers or compares states does it through `map_state`, so that no caller tests which shape it holds
(as PyTorch's word_language_model does with its one `repackage_hidden`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

State = Tensor | tuple[Tensor, Tensor]


def map_state(fn: Callable[..., Any], state: State | None, *others: State | None) -> Any:
    """fn applied to each tensor of `state` (and the matching tensors of `others`), in the same shape; None stays
    None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(fn(*parts) for parts in zip(state, *others, strict=True))
    return fn(state, *others)


def tensors(state: State) -> tuple[Tensor, ...]:
    """The tensors of a state: (h,) or (h, c)."""
    return state if isinstance(state, tuple) else (state,)


def select_rows(state: State | None, index: Any) -> State | None:
    """Rows `index` of a state (layers, rows, hidden): a slice, a list or a tensor of row numbers."""
    return map_state(lambda s: s[:, index], state)


def expand_rows(state: State | None, n: int) -> State | None:
    """One row of state (layers, 1, hidden) as n rows."""
    return map_state(lambda s: s.expand(-1, n, -1).contiguous(), state)


def where_rows(keep: Tensor, old: State, new: State) -> State:
    """Per row, `old` where keep (rows,) is True, else `new`."""
    return map_state(lambda o, w: torch.where(keep[None, :, None], o, w), old, new)
