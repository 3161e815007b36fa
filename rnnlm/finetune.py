"""Starting a run from a trained model's weights (`train.init_from`): fine-tuning on another corpus.

The model section must match the trained model's (the same cell, sizes, encoding; the dropout may differ), so every
weight has a place to go. The vocabulary need not: with `train.init_vocab: extend` the new corpus's training characters that the model
never saw join its vocabulary, their rows of the input weights (the one-hot columns of W_ih, or the embedding) and
of the decoder initialised as a new model's would be; with `keep` the model's vocabulary stays and those
characters are read as <unk>. Vocabularies are sorted, so a character's id can move: each row goes to its
character's new place. The optimizer, the schedule and the counters start afresh.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from rnnlm import checkpoint as ckpt
from rnnlm.config import Config, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.inference import non_finite
from rnnlm.model import CharRNN
from rnnlm.vocab import EOS, UNK, Vocab


FREE = ("dropout", "forget_bias")
"""Model keys a fine-tuned run may set anew: neither shapes a weight (forget_bias only initialises one)."""


def _unused(model: ModelConfig) -> tuple[str, ...]:
    """Model keys this model does not read: embed_dim without an embedding, nonlinearity but for the vanilla RNN."""
    return (("embed_dim",) if model.encoding == "onehot" else ()) + (("nonlinearity",) if model.cell != "rnn" else ())


@dataclass
class Start:
    """Where a fine-tuned run starts: the trained model's checkpoint and the vocabulary the new run reads with."""

    point: ckpt.Checkpoint
    vocab: Vocab
    new_characters: list[str]


def start_from(cfg: Config, corpus_vocab: Vocab, point: ckpt.Checkpoint | None = None) -> Start:
    """The checkpoint `train.init_from` names (`point`, when `starting_point` read it already), and the vocabulary
    to train with."""
    point = point or starting_point(cfg)
    known = set(point.vocab.itos)
    new = [c for c in corpus_vocab.itos[2:] if c not in known]
    if cfg.train.init_vocab == "keep" or not new:
        return Start(point, point.vocab, new)
    return Start(point, Vocab((EOS, UNK, *sorted(set(point.vocab.itos[2:]) | set(new)))), new)


def starting_point(cfg: Config) -> ckpt.Checkpoint:
    """The checkpoint `train.init_from` names, checked against the config: before the corpus is read (preparing one
    takes a while, and a model of another shape is refused whatever the corpus)."""
    path = Path(cfg.train.init_from).expanduser()  # type: ignore[arg-type]
    word = os.path.relpath(path)  # as typed: the config made it absolute against the working folder
    if word in ("resume", "scratch") and not path.exists():  # nanoGPT's two other values
        raise RnnlmError(f"train.init_from={word}: no such checkpoint or run directory; nanoGPT's init_from={word} is "
                         + ("rnnlm train --resume RUN here" if word == "resume" else
                            "the default here: leave train.init_from out"))
    try:
        point = ckpt.load(path)
    except RnnlmError as e:  # name the key that named the file
        raise RnnlmError(f"train.init_from: {e}") from None
    broken = non_finite(point)
    if broken:
        raise RnnlmError(f"train.init_from: {broken}; start from another checkpoint (an earlier one of the run?)")
    ignored = FREE + _unused(cfg.model) + _unused(point.config.model)  # (an encoding or cell change is named itself)
    differ = [f.name for f in fields(cfg.model) if f.name not in ignored
              and getattr(cfg.model, f.name) != getattr(point.config.model, f.name)]
    if differ:
        theirs = ", ".join(f"model.{k}={getattr(point.config.model, k)!r}" for k in differ)
        raise RnnlmError(f"train.init_from={path}: its model differs in {', '.join('model.' + k for k in differ)}; "
                         f"the model section must match the trained model's ({theirs})")
    return point


@torch.no_grad()
def transplant(model: CharRNN, start: Start) -> None:
    """The trained weights into `model` (freshly initialised for `start.vocab`), each vocabulary row at its
    character's place; rows of new characters keep their fresh values."""
    old, new = start.point.vocab, start.vocab
    where = torch.tensor([new.itos.index(c) for c in old.itos])  # old id -> new id
    by_row = {"decoder.weight", "decoder.bias", "embed.weight"}
    for name, value in model.state_dict().items():
        trained = start.point.model[name]
        if name in by_row:
            value[where] = trained.to(value.dtype)
        elif name == "rnn.weight_ih_l0" and model.embed is None:  # one-hot input: a column per character
            value[:, where] = trained.to(value.dtype)
        else:
            value.copy_(trained)
