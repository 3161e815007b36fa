"""Typed configuration: four dataclasses read from YAML, with `section.key=value` overrides.

This module imports no torch, so `rnnlm --help` and config errors are instant.

Every field carries a docstring-style comment. Values are checked twice: their type when read (so a
string where a number belongs is named with its key), and their meaning in `__post_init__` (ranges
and contradictions). Either way the user gets one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from rnnlm.errors import RnnlmError

Cell = Literal["rnn", "lstm", "gru"]


class ConfigError(RnnlmError):
    """A config value that is unknown, of the wrong type or out of range."""


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxtuple, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother = 2, 4, 4, 4, 60, 60


SEVERAL_FILES = "for several files, give their folder or a glob (notes/*.txt)"
"""What data.path takes instead of a list (in a config file, or typed as one on a command line)."""


def show(value: Any) -> str:
    """A value for a message as YAML writes it (null, true), cut short: a YAML alias bomb in a config must cost a
    line, not the machine."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return _SHOW.repr(value)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={show(value)} is not allowed: {allowed}")


@dataclass
class DataConfig:
    dataset: str = "text"
    """Which corpus: `text` (your own files), `hello` and `anbn` (tiny built-ins that prove learning),
    or a named corpus (`shakespeare`, `names`, `linux`)."""

    path: str | None = None
    """For `text`: a file, a directory or a glob of UTF-8 files. For `linux`: a kernel tree or tarball
    (default: the one in the data root, else /usr/src/linux-source-*.tar.xz, else a download). For
    `names`: your own file of one record per line instead of the downloaded names."""

    splits: tuple[float, float, float] = (0.9, 0.05, 0.05)
    """Fractions of the corpus for train, val and test: contiguous spans of a stream corpus,
    shuffled records of a line corpus."""

    records: Literal["pack", "pad"] = "pack"
    """For line-per-record corpora: `pack` joins records into one stream separated by `<eos>`
    (char-rnn); `pad` batches whole records, with the padding masked out of the loss (makemore)."""

    subdirs: tuple[str, ...] = ()
    """For `linux`: only these folders of the kernel tree (e.g. [kernel, mm] or [drivers/net]); empty means all."""

    max_bytes: int | None = None
    """For corpora read from files (`text`, `shakespeare`, `names`, `linux`): read only the first this many
    bytes (for `linux`, of the sorted concatenation; for `names`, whole lines only), to keep a big corpus
    trainable."""

    def __post_init__(self) -> None:
        _require(len(self.splits) == 3 and all(0 <= s <= 1 for s in self.splits),
                 "data.splits", list(self.splits), "three fractions [train, val, test] in [0, 1]")
        _require(self.splits[0] > 0, "data.splits", list(self.splits), "the train fraction must be above 0")
        _require(abs(sum(self.splits) - 1) < 1e-6, "data.splits", list(self.splits), "fractions must add up to 1")
        _require(self.max_bytes is None or self.max_bytes > 0, "data.max_bytes", self.max_bytes, "a positive number of bytes")
        _require(not self.subdirs or self.dataset == "linux", "data.subdirs", list(self.subdirs),
                 "only data.dataset=linux has subdirectories to choose")
        _require(all(d.strip("/") and not d.startswith("/") and ".." not in d.split("/") for d in self.subdirs),
                 "data.subdirs", list(self.subdirs), "folders inside the kernel tree, such as kernel or drivers/net")
        _require(self.path != "", "data.path", self.path, "a file, a folder or a glob (an unset shell variable?), or null")
        _require(self.path is None or self.dataset not in ("shakespeare", "hello", "anbn", "genesis"), "data.path", self.path,
                 f"data.dataset={self.dataset} reads no files of yours; use data.dataset=text for your own text")


@dataclass
class ModelConfig:
    cell: Cell = "lstm"
    """The recurrence: `rnn` (vanilla), `lstm` or `gru`."""

    nonlinearity: Literal["tanh", "relu"] = "tanh"
    """For `rnn` only: the activation of the vanilla recurrence."""

    hidden_size: int = 128
    """Units per recurrent layer."""

    num_layers: int = 2
    """Stacked recurrent layers."""

    dropout: float = 0.0
    """Dropout on the output of every recurrent layer (between layers and before the decoder)."""

    encoding: Literal["onehot", "embedding"] = "onehot"
    """How a character enters the first layer: the seeds' one-hot x_t (a column lookup of W_ih, no dense
    one-hot matrix is built) or a learned embedding of `embed_dim` features."""

    embed_dim: int = 64
    """Width of the character embedding when `encoding: embedding`."""

    forget_bias: float = 1.0
    """For `lstm` only: the forget gates' initial bias, so that a new network remembers by default
    (Jozefowicz et al. 2015, "An Empirical Exploration of Recurrent Network Architectures", sec. 2.2);
    0 keeps torch.nn.LSTM's initialisation."""

    def __post_init__(self) -> None:
        _require(self.hidden_size >= 1, "model.hidden_size", self.hidden_size, "an integer >= 1")
        _require(self.num_layers >= 1, "model.num_layers", self.num_layers, "an integer >= 1")
        _require(0 <= self.dropout < 1, "model.dropout", self.dropout, "a probability in [0, 1)")
        _require(self.embed_dim >= 1, "model.embed_dim", self.embed_dim, "an integer >= 1")
        _require(math.isfinite(self.forget_bias), "model.forget_bias", self.forget_bias, "a finite number")


@dataclass
class TrainConfig:
    batching: Literal["random", "sequential"] = "sequential"
    """`random`: B windows at random offsets, state from zero each minibatch. `sequential`: B contiguous
    streams continued from minibatch to minibatch, state carried and detached (truncated BPTT)."""

    bptt: Literal["fixed", "random"] = "fixed"
    """Truncation: every window `seq_len` long (`fixed`), or a length drawn around `seq_len` for each
    minibatch (`random`, randomized truncated BPTT)."""

    seq_len: int = 64
    """Characters per window: how far back gradients flow."""

    batch_size: int = 32
    """Windows (or streams) per minibatch."""

    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    """Optimizer."""

    lr: float = 2e-3
    """Peak learning rate."""

    weight_decay: float = 0.0
    """L2 penalty (decoupled for adamw)."""

    betas: tuple[float, float] = (0.9, 0.999)
    """For `adam` and `adamw`: the decay rates of the running means of the gradient and of its square (torch's
    defaults). A short run does better with a shorter memory for the second: 0.9 or 0.95 instead of 0.999."""

    momentum: float = 0.0
    """Momentum for `sgd` and `rmsprop`."""

    schedule: Literal["constant", "cosine", "char_rnn"] = "constant"
    """Learning-rate schedule: `constant` after warmup; `cosine` from `lr` to `min_lr` after warmup, over
    `max_steps` or `max_time`, whichever ends first; `char_rnn` multiplies the rate by `decay_rate` every epoch after `decay_after` epochs."""

    warmup_steps: int = 0
    """Linear warmup from 0 to `lr` over this many steps."""

    min_lr: float = 0.0
    """Floor of the cosine schedule."""

    decay_rate: float = 0.97
    """For the `char_rnn` schedule: factor applied per epoch."""

    decay_after: int = 10
    """For the `char_rnn` schedule: epochs before decay starts."""

    grad_clip: float | None = 5.0
    """Clip the global gradient norm to this value; null disables clipping."""

    max_steps: int | None = 1000
    """Optimizer steps to train for; null sets no step budget. The budgets `max_steps`, `max_epochs`, `max_time`
    and `patience` end the run at whichever comes first, with a final evaluation and checkpoint."""

    max_epochs: int | None = None
    """Passes over the training split to train for; null sets no epoch budget."""

    max_time: float | None = None
    """Wall-clock seconds to train for (evaluations included), over all sessions of a resumed run."""

    patience: int | None = None
    """Early stopping: end the run after this many evaluations in a row without a new best validation
    loss; null never stops early."""

    eval_every: int = 200
    """Evaluate on the validation split every this many steps (and at the end), and write checkpoints."""

    eval_chars: int | None = 250_000
    """Characters of the validation split each evaluation scores: the first this many after the split's first
    character, which they are read after, scored exactly (the whole split when it is shorter; padded records: whole
    records until they hold this many); null scores all of it."""

    keep_last: int = 0
    """Numbered checkpoints (`step-000400.pt`, one per evaluation) to keep besides `best.pt` and `last.pt`;
    0 keeps none."""

    log_every: int = 10
    """Write a training record (mean loss since the last one) to metrics.jsonl every this many steps."""

    sample_every: int = 0
    """Print a short sample under the progress bar every this many steps; 0 never does."""

    tensorboard: bool = False
    """Also log every metric to TensorBoard event files in `<run>/tensorboard` (needs the `tensorboard` package:
    `pip install 'rnnlm[tensorboard]'`)."""

    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    """Autocast precision of the forward pass: `bf16` on CPU and CUDA, `fp16` (with loss scaling) on CUDA only;
    `auto` is bf16 where the device computes bfloat16 itself (a GPU with bf16, a CPU with AVX-512 BF16 or AMX)
    and fp32 elsewhere, where bf16 would be emulated and many times slower."""

    compile: bool = False
    """Run the model through `torch.compile` (full `seq_len` windows; an epoch's shorter last window runs
    eagerly). The recurrence is unrolled over the window, so compiling takes half a minute or more, longer for
    long windows; it needs `train.bptt: fixed` and `data.records: pack`. The compiled model runs PyTorch ops
    instead of rnnlm's C loops, so on a CPU it is slower than eager (README "Training runs" has the figures): it is
    meant for CUDA."""

    init_from: str | None = None
    """Start from the weights of a trained model (a run directory or a checkpoint file) instead of random ones:
    fine-tuning. The model section must match its model's (`model.dropout` may differ); the optimizer and the
    schedule start afresh."""

    init_vocab: Literal["extend", "keep"] = "extend"
    """With `init_from`: `extend` gives characters the model never saw new rows of their own (initialised as a new
    model's); `keep` keeps its vocabulary and reads them as <unk>."""

    seed: int = 1337
    """Seeds every random generator: a CPU run with the same seed is reproducible."""

    device: str = "auto"
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`."""

    threads: int | None = None
    """CPU threads for training; null is one per core. Fewer leaves cores to other work on a shared machine."""

    def __post_init__(self) -> None:
        _require(self.seq_len >= 1, "train.seq_len", self.seq_len, "an integer >= 1")
        _require(self.init_from != "", "train.init_from", self.init_from,
                 "a run directory or checkpoint (an unset shell variable?), or null")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _require(0 < self.lr < math.inf, "train.lr", self.lr, "a finite learning rate > 0")
        _require(0 <= self.weight_decay < math.inf, "train.weight_decay", self.weight_decay, "a finite number >= 0")
        _require(0 <= self.momentum < 1, "train.momentum", self.momentum, "a number in [0, 1)")
        _require(all(0 <= b < 1 for b in self.betas), "train.betas", list(self.betas), "two numbers in [0, 1)")
        _require(self.warmup_steps >= 0, "train.warmup_steps", self.warmup_steps, "an integer >= 0")
        _require(0 <= self.min_lr <= self.lr, "train.min_lr", self.min_lr, "a number in [0, train.lr]")
        _require(0 < self.decay_rate <= 1, "train.decay_rate", self.decay_rate, "a factor in (0, 1]")
        _require(self.decay_after >= 0, "train.decay_after", self.decay_after, "an integer >= 0")
        _require(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip, "a norm > 0, or null")
        _require(self.max_steps is None or self.max_steps >= 1, "train.max_steps", self.max_steps, "an integer >= 1, or null")
        _require(self.max_epochs is None or self.max_epochs >= 1, "train.max_epochs", self.max_epochs,
                 "an integer >= 1, or null")
        if self.max_time == math.inf:  # no limit: as null, which the budget checks below see
            self.max_time = None
        _require(self.max_time is None or self.max_time > 0, "train.max_time", self.max_time, "seconds > 0, or null")
        _require(self.max_steps is not None or self.max_epochs is not None or self.max_time is not None,
                 "train.max_steps", self.max_steps, "a run needs a budget: set train.max_steps, train.max_epochs or train.max_time")
        _require(self.patience is None or self.patience >= 1, "train.patience", self.patience, "an integer >= 1, or null")
        _require(self.keep_last >= 0, "train.keep_last", self.keep_last, "an integer >= 0")
        _require(not self.compile or self.bptt == "fixed", "train.compile", self.compile,
                 "train.bptt=random gives every minibatch a new window length to compile; use train.bptt=fixed")
        _require(self.eval_every >= 1, "train.eval_every", self.eval_every, "an integer >= 1")
        _require(0 <= self.seed < 2**63, "train.seed", self.seed, "an integer in [0, 2**63)")
        _require(self.threads is None or 1 <= self.threads <= 1024, "train.threads", self.threads,
                 "a number of threads >= 1, or null for one per core")
        _require(self.eval_chars is None or self.eval_chars >= 1, "train.eval_chars", self.eval_chars,
                 "an integer >= 1 (characters of the validation split), or null for all of it")
        _require(self.log_every >= 1, "train.log_every", self.log_every, "an integer >= 1")
        _require(self.sample_every >= 0, "train.sample_every", self.sample_every, "an integer >= 0 (0 turns samples off)")
        _require(self.device == "auto" or self.device == "cpu" or self.device == "cuda"
                 or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
                 "train.device", self.device, "one of auto, cpu, cuda, cuda:N")


@dataclass(frozen=True)
class Limit:
    """What a sampling setting allows."""

    allows: typing.Callable[[Any], bool]
    words: str
    nullable: bool = False
    """null (None) means the setting is not used."""
    null_said: bool = False
    """`words` say null already (how the setting is turned off)."""


SAMPLING_LIMITS = {
    "temperature": Limit(lambda v: math.isfinite(v) and v >= 0,
                         "a finite number >= 0 (0 always takes the most likely character)"),
    "length": Limit(lambda v: v >= 1, "an integer >= 1"),
    "top_k": Limit(lambda v: v >= 1, "an integer >= 1, or off (null in a config, 0 as --top-k)", nullable=True,
                   null_said=True),
    "top_p": Limit(lambda v: math.isfinite(v) and 0 < v <= 1, "a probability in (0, 1]", nullable=True),
}
"""Checked here as the `sample.*` keys, and by `rnnlm sample` as its options (`sampling_fault`)."""


def sampling_fault(name: str, value: Any) -> str | None:
    """What a sampling setting's value must be, if it is not."""
    limit = SAMPLING_LIMITS[name]
    return None if (value is None and limit.nullable) or (value is not None and limit.allows(value)) else limit.words


@dataclass
class SampleConfig:
    temperature: float = 0.8
    """Divides the logits before sampling; 0 means always take the most likely character."""

    length: int = 500
    """Characters to generate."""

    prime: str = ""
    """Text read through the model before generating."""

    top_k: int | None = None
    """Sample only among the k most likely characters."""

    top_p: float | None = None
    """Sample only among the smallest set of characters whose probability reaches p (nucleus sampling)."""

    def __post_init__(self) -> None:
        for name, limit in SAMPLING_LIMITS.items():
            _require(sampling_fault(name, getattr(self, name)) is None, f"sample.{name}", getattr(self, name),
                     limit.words + (", or null" if limit.nullable and not limit.null_said else ""))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data (lists for tuples), as written to config.yaml and into checkpoints."""
        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v
        return {s.name: {k: plain(v) for k, v in dataclasses.asdict(getattr(self, s.name)).items()}
                for s in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False)


INERT_UNLESS = {  # a key: the key whose values give it something to do, and those values
    "model.nonlinearity": ("model.cell", ("rnn",)),
    "model.forget_bias": ("model.cell", ("lstm",)),
    "model.embed_dim": ("model.encoding", ("embedding",)),
    "train.momentum": ("train.optimizer", ("sgd", "rmsprop")),
    "train.betas": ("train.optimizer", ("adam", "adamw")),
    "train.min_lr": ("train.schedule", ("cosine",)),
    "train.decay_rate": ("train.schedule", ("char_rnn",)),
    "train.decay_after": ("train.schedule", ("char_rnn",)),
    "train.seq_len": ("data.records", ("pack",)),  # padded records are read whole, each from a zero state
    "train.bptt": ("data.records", ("pack",)),
    "train.batching": ("data.records", ("pack",)),
}


def value_at(plain: dict[str, dict[str, Any]], key: str) -> Any:
    """The value of `section.key` in a config's plain form (`Config.to_dict`)."""
    section, name = key.split(".")
    return plain[section][name]


def inert_settings(cfg: Config) -> list[str]:
    """Warnings for the keys set away from their defaults that the rest of the config gives nothing to do (a relu
    asked of an LSTM, momentum of Adam): most likely a slip, or a char-rnn habit."""
    values, defaults, get = cfg.to_dict(), Config().to_dict(), value_at
    found = []
    for key, (decider, wanted) in INERT_UNLESS.items():
        if get(values, key) != get(defaults, key) and get(values, decider) not in wanted:
            value = get(values, key)
            typed = value if isinstance(value, str) else show(value)  # as an override types it
            found.append(f"warning: {key}={typed} does nothing with {decider}={get(values, decider)}; it is for "
                         f"{decider}={' or '.join(wanted)}")
    return found


_SECTION_TYPES: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "sample": SampleConfig}


OTHER_NAMES: dict[str, tuple[str, str]] = {
    # nanoGPT's train.py and sample.py settings
    "block_size": ("train.seq_len", "nanoGPT"), "learning_rate": ("train.lr", "nanoGPT"),
    "max_iters": ("train.max_steps", "nanoGPT"), "eval_interval": ("train.eval_every", "nanoGPT"),
    "log_interval": ("train.log_every", "nanoGPT"), "warmup_iters": ("train.warmup_steps", "nanoGPT"),
    "decay_lr": ("train.schedule", "nanoGPT"), "n_layer": ("model.num_layers", "nanoGPT"),
    "n_embd": ("model.hidden_size", "nanoGPT"), "beta1": ("train.betas", "nanoGPT"),
    "beta2": ("train.betas", "nanoGPT"),
    "max_new_tokens": ("sample.length", "nanoGPT"), "start": ("sample.prime", "nanoGPT"),
    # char-rnn's and torch-rnn's flags
    "rnn_size": ("model.hidden_size", "char-rnn"), "seq_length": ("train.seq_len", "char-rnn"),
    "model": ("model.cell", "char-rnn"),
    "model_type": ("model.cell", "torch-rnn"), "wordvec_size": ("model.embed_dim", "torch-rnn"),
    "learning_rate_decay": ("train.decay_rate", "char-rnn"),
    "learning_rate_decay_after": ("train.decay_after", "char-rnn"),
    "lr_decay_factor": ("train.decay_rate", "torch-rnn"), "num_epochs": ("train.max_epochs", "torch-rnn"),
    "eval_val_every": ("train.eval_every", "char-rnn"), "print_every": ("train.log_every", "char-rnn"),
    "checkpoint_every": ("train.eval_every", "torch-rnn"), "primetext": ("sample.prime", "char-rnn"),
    "start_text": ("sample.prime", "torch-rnn"), "sample": ("sample.temperature", "char-rnn"),
    "gpuid": ("train.device", "char-rnn"), "gpu": ("train.device", "torch-rnn"), "data_dir": ("data.path", "char-rnn"),
    "input_txt": ("data.path", "torch-rnn"), "input_h5": ("data.path", "torch-rnn"),
    "val_frac": ("data.splits", "torch-rnn"), "test_frac": ("data.splits", "torch-rnn"),
    "lr_decay_every": ("train.schedule", "torch-rnn"),
    # makemore's flags (--max-steps is read as max_steps)
    "type": ("model.cell", "makemore"), "input_file": ("data.path", "makemore"),
    "n_embd2": ("model.hidden_size", "makemore"),
}
"""Settings of the projects rnnlm's users come from, by their names there: the config key that does their job here,
and whose name it is. Named in the refusal of an unknown key, and as the override an unknown option meant."""
_OWN_VALUES = ("decay_lr", "beta1", "beta2", "sample", "gpuid", "gpu", "val_frac", "test_frac", "lr_decay_every")
"""Other names whose values say something else here (a flag, where train.schedule names a schedule; one beta of two;
char-rnn's -sample 0, which is --temp 0; a GPU's number, where train.device names cpu or cuda; one split's share)."""


def _other_name(name: str) -> str:
    """How an unknown key that is another project's setting is said here, or ""."""
    ours, whose = OTHER_NAMES.get(name, ("", ""))
    return f" ({whose}'s {name} is {ours} here)" if ours else ""


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    options = {c.lower(): c for c in choices}  # `SGD` for sgd
    close = difflib.get_close_matches(word.lower(), list(options), n=1)
    return f" (did you mean {options[close[0]]!r}?)" if close else ""


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint; return it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}={show(value)} has the wrong type: expected {_describe(hint)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"{key}={show(value)} is not allowed: choose one of {choices}"
                              + (_did_you_mean(value, map(str, args)) if isinstance(value, str) else ""))
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(key, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}={show(value)} has the wrong length: expected {len(args)} items")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected true or false")
        return value
    if hint is int:
        whole = _whole_number(value)
        if whole is None:
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected an integer")
        return whole
    if hint is float:
        number = None
        if isinstance(value, str):  # PyYAML reads 3e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
        if number is None:
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected a number")
        return number  # each section's checks say which keys take infinity (a limit, as null) and which refuse it
    if hint is str:
        if isinstance(value, list) and key == "data.path":
            raise ConfigError(f"{key}={show(value)}: data.path is one file, folder or glob; {SEVERAL_FILES}")
        if not isinstance(value, str):  # `prime: 2024` in a file: YAML read a number (09 would be 9), so no guess
            raise ConfigError(f"{key}={show(value)} has the wrong type: expected text; in a config file, put it in "
                              "quotes")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module


def _whole_number(value: Any) -> int | None:
    """An integer, also as a number written otherwise that is one: 1e4 and 2000.0 (nanoGPT's configs write
    max_iters = 5e3); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):  # PyYAML reads 1e4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return " or ".join(getattr(a, "__name__", str(a)) for a in args) + " or null"


def _build_section(name: str, values: dict[str, Any]) -> Any:
    cls = _SECTION_TYPES[name]
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            plain = isinstance(key, str) and len(key) <= 60 and key.isprintable()
            raise ConfigError(f"unknown config key {name}.{key if plain else show(key)}"
                              f"{_other_name(key) if plain else ''}"
                              f"{'' if plain and key in OTHER_NAMES else _did_you_mean(str(key)[:60], known)}; "
                              f"{name} keys are: {', '.join(known)}")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return cls(**kwargs)


def from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from nested plain data, checking every key and value."""
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping with sections data, model, train, sample")
    for section in raw:
        if section not in _SECTION_TYPES:
            raise ConfigError(f"unknown config section {section!r}{_did_you_mean(str(section), _SECTION_TYPES)}; "
                              f"sections are: {', '.join(_SECTION_TYPES)}")
    sections = {}
    for name in _SECTION_TYPES:
        values = raw.get(name)
        values = {} if values is None else values  # `train:` with nothing under it
        if not isinstance(values, dict):
            raise ConfigError(f"config section {name!r} must be a mapping of keys to values, not {show(values)}")
        sections[name] = _build_section(name, values)
    return Config(**sections)


YAML_NULLS = ("null", "Null", "NULL", "~")


class Meant(NamedTuple):
    key: str
    """The config key, `train.max_steps`."""
    value: str | None
    """The value as typed; None where none was, or where it says something else here (`_OWN_VALUES`)."""
    whose: str
    """Where the name came from, when it is another project's: ` (nanoGPT's max_iters)`; else empty."""


def key_meant(word: str) -> Meant | None:
    """The config key a nanoGPT habit meant (`max_steps=100`, `--max_steps=100`, `--train.max_steps=100`): one named
    by its key alone, or by another project's name for it (`max_iters=100`); else None."""
    key, sep, value = word.lstrip("-").partition("=")
    section, dot, name = key.rpartition(".")
    name = name.replace("-", "_")  # makemore's --max-steps
    fields = {s: {f.name for f in dataclasses.fields(cls)} for s, cls in _SECTION_TYPES.items()}
    owners = [s for s in fields if name in fields[s] and (not dot or s == section)]
    if owners or name not in OTHER_NAMES:
        return Meant(f"{owners[0]}.{name}", value if sep else None, "") if len(owners) == 1 else None
    ours, whose = OTHER_NAMES[name]
    return Meant(ours, value if sep and name not in _OWN_VALUES else None, f" ({whose}'s {name})")


def as_override(word: str) -> str | None:
    """The override `key_meant` finds, written out: `train.max_steps=100 (nanoGPT's max_iters)`."""
    meant = key_meant(word)
    return None if meant is None else f"{meant.key}={'VALUE' if meant.value is None else meant.value}{meant.whose}"


def parse_override(text: str) -> tuple[str, str, Any]:
    """`train.lr=3e-4` -> ("train", "lr", 0.0003). The value is read as YAML (so lists and null work),
    except for text keys, which take it as typed (`sample.prime=ROMEO:` stays the string "ROMEO:")."""
    key, sep, value = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        meant = as_override(text) if sep else None
        raise ConfigError(f"override {text!r} is malformed: write section.key=value, e.g. "
                          + (f"{meant}" if meant else "train.lr=0.001"))
    if section not in _SECTION_TYPES:
        raise ConfigError(f"override {text!r}: unknown section {section!r}"
                          f"{_did_you_mean(section, _SECTION_TYPES)}; sections are: {', '.join(_SECTION_TYPES)}")
    hint = typing.get_type_hints(_SECTION_TYPES[section]).get(name)
    if hint == str and value in YAML_NULLS:  # as in a config file; the word itself is more likely a slip than text
        empty = getattr(_SECTION_TYPES[section](), name) == ""  # a key whose none is the empty text
        raise ConfigError(f"{key}={value} is not allowed: {key} takes text" + (f"; give {key}= for none" if empty
                                                                               else ""))
    if hint in (str, str | None):
        return section, name, None if value in YAML_NULLS else value
    try:
        return section, name, yaml.load(value, Loader=_Loader) if value.strip() else ""  # noqa: S506 (a safe loader)
    except yaml.YAMLError:
        return section, name, value


def merge_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        section, name, value = parse_override(text)
        target = merged.get(section)
        if not isinstance(target, dict):
            target = merged[section] = {}
        target[name] = value
    return merged


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last), and
    integers are YAML 1.2's: PyYAML's YAML 1.1 reads 0100 as octal 64 and 1:00 as base-60 60."""

    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:int"]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        unsigned = text.lstrip("+-")
        base = {"0x": 16, "0o": 8, "0b": 2}.get(unsigned[:2].lower(), 10)
        try:
            return (-1 if text.startswith("-") else 1) * int(unsigned[2:] if base != 10 else unsigned, base)
        except ValueError:  # `!!int` on what is not one
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # a list or a mapping as a key: PyYAML's own error follows
            if key in lines:
                raise ConfigError(f"line {line}: {show(key)} is given twice (lines {lines[key]} and {line}); keep one")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(  # YAML 1.2's forms, and 1.1's digit separators (100_000) and binary (0b101)
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)$"), list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting what `_Loader` would read as an integer (a prime of `09` stays a string)."""

    yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers


def _quote_hint(text: str, mark: Any) -> str:
    """For a value YAML reads as markup by its first character (`path: *.md` is an alias, `prime: !x` a tag), the line
    with the value quoted."""
    lines = text.splitlines()
    line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
    found = re.fullmatch(r"(\s*[\w.]+:\s*)([*&!%@`|>][^#]*?)\s*(#.*)?", line)  # a comment stays out
    if found is None:
        return ""
    quoted = '"' + found.group(2).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"; quote a value that starts with {found.group(2)[0]}: {found.group(1).strip()} {quoted}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into plain data, with file and line in any error."""
    p = Path(path)
    if not p.is_file():
        kind = " (it is a directory)" if p.is_dir() else " (it is not a regular file)" if p.exists() else ""
        shipped = Path(__file__).resolve().parent.parent / "configs"  # a source checkout's (pip install -e)
        raise ConfigError(f"config file {str(p)!r} " + ("not found" if not p.exists() else "cannot be read") + kind
                          + (f"; the shipped configs are in {shipped}" if (shipped / "tiny.yaml").is_file() else ""))
    try:
        text = p.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from None
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}:{where}: YAML syntax error: {problem}{_quote_hint(text, mark)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config must be a mapping with sections data, model, train, sample")
    return raw


def with_absolute_paths(cfg: Config) -> Config:
    """`data.path` and `train.init_from` made absolute (against the working directory), as a new run records them,
    so that the run's config means the same files from anywhere."""
    def absolute(path: str | None) -> str | None:
        return None if path is None else os.path.abspath(os.path.expanduser(path))

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=absolute(cfg.data.path)),
                               train=dataclasses.replace(cfg.train, init_from=absolute(cfg.train.init_from)))


def load_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `section.key=value` overrides."""
    raw = read_yaml(path) if path is not None else {}
    try:
        return from_dict(merge_overrides(raw, overrides))
    except ConfigError as e:
        where = f"{path}: " if path is not None and _fails(raw) else ""  # the file's mistake, not an override's
        raise ConfigError(f"{where}{e}") from None


def _fails(raw: dict[str, Any]) -> bool:
    try:
        from_dict(merge_overrides(raw, ()))
    except ConfigError:
        return True
    return False
