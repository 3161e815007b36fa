"""Checkpoints: self-contained, plain-data files that load without running anyone's code.

A checkpoint is a `torch.save`d dict of tensors, numbers, strings, lists and dicts only:

    format      "rnnlm-checkpoint"
    version     CHECKPOINT_VERSION
    config      the resolved config as plain data (Config.to_dict())
    vocab       the vocabulary as a list of strings
    records     whether the corpus is line-per-record (each sample then ends at <eos>)
    model       the model's state dict
    step        optimizer steps taken
    train       `TrainingState` as plain data: everything needed to resume

It is read back with `torch.load(weights_only=True)`, whose unpickler only rebuilds those types, so a
crafted file cannot run code when loaded. Writes are atomic (`rnnlm.atomic`): a crash at any moment leaves
the previous file intact.

A run folder holds `last.pt` (the newest: where a resume starts), `best.pt` (lowest validation loss)
and, with `train.keep_last`, numbered checkpoints `step-000400.pt`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnlm.atomic import atomic_file
from rnnlm.config import Config, ConfigError, DataConfig, from_dict
from rnnlm.errors import RnnlmError, first_line, shell_word
from rnnlm.model import parameter_shapes
from rnnlm.rundir import holder, run_meant
from rnnlm.state import State, tensors
from rnnlm.vocab import Vocab

FORMAT = "rnnlm-checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST = "best.pt", "last.pt"


class CheckpointError(RnnlmError):
    """A checkpoint that is missing, damaged, foreign or unsafe."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, a file size limit, a folder gone read-only)."""


@dataclass
class Gathered:
    """The training record being gathered: sums over the steps since the last record."""

    loss_sum: float = 0.0
    chars: int = 0
    seconds: float = 0.0
    grad_sum: float = 0.0
    grad_max: float = 0.0
    steps: int = 0
    skipped: int = 0
    """Steps fp16's loss scaler skipped (their gradient overflowed): not in grad_sum or grad_max."""
    lr: float | None = None
    """The learning rate of the last step gathered (None before one, and in checkpoints from before it was kept)."""

    def add(self, seconds: float, loss: float, chars: int, grad_norm: float, lr: float) -> None:
        self.lr = lr
        self.seconds += seconds
        self.loss_sum += loss * chars
        self.chars += chars
        if math.isfinite(grad_norm):
            self.grad_sum += grad_norm
            self.grad_max = max(self.grad_max, grad_norm)
        else:  # only with fp16 loss scaling (else the run stopped as diverged): the scaler skips the step
            self.skipped += 1
        self.steps += 1

    def means(self) -> dict[str, float]:
        """The record's loss, gradient norms and speed over the steps gathered, and the last step's rate."""
        measured = self.steps - self.skipped  # none: no norm to report (null in metrics.jsonl), not a norm of 0
        return {"train_loss": self.loss_sum / max(1, self.chars),
                "grad_norm": self.grad_sum / measured if measured else math.nan,
                "grad_norm_max": self.grad_max if measured else math.nan,
                "chars_per_sec": round(self.chars / max(self.seconds, 1e-9), 1), "lr": self.lr}


@dataclass
class Tally:
    """What the trainer counts besides weights and generators."""

    step: int = 0
    epoch: int = 0
    best_val: float = math.inf
    last_val: float = math.inf
    evals_since_best: int = 0
    last_eval_step: int = -1
    elapsed: float = 0.0
    """Wall-clock seconds over every session of the run, evaluations included (what `max_time` limits)."""
    clock: float = 0.0
    """`elapsed` as every process agrees on it (their mean at the last step): what the schedule reads."""
    train_time: float = 0.0
    """Seconds of training steps over every session, evaluations and samples excluded (what `rnnlm plot` draws)."""
    first_loss: float = math.nan
    eval_seconds: float | None = None
    """How long the last evaluation took (rank 0's): the room a time budget leaves for the final one, in a resumed
    session too (a guess from the training speed can be several times short of it)."""
    gathered: Gathered = field(default_factory=Gathered)
    ended_by: str = ""
    """The budget that ended the last session ("" while none has, and in a last.pt written at an evaluation before
    the session knew it was ending, which a time budget then writes again): a resume stopped during its final
    evaluation, or after it, ends again unless that budget was raised (what train.max_time needs to know)."""

    def count_step(self, epoch: int, seconds: float, loss: float, chars: int, grad_norm: float, lr: float) -> None:
        self.step += 1
        self.epoch = epoch
        self.elapsed += seconds
        self.train_time += seconds
        self.gathered.add(seconds, loss, chars, grad_norm, lr)

    @classmethod
    def from_plain(cls, raw: dict[str, Any]) -> "Tally":
        lasting = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__ and k != "gathered"}
        # checkpoints from before `Gathered` kept its sums among the lasting counters
        sums = raw.get("gathered") or {k: v for k, v in raw.items() if k in Gathered.__dataclass_fields__}
        return cls(**lasting, gathered=Gathered(**sums))


@dataclass
class TrainingState:
    """Everything besides the weights that a resume restores, as it is saved."""

    optimizer: dict[str, Any]
    batcher: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, list[torch.Tensor]]
    """Every process's generator states: {"torch": [...], "cuda": [...]} in rank order."""
    state: State | None
    """The hidden state sequential batching carries, all rows (as one process would carry it), on the CPU."""
    tally: Tally = field(default_factory=Tally)
    replicas: list[str] = field(default_factory=list)
    """Under torchrun, each process's parameter digest at the save: equal while the replicas agree."""
    corpus: str = ""
    """The training corpus's `Store.fingerprint`: a resume refuses text that changed under the saved position
    ("" in checkpoints from before it was kept: not checked)."""

    def to_plain(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "tally": asdict(self.tally)}

    @classmethod
    def from_plain(cls, raw: dict[str, Any]) -> "TrainingState":
        state = raw["state"]
        return cls(raw["optimizer"], raw["batcher"], raw["scaler"], raw["rng"],
                   tuple(state) if isinstance(state, (tuple, list)) else state, Tally.from_plain(raw["tally"]),
                   list(raw.get("replicas", [])), str(raw.get("corpus", "")))


@dataclass
class Checkpoint:
    config: Config
    vocab: Vocab
    records: bool
    model: dict[str, torch.Tensor]
    step: int
    train: TrainingState | None
    path: Path | None = None
    data_root: str | None = None
    """The absolute data root the run trained from: where `rnnlm sample` and `rnnlm eval` read its corpus."""

    def corpus_changed(self, fingerprint: str) -> bool:
        """Whether the run trained on other text than the corpus whose `Store.fingerprint` this is (a checkpoint
        from before fingerprints were kept says no)."""
        return self.train is not None and self.train.corpus not in ("", fingerprint)

    def other_text_at(self, data: DataConfig, fingerprint: str) -> bool:
        """Whether `data`, the run's corpus read from another place than it trained from (moved, or so it seemed),
        holds other text than it trained on (the store prepared there has this `fingerprint`)."""
        return data.path != self.config.data.path and self.corpus_changed(fingerprint)

    def data_config(self) -> DataConfig:
        """How its corpus is read: as its config says, or, when that data.path is gone and its run folder's
        config.yaml has one that is there, as that says (a resume that followed moved text wrote it; best.pt keeps
        the old place until the validation loss improves again)."""
        from rnnlm.config import load_config
        from rnnlm.data import missing_path

        data = self.config.data
        if self.path is None or missing_path(data) is None or not (self.path.parent / "config.yaml").is_file():
            return data
        try:
            current = load_config(self.path.parent / "config.yaml").data
        except ConfigError:
            return data
        moved = dataclasses.replace(data, path=current.path)
        return moved if current.path != data.path and missing_path(moved) is None else data


def save(paths: list[Path], point: Checkpoint) -> None:
    """Write the same checkpoint under each of `paths` (serialized once), each atomically, in order."""
    buffer = io.BytesIO()
    torch.save(_on_cpu({"format": FORMAT, "version": CHECKPOINT_VERSION, "config": point.config.to_dict(),
                        "vocab": list(point.vocab.itos), "records": point.records, "model": point.model,
                        "step": point.step, "train": None if point.train is None else point.train.to_plain(),
                        "data_root": point.data_root}), buffer)
    for path in paths:
        try:
            _write(path, buffer.getbuffer())
        except OSError as e:
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise CheckpointWriteError(f"{path}: could not write the checkpoint ({e.strerror or e}); {kept}") from None


def _on_cpu(value: Any) -> Any:
    """`value` with its tensors in CPU memory: a CUDA run's checkpoint would otherwise name CUDA storages, which a
    plain torch.load on a machine without a GPU refuses (rnnlm's own load maps them; other tools may not)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _write(path: Path, data: memoryview) -> None:
    with atomic_file(path) as f:
        f.write(data)


def numbered(step: int) -> str:
    """The name of the checkpoint `train.keep_last` keeps for `step`."""
    return f"step-{step:06d}.pt"


def numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The numbered checkpoints in `folder`, oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.pt") if (m := re.fullmatch(r"step-(\d+)\.pt", p.name))]
    return sorted(found)


def resolve(path: str | Path) -> Path:
    """A run directory means its best checkpoint (or its last, before any evaluation or without a validation
    split)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        kept = numbered_checkpoints(p)
        if kept:
            advice = f"give one of its checkpoints, e.g. the newest: {kept[-1][1]}"
        elif (p / "config.yaml").is_file() and (pid := holder(p)) is not None:
            advice = (f"it is being trained now (process {pid}) and saves its first checkpoint at its first "
                      "evaluation (train.eval_every); try again then")
        elif (p / "config.yaml").is_file():  # the resume refuses one whose checkpoints were removed, saying why
            advice = ("it stopped before its first checkpoint, or they were removed: "
                      f"`rnnlm train --resume {shell_word(p)}` continues it, or says how to go on")
        elif any((run / BEST).is_file() or (run / LAST).is_file() for run in _folders(p)):
            advice = f"it holds runs: give one of them (`rnnlm runs {shell_word(p)}` lists them)"
        else:
            advice = "train first with `rnnlm train CONFIG`"
        raise CheckpointError(f"{p}: no checkpoint in this folder (expected {BEST} or {LAST}); {advice}")
    if not p.exists():
        meant = run_meant(p)
        raise CheckpointError(f"{p}: no such checkpoint or run directory"
                              + (f" (did you mean {meant}?)" if meant is not None else ""))
    if p.name in ("config.yaml", "metrics.jsonl") and any((p.parent / name).is_file() for name in (BEST, LAST)):
        raise CheckpointError(f"{p}: a run's {p.name}, not a checkpoint; give the run itself: {p.parent}")
    return p


def _folders(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and check a checkpoint file or run directory."""
    p = resolve(path)
    try:
        return _load(p, map_location)
    except OSError as e:
        raise CheckpointError(f"{p}: cannot be read ({e.strerror or e})") from None


def _load(p: Path, map_location: str | torch.device) -> Checkpoint:
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty, not a checkpoint")
    if not zipfile.is_zipfile(p):  # torch.save's archive: anything else is another tool's file, or a plain pickle
        with open(p, "rb") as f:
            pickled = f.read(1) == b"\x80"
        if pickled:
            raise CheckpointError(f"{p}: refused to load: a plain pickle (rnnlm checkpoints are torch archives of "
                                  "tensors and plain data; a pickle could run code when loaded)")
        raise _unreadable(p, "not a torch archive")
    _check_sums(p)
    try:
        raw = _torch_load(p, map_location)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # the file names a Python object to rebuild: code, not data
            raise CheckpointError(f"{p}: refused to load: the file holds Python objects other than plain data "
                                  "and tensors, which could run code; rnnlm checkpoints never do") from None
        raise _unreadable(p, "its pickle is unreadable") from None
    except Exception as e:  # torch.load fails in many ways on damaged bytes (RuntimeError, KeyError, EOFError, ...)
        raise _unreadable(p, first_line(e)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an rnnlm checkpoint (it has no '{FORMAT}' header)")
    if raw.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: written by an rnnlm with checkpoint format {raw.get('version')}; "
                              f"this rnnlm reads format {CHECKPOINT_VERSION}")
    try:
        config = from_dict(raw["config"])
        vocab = Vocab.from_list(raw["vocab"])
        training = TrainingState.from_plain(raw["train"]) if raw.get("train") else None
        if not isinstance(raw["records"], bool) or not isinstance(raw.get("data_root"), (str, type(None))):
            raise TypeError("records or data_root is of the wrong type")
        point = Checkpoint(config, vocab, raw["records"], raw["model"], int(raw["step"]), training, p,
                           raw.get("data_root"))
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as e:
        raise CheckpointError(f"{p}: damaged checkpoint ({first_line(e)})") from None
    _check_weights(point)
    _check_state(point)
    return point


def _torch_load(path: Path, map_location: str | torch.device, mmap: bool = False) -> Any:
    """torch.load of tensors and plain data only (never arbitrary objects), quietly: torch's remarks on the pickle
    protocol are not the user's business."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def saved_progress(path: Path) -> tuple[int, float] | None:
    """The step a checkpoint holds and the seconds the run had spent by then, its tensors mapped rather than read
    (cheap enough for `rnnlm runs` to ask of every run); None when it cannot be read."""
    try:
        raw = _torch_load(path, "cpu", mmap=True)
    except Exception:  # damaged or foreign: `load` says why when it matters
        return None
    step = raw.get("step") if isinstance(raw, dict) and raw.get("format") == FORMAT else None
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    tally = raw["train"].get("tally") if isinstance(raw.get("train"), dict) else None
    elapsed = tally.get("elapsed") if isinstance(tally, dict) else None
    return step, float(elapsed) if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) else 0.0


def _unreadable(p: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{p}: corrupted, truncated or not a checkpoint ({why})")


def _check_sums(p: Path) -> None:
    """Every member of the archive against the CRC-32 torch.save wrote with it: torch.load does not look, and a
    damaged weight that stays finite would load as a model writing nonsense."""
    try:
        with zipfile.ZipFile(p) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as e:
        raise _unreadable(p, first_line(e)) from None
    if bad is not None:
        raise CheckpointError(f"{p}: corrupted: {bad} fails its checksum (the file was damaged after it was "
                              "written); use another checkpoint of the run")


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The dtypes a checkpoint's tensors may hold: what training saves and the model computes in (a float8 or sparse
tensor from another tool loads, then fails at its first use)."""


def _unusable(t: Any) -> str | None:
    """Why a tensor of a checkpoint cannot be used as a weight or state, or None."""
    if not isinstance(t, torch.Tensor):
        return "is not a tensor"
    if t.layout != torch.strided:
        return "is a sparse tensor"
    return None if t.dtype in FLOATS else f"holds {t.dtype}, not float16, bfloat16, float32 or float64"


def _check_state(point: Checkpoint) -> None:
    """The carried hidden state fits the model and batch: (layers, batch, hidden), an (h, c) pair for an LSTM."""
    state = point.train.state if point.train is not None else None
    if state is None:
        return
    cfg = point.config
    parts = tensors(state)
    shape = (cfg.model.num_layers, cfg.train.batch_size, cfg.model.hidden_size)
    if (len(parts) != (2 if cfg.model.cell == "lstm" else 1)
            or not all(_unusable(t) is None and tuple(t.shape) == shape for t in parts)):
        raise CheckpointError(f"{point.path}: damaged checkpoint (its carried state does not fit its config: "
                              f"expected {'two tensors' if cfg.model.cell == 'lstm' else 'a tensor'} of shape {shape})")


def _check_weights(point: Checkpoint) -> None:
    """The weights are exactly what the checkpoint's config and vocabulary make (names, shapes, floating point), so
    that a model is built and loaded only when they fit, and a crafted config (a million layers) costs nothing."""
    weights, where = point.model, point.path
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise CheckpointError(f"{where}: damaged checkpoint (its weights are not a mapping of names to tensors)")
    model = point.config.model
    count = 4 * model.num_layers + 2 + (model.encoding == "embedding")
    if len(weights) != count:  # before listing the names: a crafted num_layers could make millions
        raise CheckpointError(f"{where}: its weights do not fit its config: {len(weights)} tensors, where "
                              f"model.num_layers={model.num_layers} makes {count}")
    expected = parameter_shapes(len(point.vocab), model)
    problems = [f"{name} is missing" for name in expected if name not in weights]
    problems += [f"{name} is not part of the model" for name in weights if name not in expected]
    problems += [f"{name} is {tuple(weights[name].shape)}, the config makes it {shape}" for name, shape in
                 expected.items() if name in weights and tuple(weights[name].shape) != shape]
    problems += [f"{name} {_unusable(t)}" for name, t in weights.items() if _unusable(t) is not None]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{where}: its weights do not fit its config: {'; '.join(problems[:3])}{more}")
