"""The character language model: input encoding -> stacked recurrent cells -> linear decoder.

One `forward(tokens, state) -> (logits, state)` serves training, evaluation and sampling, so the
three can never disagree about how a character is read.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from rnnlm import cells, reference
from rnnlm.config import ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.state import State

STACKS: dict[str, type[nn.Module]] = {"rnn": cells.RNN, "lstm": cells.LSTM, "gru": cells.GRU}
"""The recurrent stack's module by `model.cell`."""


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        if cfg.encoding == "embedding":
            self.embed: nn.Embedding | None = nn.Embedding(vocab_size, cfg.embed_dim)
            input_size = cfg.embed_dim
        else:
            # One-hot x_t: W_ih x_t is column x_t of W_ih, so layer 0 reads its input projection by
            # indexing weight_ih_l0 (see `forward`); no (B, T, V) one-hot tensor is ever built.
            self.embed = None
            input_size = vocab_size
        kwargs = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
        self.rnn = STACKS[cfg.cell](input_size, cfg.hidden_size, cfg.num_layers, dropout=cfg.dropout, **kwargs)
        if cfg.cell == "lstm" and cfg.forget_bias:
            self._init_forget_bias(cfg.forget_bias)
        self.drop = nn.Dropout(cfg.dropout)  # on the last layer's output; the cells drop between layers
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)

    @torch.no_grad()
    def _init_forget_bias(self, value: float) -> None:
        """Gates are i, f, g, o in torch's order: the forget gate's bias is rows [H, 2H) (the two biases add up)."""
        h = self.cfg.hidden_size
        for layer in range(self.cfg.num_layers):
            getattr(self.rnn, f"bias_ih_l{layer}")[h:2 * h] = value
            getattr(self.rnn, f"bias_hh_l{layer}")[h:2 * h] = 0.0

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (B, T) int64 -> logits (B, T, V) and the state after the last character."""
        time_major = tokens.t()  # (T, B): the cells run time-major
        if self.embed is None:
            weight = self.rnn.weight_ih_l0  # (G*H, V)
            xproj = F.embedding(time_major, weight.t()) + self.rnn.bias_ih_l0  # (T, B, G*H)
            output, state = self.rnn.forward_projected(xproj, state)
        else:
            output, state = self.rnn(self.embed(time_major), state)  # (T, B, H)
        logits = self.decoder(self.drop(output))  # (T, B, V)
        return logits.transpose(0, 1), state

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state a sequence starts from."""
        weight = self.decoder.weight
        zeros = torch.zeros(self.cfg.num_layers, batch_size, self.cfg.hidden_size, device=device or weight.device,
                            dtype=weight.dtype)
        return (zeros, zeros.clone()) if self.cfg.cell == "lstm" else zeros



GATES = {cell: reference.GATES[mode] for cell, mode in (("rnn", "RNN_TANH"), ("lstm", "LSTM"), ("gru", "GRU"))}
"""Gates by `model.cell`."""


def parameter_shapes(vocab_size: int, cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The model's state dict, name -> shape, computed without building it (not even on the meta device: there the
    initialisers run through torch._refs, which imports torch._dynamo, seconds more for every `sample` and `eval`)."""
    gates, hidden = GATES[cfg.cell] * cfg.hidden_size, cfg.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.encoding == "embedding":
        shapes["embed.weight"] = (vocab_size, cfg.embed_dim)
    for layer in range(cfg.num_layers):
        inputs = (vocab_size if cfg.encoding == "onehot" else cfg.embed_dim) if layer == 0 else hidden
        shapes[f"rnn.weight_ih_l{layer}"] = (gates, inputs)
        shapes[f"rnn.weight_hh_l{layer}"] = (gates, hidden)
        shapes[f"rnn.bias_ih_l{layer}"] = (gates,)
        shapes[f"rnn.bias_hh_l{layer}"] = (gates,)
    shapes["decoder.weight"] = (vocab_size, hidden)
    shapes["decoder.bias"] = (vocab_size,)
    return shapes


def memory_needed(vocab_size: int, cfg: ModelConfig, batch: int = 0, steps: int = 0) -> int:
    """Bytes a model of this config needs, roughly: its float32 weights, and when it trains (`batch` x `steps` > 0)
    their gradients and Adam's two averages, and what each step keeps for the backward pass (about 8 floats per
    unit, row and step and layer, an LSTM's gates, cell and output among them; and 3 per symbol, row and step: the
    logits, their log-softmax and its gradient, which a vocabulary of 60,000 CJK characters makes the most)."""
    # Every layer after the first has the same shapes: counted from a one- and a two-layer stack, not name by name
    # (a typo's ten million layers would take gigabytes of names before the refusal).
    one, two = (sum(math.prod(shape) for shape in parameter_shapes(vocab_size, replace(cfg, num_layers=n)).values())
                for n in (1, 2))
    weights = one + (cfg.num_layers - 1) * (two - one)
    if not batch:
        return 4 * weights
    kept = (8 * cfg.hidden_size * cfg.num_layers + 3 * vocab_size) * batch * steps
    return 4 * (4 * weights + kept)


def check_fits(vocab_size: int, cfg: ModelConfig, device: torch.device, batch: int = 0, steps: int = 0,
               padded: bool = False, resumed: bool = False, world: int = 1, here: int = 1) -> None:
    """Refuse, before allocating anything, a model that cannot fit in the memory the device has free; `padded`:
    a step reads whole records (`data.records: pad`), `steps` the widest batch's; `resumed`: the run's settings stay
    (a new run from its weights can change them). Under torchrun `world` processes share the batch, and `here` of
    them the device's memory (CPU processes of one machine)."""
    need = here * memory_needed(vocab_size, cfg, batch // world, steps)
    have = available_memory(device)
    if have is None or need <= have:
        return
    model = f"model.hidden_size={cfg.hidden_size} with model.num_layers={cfg.num_layers}" + (
        f" and model.embed_dim={cfg.embed_dim}" if cfg.encoding == "embedding" else "")
    # training keeps every step's activations: the batch and the window count as much as the model's size
    window = f"records of up to {steps - 1:,} characters read whole" if padded else f"train.seq_len={steps}"
    how = f"to train on train.batch_size={batch} x {window}" if batch else "to load"
    if here > 1:
        how += f" in {here} processes on this machine"
    fix = ("a smaller model, train.batch_size, or data.records=pack (records read in train.seq_len windows)" if padded
           else "a smaller model, train.batch_size or train.seq_len") if batch else "a smaller model"
    if resumed:  # a resume refuses those changes
        fix += " in a new run from this one's weights (rnnlm train CONFIG --init-from RUN)"
    raise RnnlmError(f"{model} needs about {need / 1e9:,.{1 if need < 1e11 else 0}f} GB {how}, and {device.type} "
                     f"has {have / 1e9:,.1f} GB free; choose {fix}")


def available_memory(device: torch.device) -> int | None:
    """Free bytes on `device`: a CUDA device's free memory, or the machine's available memory (Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
