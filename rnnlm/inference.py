"""Reading with a trained model: what sampling, evaluation and the neuron pictures share.

- `load_model`: a checkpoint's model, in eval mode, on a device.
- `start_state`: the state a stream model starts reading from (see there why it is not zero).
- `start_ids`: what the model reads before the text it is given: `<eos>` for a record, a newline for a stream.
- `eval_mode`: dropout off for a block, the model's mode restored afterwards, whatever happens inside.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from rnnlm.checkpoint import Checkpoint
from rnnlm.config import Config
from rnnlm.errors import RnnlmError
from rnnlm.model import CharRNN, check_fits
from rnnlm.state import State, map_state, tensors
from rnnlm.vocab import EOS_ID, Vocab


def non_finite(point: Checkpoint) -> str | None:
    """What is wrong with a checkpoint whose weights hold NaN or infinite values, or None."""
    bad = [name for name, t in point.model.items() if not torch.isfinite(t).all()]
    if not bad:
        return None
    return (f"{point.path}: {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} hold NaN or infinite values "
            "(the run diverged before this checkpoint?)")


def load_model(point: Checkpoint, device: torch.device | str = "cpu", force: bool = False) -> CharRNN:
    """The checkpoint's model, in eval mode, on `device` (whose free memory is checked first). Weights that are NaN
    or infinite would sample garbage and score nan: refused, or with `force` used with a warning."""
    message = non_finite(point)
    if message:
        if not force:
            raise RnnlmError(f"{message}; use another checkpoint, or --force to use it anyway")
        warnings.warn(message, stacklevel=2)
    check_fits(len(point.vocab), point.config.model, torch.device(device))
    model = CharRNN(len(point.vocab), point.config.model).to(device)
    model.load_state_dict(point.model)
    return model.eval()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off inside the block; the model's training mode is restored when it ends, also on an error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def start_ids(vocab: Vocab, prime: str, records: bool, warm: bool = False) -> torch.Tensor:
    """What the model reads before it writes: a record starts after <eos>; a stream's prime is read as the
    start of a line, after a newline if the corpus has one, when it is empty or `warm` (the model reads it
    from a state carried over earlier text, see `start_state`); else, with nothing to follow, after <eos>."""
    if records:
        return torch.cat([torch.tensor([EOS_ID]), vocab.encode(prime)])
    if prime and not (warm and "\n" in vocab.itos):
        return vocab.encode(prime)
    return vocab.encode("\n" + prime) if "\n" in vocab.itos else torch.cat([torch.tensor([EOS_ID]), vocab.encode(prime)])


def start_state(point: Checkpoint, device: torch.device | str = "cpu") -> State | None:
    """The state a stream model starts writing from. Trained with `train.batching: sequential`, a model meets
    the zero state only at the start of each epoch, so a prime read from zero can leave a model of few epochs
    writing noise for a hundred characters (a 1x512 LSTM after 78 s wrote 'ROMEO:X&&3$3&3&&&&&$&&'); it
    starts instead from the state training's first row had reached at the checkpoint (saved for resuming),
    left by real text. Every other model (random windows, records) read every window from zero: None."""
    carried = point.train.state if point.train is not None else None
    start = warm_start(carried, point.config, point.records)
    if start is not None and not all(torch.isfinite(t).all() for t in tensors(start)):
        warnings.warn(f"{point.path}: the state training carried holds NaN or infinite values (it overflowed?); "
                      "reading from the zero state instead", stacklevel=2)
        return None
    return map_state(lambda t: t.to(device), start)


def warm_start(carried: State | None, cfg: Config, records: bool) -> State | None:
    """The first row of a training state (L, B, H), or an LSTM's (h, c) pair, detached and in float32: where
    a model trained on sequential streams starts writing (see `start_state`); None for any other model."""
    if records or cfg.train.batching != "sequential":
        return None
    return map_state(lambda t: t[:, :1].detach().float(), carried)
