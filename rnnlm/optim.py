"""The optimizer and the learning-rate schedule a config asks for."""

from __future__ import annotations

import math

import torch

from rnnlm.config import Config


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    # alpha: char-rnn's RMSprop smoothing (its -decay_rate, 0.95), where torch's default is 0.99
    return torch.optim.RMSprop(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, alpha=0.95)


def learning_rate(cfg: Config, step: int, epoch: int, clock: float = 0.0, epochs: float = 0.0) -> float:
    """The rate for optimizer step `step` (0-based) in epoch `epoch` (epochs completed before it), `clock`
    seconds into the run, `epochs` read with its minibatch. The cosine decays over whichever budget ends first,
    `max_steps`, `max_epochs` (as the steps it holds at the pace so far) or `max_time`, from `lr` at the warmup's
    last step (or the first step) to the floor rate at the run's last step (a time budget's share is of the whole
    clock, the warmup's seconds included, so its decay starts a little along). (A run given a time budget depends on
    the clock anyway: where it stops does; runs without `max_time` never read it.)"""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        progress, peak = 0.0, max(t.warmup_steps - 1, 0)  # the warmup's last step, or the first without one
        if t.max_steps is not None:
            progress = (step - peak) / max(1, t.max_steps - 1 - peak)
        if t.max_epochs is not None and epochs > 0:  # its last step reads the last of max_epochs
            steps = (step + 1) * t.max_epochs / epochs
            progress = max(progress, (step - peak) / max(1.0, steps - 1 - peak))
        if t.max_time is not None:
            progress = max(progress, clock / t.max_time)
        progress = min(1.0, progress)
        return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if t.schedule == "char_rnn":
        # char-rnn decays the rate at the end of each epoch k >= `learning_rate_decay_after` (k counted from 1)
        return t.lr * t.decay_rate ** max(0, epoch - max(t.decay_after, 1) + 1)
    return t.lr
