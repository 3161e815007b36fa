"""The training loop: corpus -> batches -> model -> optimizer, with evaluation, checkpoints and metrics.

A run lives in one folder:

    checkpoints/<run>/
        config.yaml      the fully resolved config
        metrics.jsonl    training and evaluation records (rnnlm.metrics)
        last.pt          the newest checkpoint: everything needed to resume exactly
        best.pt          the checkpoint with the lowest validation loss so far
        step-000400.pt   with train.keep_last: the newest numbered checkpoints, one per evaluation
        resume.log       one line per resume, with the config keys it changed
        tensorboard/     with train.tensorboard: the same metrics as TensorBoard event files

`train(cfg, run_dir)` starts a run; `train(cfg, run_dir, resume=checkpoint)` continues one as if it had
never stopped: the model, optimizer, step, epoch, batcher position, every random generator, the
carried hidden state and the half-gathered training record come back from `last.pt`.

Checkpoints are written at every evaluation (`best.pt` and a numbered one first, `last.pt` last, so
that `last.pt` never points past files that were not written) and when SIGINT or SIGTERM stops the
run; that save does not evaluate, so a resumed run logs exactly what an uninterrupted one would have.
A run ends at the first budget spent (`max_steps`, `max_epochs`, `max_time`, `patience`) with a final
evaluation and checkpoint.

Under torchrun every process runs this same loop on its rows of each minibatch (rnnlm.distributed);
rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from rnnlm import checkpoint as ckpt
from rnnlm import fused
from rnnlm.batching import IGNORE, Batch, Batcher, RandomWindows, RecordBatches, SequentialStreams, WindowLengths, truncate
from rnnlm.config import Config, ConfigError
from rnnlm.data import Corpus, DataRoot, load_corpus
from rnnlm.distributed import Dist, resolve_device
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import Score, score_records, score_stream
from rnnlm.metrics import METRICS, TENSORBOARD, JsonlLogger, Loggers, MetricLogger, TensorBoardLogger, check_tensorboard, truncate_metrics
from rnnlm.model import CharRNN, State
from rnnlm.sample import SampleOptions, generate, warm_start
from rnnlm.vocab import Vocab

__all__ = ["train", "resolve_device", "RunResult", "TrainingDiverged", "SAFE_TO_CHANGE"]

SAFE_TO_CHANGE = {"train.max_steps", "train.max_epochs", "train.max_time", "train.patience", "train.eval_every",
                  "train.log_every", "train.sample_every", "train.keep_last", "train.tensorboard", "train.device",
                  "train.compile"}
"""Keys a resumed run may change, besides every `sample.*` key: budgets, intervals, what is kept and
where or how fast it runs, never what is learned or from what."""

RESUME_LOG = "resume.log"

Stopped = Literal["max_steps", "max_epochs", "max_time", "patience", "interrupted"]


class TrainingDiverged(RnnlmError):
    """The loss or the gradient became NaN or infinite, or the loss exploded."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    best_val: float
    last_val: float
    stopped: Stopped
    signal: int | None = None
    """For `stopped == "interrupted"`: the signal that stopped the run (SIGINT or SIGTERM)."""


# ---------------------------------------------------------------------------------------------------
# Setting up: data, model, optimizer


@dataclass
class Prepared:
    corpus: Corpus
    vocab: Vocab
    train: torch.Tensor | list[torch.Tensor]  # a stream of ids, or one tensor of ids per record


def prepare(cfg: Config, root: DataRoot | None = None, vocab: Vocab | None = None) -> Prepared:
    """Read the corpus, build (or reuse) the vocabulary, and encode the training split."""
    corpus = load_corpus(cfg.data, cfg.train.seed, root)
    vocab = vocab or Vocab.from_texts(corpus.train)
    return Prepared(corpus, vocab, encode_split(corpus, vocab, "train", cfg.data.records))


def encode_split(corpus: Corpus, vocab: Vocab, split: str, records_mode: str = "pack") -> torch.Tensor | list[torch.Tensor]:
    texts = corpus.split(split)  # type: ignore[arg-type]
    if not corpus.records:
        return vocab.encode("".join(texts))
    if records_mode == "pad":  # one vectorised encode, cut into records (views of it)
        return list(torch.split(vocab.encode("".join(texts)), [len(r) for r in texts]))
    return vocab.encode_records(texts)


def make_batcher(cfg: Config, train_ids: torch.Tensor | list[torch.Tensor], device: torch.device) -> Batcher:
    generator = torch.Generator().manual_seed(cfg.train.seed)
    if isinstance(train_ids, list):
        return RecordBatches(train_ids, cfg.train.batch_size, generator, device)
    lengths = WindowLengths(cfg.train.seq_len, cfg.train.bptt, generator)
    kind = SequentialStreams if cfg.train.batching == "sequential" else RandomWindows
    return kind(train_ids.to(device), cfg.train.batch_size, lengths, generator)


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    params = model.parameters()
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.RMSprop(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, alpha=0.95)


def learning_rate(cfg: Config, step: int, epoch: int, clock: float = 0.0) -> float:
    """The rate for optimizer step `step` (0-based) in epoch `epoch` (epochs completed before it), `clock`
    seconds into the run. The cosine decays over whichever budget ends first, `max_steps` or `max_time`:
    a run given a time budget ends at its floor rate. (Such a run depends on the clock anyway: where it
    stops does; runs without `max_time` never read it.)"""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        progress = 0.0
        if t.max_steps is not None:
            progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        if t.max_time is not None:
            progress = max(progress, clock / t.max_time)
        progress = min(1.0, progress)
        return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if t.schedule == "char_rnn":
        # char-rnn decays the rate at the end of every epoch from `learning_rate_decay_after` on
        return t.lr * t.decay_rate ** max(0, epoch - t.decay_after + 1) if epoch >= 1 else t.lr
    return t.lr


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 itself. A CPU without AVX-512 BF16 or AMX emulates it, and a
    bf16 training step there ran about 80x slower than fp32 (a 1x512 LSTM on a 2-core AVX2 EPYC)."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # not emulated: Ampere and later
            try:
                return torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:  # a torch from before the argument, whose answer was already "natively"
                return torch.cuda.is_bf16_supported()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, present since torch 2.1
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision(cfg: Config, device: torch.device) -> str:
    """`train.precision` with `auto` resolved for `device`: bf16 where it is native, else fp32."""
    if cfg.train.precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return cfg.train.precision


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    chosen = precision(cfg, device)
    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if chosen == "bf16" else torch.float16)


def check_precision(cfg: Config, device: torch.device) -> None:
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise RnnlmError("train.precision=fp16 needs a CUDA device; on a CPU use train.precision=auto, bf16 or fp32")
    if cfg.train.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RnnlmError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    if cfg.train.precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        _say("warning: train.precision=bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so bf16 is "
             "emulated and far slower than fp32; use train.precision=auto (or fp32)")


def check_compile(cfg: Config, device: torch.device) -> None:
    """torch.compile needs a C++ compiler on a CPU and triton on CUDA, and windows of one length."""
    if not cfg.train.compile:
        return
    if cfg.data.records == "pad":
        raise RnnlmError("train.compile needs minibatches of one shape; data.records=pad pads each batch to its own "
                         "longest record; use data.records=pack or train.compile=false")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise RnnlmError("train.compile on a CPU needs a C++ compiler (g++ or clang++), which this machine lacks; "
                         "install one or set train.compile=false")
    if device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            raise RnnlmError("train.compile on CUDA needs the triton package (pip install triton); "
                             "or set train.compile=false")


# ---------------------------------------------------------------------------------------------------
# Evaluation, and the config a resumed run may differ in


def evaluate_split(model: CharRNN, cfg: Config, prepared: Prepared, split: str) -> Score:
    """Score a split the way the model was trained to read it: packed records and streams as one
    stream with the state carried, padded records each from a zero state."""
    ids = encode_split(prepared.corpus, prepared.vocab, split, cfg.data.records)
    if isinstance(ids, list):
        return score_records(model, ids)
    return score_stream(model, ids)


def config_differences(old: Config, new: Config) -> list[str]:
    a, b = old.to_dict(), new.to_dict()
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]


def check_resume_config(old: Config, new: Config) -> list[str]:
    """The changes a resume accepts, as `key: old -> new`; any other change is an error listing the keys."""
    changed = config_differences(old, new)
    refused = [k for k in changed if k not in SAFE_TO_CHANGE and not k.startswith("sample.")]
    if refused:
        raise ConfigError(f"cannot resume with a changed config: {', '.join(refused)} differ from the run's "
                          f"config.yaml; only {', '.join(sorted(SAFE_TO_CHANGE))} and sample.* may change on resume")
    a, b = old.to_dict(), new.to_dict()
    return [f"{k}: {_get(a, k)!r} -> {_get(b, k)!r}" for k in changed]


def _get(d: dict[str, dict[str, Any]], key: str) -> Any:
    section, name = key.split(".")
    return d[section][name]


# ---------------------------------------------------------------------------------------------------
# Run directories


def new_run_dir(out: Path, stem: str, name: str | None, dist: Dist) -> Path:
    """Where a new run goes: `out/name`, or `out/<stem>-<date>-<time>`; never a folder that exists.
    Under torchrun rank 0 decides, so that every process agrees on the name."""
    run_dir = out / (name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir, exists = dist.broadcast((run_dir, run_dir.exists()))
    if exists:
        raise RnnlmError(f"{run_dir} already exists; continue it with --resume {run_dir} or choose another --name")
    return run_dir


def resume_point(run_dir: Path) -> ckpt.Checkpoint | None:
    """The checkpoint a resume of `run_dir` starts from; None if the run was stopped before its first
    checkpoint (it then starts over from its config.yaml)."""
    if not run_dir.is_dir():
        raise RnnlmError(f"--resume {run_dir}: not a run directory")
    if (run_dir / ckpt.LAST).exists() or not (run_dir / "config.yaml").is_file():
        return ckpt.load(run_dir / ckpt.LAST)
    return None


# ---------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Tally:
    """What the trainer counts besides weights and generators; saved in every checkpoint as plain data."""

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
    first_loss: float = math.nan
    # the training record being gathered: sums over the steps since the last one
    loss_sum: float = 0.0
    chars: int = 0
    seconds: float = 0.0
    grad_sum: float = 0.0
    grad_max: float = 0.0
    steps: int = 0

    def record(self, lr: float) -> dict[str, Any]:
        """The training record of the steps gathered, which it then forgets."""
        record = {"step": self.step, "epoch": self.epoch, "train_loss": self.loss_sum / max(1, self.chars), "lr": lr,
                  "grad_norm": self.grad_sum / max(1, self.steps), "grad_norm_max": self.grad_max,
                  "chars_per_sec": round(self.chars / max(self.seconds, 1e-9), 1), "elapsed": round(self.elapsed, 3)}
        self.loss_sum, self.chars, self.seconds, self.grad_sum, self.grad_max, self.steps = 0.0, 0, 0.0, 0.0, 0.0, 0
        return record


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can save and exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train(cfg: Config, run_dir: Path, resume: ckpt.Checkpoint | None = None, root: DataRoot | None = None,
          progress: bool = True, dist: Dist | None = None) -> RunResult:
    """Train `cfg` in `run_dir` (created if new), or continue `resume` there. Under torchrun, pass the
    `Dist` of `rnnlm.distributed.setup`; every process calls this with the same arguments."""
    t = cfg.train
    # --- setup -------------------------------------------------------------------------------------
    dist = dist or Dist(device=resolve_device(t.device))
    device = dist.device
    check_precision(cfg, device)
    check_compile(cfg, device)
    if device.type == "cpu":
        fused.keep_freed_memory()
    if t.batch_size % dist.world_size:
        raise RnnlmError(f"train.batch_size={t.batch_size} cannot be shared evenly by {dist.world_size} processes; "
                         f"use a multiple of {dist.world_size}")
    if t.tensorboard and dist.is_main:
        check_tensorboard()
    changes = check_resume_config(resume.config, cfg) if resume is not None else []
    torch.manual_seed(t.seed)
    prepared = prepare(cfg, root, resume.vocab if resume else None)
    vocab = prepared.vocab
    model = CharRNN(len(vocab), cfg.model).to(device)
    if dist.rank:  # own dropout masks per process; the weights all come from rank 0 (DDP broadcasts them)
        torch.manual_seed(t.seed + dist.rank)
    optimizer = make_optimizer(cfg, model)
    batcher = make_batcher(cfg, prepared.train, device)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    if dist.is_main:  # fail now, not after an hour, if val cannot be scored
        if evaluate_split(model, cfg, prepared, "val").chars == 0 and t.patience is not None:
            raise RnnlmError("train.patience stops on the validation loss, but the validation split is empty; "
                             "give data.splits a val share or set train.patience=null")

    tally, state = Tally(), None
    if resume is not None:
        model.load_state_dict(resume.model)
        r = resume.train
        optimizer.load_state_dict(r["optimizer"])
        batcher.load_state_dict(r["batcher"])
        if r["scaler"]:
            scaler.load_state_dict(r["scaler"])
        _restore_rng(r["rng"], dist)
        state = _take_rows(_to_device(r["state"], device), dist.rows(t.batch_size))
        tally = Tally(**r["tally"])
    net: torch.nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    forward = torch.compile(net, dynamic=False) if t.compile else net

    loggers: MetricLogger = Loggers([])
    if dist.is_main:
        over = resume is None and (run_dir / "config.yaml").exists()
        _make_run_dir(run_dir)
        _say(f"run directory: {run_dir}" + (" (stopped before its first checkpoint: starting it over)" if over else ""))
        for stale in ckpt.remove_stale_temp_files(run_dir):
            _say(f"removed {stale.name}, left by a process killed while writing it")
        # what was written after the checkpoint belongs to a future this run will now write again
        truncate_metrics(run_dir / METRICS, tally.step)
        for step, path in ckpt.numbered_checkpoints(run_dir):
            if step > tally.step:
                path.unlink()
        (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        if resume is not None:
            _record_resume(run_dir, tally.step, changes)
        loggers = Loggers([JsonlLogger(run_dir / METRICS)]
                          + ([TensorBoardLogger(run_dir / TENSORBOARD, purge_step=tally.step + 1)] if t.tensorboard else []))

    def save(*names: str) -> None:
        """One checkpoint under each name (in order): every process hands in its rows of the hidden
        state and its random generators, rank 0 writes."""
        full_state = _gather_rows(truncate(state), dist)
        rng = {"torch": dist.all_gather(torch.get_rng_state()),
               "cuda": dist.all_gather(torch.cuda.get_rng_state(device)) if device.type == "cuda" else []}
        replicas = dist.all_gather(_fingerprint(model)) if dist.enabled else []
        if len(set(replicas)) > 1 and dist.is_main:
            _say(f"warning: the model replicas differ at step {tally.step} ({', '.join(replicas)})")
        if not dist.is_main:
            return
        ckpt.save_all([run_dir / n for n in names], {
            "config": cfg.to_dict(), "vocab": list(vocab.itos), "records": prepared.corpus.records,
            "model": model.state_dict(), "step": tally.step,
            "train": {
                "optimizer": optimizer.state_dict(), "batcher": batcher.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng,
                "state": _to_device(full_state, "cpu"), "tally": asdict(tally), "replicas": replicas,
            },
        })

    def evaluate_and_save() -> None:
        score = evaluate_split(model, cfg, prepared, "val") if dist.is_main else None
        if score is not None:
            loggers.log({"step": tally.step, "epoch": tally.epoch, "val_loss": score.nll, "bpc": score.bpc,
                         "perplexity": score.perplexity, "elapsed": round(tally.elapsed, 3)})
        nll = dist.broadcast(score.nll if score is not None else None)
        tally.last_val, tally.last_eval_step = nll, tally.step
        improved = nll < tally.best_val
        tally.best_val = min(tally.best_val, nll)
        tally.evals_since_best = 0 if improved else tally.evals_since_best + 1
        save(*[ckpt.BEST] * improved, *[ckpt.numbered(tally.step)] * (t.keep_last > 0), ckpt.LAST)
        if dist.is_main and t.keep_last:
            for _, path in ckpt.numbered_checkpoints(run_dir)[:-t.keep_last]:
                path.unlink()

    def budget_spent() -> Stopped | None:
        """The budgets every process sees alike (time is agreed on separately)."""
        if t.max_steps is not None and tally.step >= t.max_steps:
            return "max_steps"
        if t.patience is not None and tally.evals_since_best >= t.patience:
            return "patience"
        return None

    # --- loop --------------------------------------------------------------------------------------
    bar = _progress(t.max_steps, tally.step, progress and dist.is_main)
    start_step, start_elapsed = tally.step, tally.elapsed
    stopped = budget_spent() or ("max_time" if t.max_time is not None and tally.elapsed >= t.max_time else None)
    rows = dist.rows(t.batch_size)
    lr = learning_rate(cfg, max(0, tally.step - 1), batcher.epoch, tally.clock)
    model.train()
    try:
        with _StopSignal() as stop:
            tick = time.perf_counter()
            while stopped is None:
                batch = _draw(batcher, t.max_epochs)
                if batch is None:
                    stopped = "max_epochs"
                    break
                state = truncate(state) if batch.carry else None
                lr = learning_rate(cfg, tally.step, batch.epoch, tally.clock)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, targets = batch.inputs[rows], batch.targets[rows]
                chars = int((batch.targets != IGNORE).sum())  # in the global minibatch
                run = forward if inputs.shape[1] == t.seq_len else net  # compiled for full windows only

                with autocast(cfg, device):
                    logits, state = run(inputs, state)
                    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                          ignore_index=IGNORE, reduction="sum")
                # DDP averages gradients over processes: scaled so, the step is that of the global mean loss
                loss = nll * (dist.world_size / max(1, chars))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf))
                # one exchange per step: the global loss, and whether any process was told to stop or ran out of time
                now = time.perf_counter()
                time_up = t.max_time is not None and tally.elapsed + (now - tick) >= t.max_time
                shared = dist.all_reduce_sum(torch.tensor(
                    [float(nll.detach()), float(stop.received is not None), float(time_up), tally.elapsed + now - tick],
                    dtype=torch.float64, device=device))
                tally.clock = float(shared[3]) / dist.world_size
                loss_value = float(shared[0]) / max(1, chars)
                if tally.step == 0:
                    tally.first_loss = loss_value
                problem = _divergence(loss_value, grad_norm, tally.first_loss, scaler.is_enabled())
                if problem:
                    last = run_dir / ckpt.LAST
                    raise TrainingDiverged(
                        f"training diverged at step {tally.step + 1}: {problem}; "
                        + (f"the last good checkpoint is {last}; " if last.exists() else "no checkpoint was saved yet; ")
                        + "lower train.lr or set train.grad_clip")
                scaler.step(optimizer)
                scaler.update()

                now = time.perf_counter()
                tally.step += 1
                tally.epoch = batch.epoch
                tally.elapsed += now - tick
                tally.seconds += now - tick
                tick = now
                tally.loss_sum += loss_value * chars
                tally.chars += chars
                tally.grad_sum += grad_norm
                tally.grad_max = max(tally.grad_max, grad_norm)
                tally.steps += 1
                if tally.step % t.log_every == 0:
                    bar.total = _expected_steps(t, tally, start_step, start_elapsed)
                    _log_training(loggers, bar, tally, lr, _time_left(t, tally, start_step, start_elapsed), t.max_epochs)
                bar.update(1)
                if tally.step % t.eval_every == 0:
                    evaluate_and_save()
                if t.sample_every and tally.step % t.sample_every == 0 and dist.is_main:
                    bar.write(_preview(model, vocab, prepared.corpus.records, cfg.data.records == "pack", t.seed,
                                       warm_start(state, cfg, prepared.corpus.records)))
                now = time.perf_counter()  # evaluation and samples count in the wall-clock budget, not in chars/s
                tally.elapsed += now - tick
                tick = now
                stopped = (budget_spent() or ("interrupted" if float(shared[1]) else None)
                           or ("max_time" if float(shared[2]) else None))
        # --- the end -------------------------------------------------------------------------------
        if stopped == "interrupted":  # save without evaluating, so the resumed run logs what this one would have
            if tally.last_eval_step != tally.step:
                save(ckpt.LAST)
        else:  # a budget is spent: the last steps' record, a final evaluation and checkpoint
            if t.max_steps is None:
                bar.total = tally.step  # a time or epoch budget: the bar ends full where the run ended
            if tally.steps:
                _log_training(loggers, bar, tally, lr, None, t.max_epochs)
            if tally.last_eval_step != tally.step:
                evaluate_and_save()
    finally:
        bar.close()
        loggers.close()
    received = stop.received or signal.SIGINT if stopped == "interrupted" else None
    return RunResult(run_dir, tally.step, tally.best_val, tally.last_val, stopped, received)


def _make_run_dir(run_dir: Path) -> None:
    """Create the run directory and prove it takes files, before any training time is spent."""
    probe = run_dir / f".write-test-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RnnlmError(f"cannot write the run directory {run_dir}: {e.strerror or e}; "
                         "choose another folder with --out (or --name)") from None


def _draw(batcher: Batcher, max_epochs: int | None) -> Batch | None:
    """The next minibatch, or None once `max_epochs` epochs are done (the batcher then stays where it
    was, so a resume with a larger budget continues exactly)."""
    if max_epochs is None:
        return batcher.next()
    before = batcher.state_dict()
    batch = batcher.next()
    if batch.epoch >= max_epochs:
        batcher.load_state_dict(before)
        return None
    return batch


def _log_training(loggers: MetricLogger, bar: Any, tally: Tally, lr: float, left: float | None,
                  max_epochs: int | None) -> None:
    record = tally.record(lr)
    loggers.log(record)
    val = f"{tally.last_val:.4f}" if math.isfinite(tally.last_val) else "-"  # "-" until the first evaluation
    text = f"loss {record['train_loss']:.4f} val {val} lr {lr:.2e} {record['chars_per_sec']:,.0f} chars/s"
    if max_epochs is not None:
        text += f" epoch {tally.epoch + 1}/{max_epochs}"
    if left is not None:
        text += f" {_clock(left)} left"
    bar.set_postfix_str(text, refresh=False)


def _expected_steps(t: Any, tally: Tally, start_step: int, start_elapsed: float) -> int | None:
    """The bar's total: max_steps, or with only a time budget the step it will end near at this pace."""
    if t.max_steps is not None:
        return t.max_steps
    if t.max_time is None or tally.step <= start_step or tally.elapsed <= start_elapsed:
        return None
    pace = (tally.step - start_step) / (tally.elapsed - start_elapsed)
    return tally.step + max(0, round((t.max_time - tally.elapsed) * pace))


def _time_left(t: Any, tally: Tally, start_step: int, start_elapsed: float) -> float | None:
    """Seconds until the first of the step and time budgets, at this session's pace."""
    left = []
    if t.max_steps is not None and tally.step > start_step:
        left.append((t.max_steps - tally.step) * (tally.elapsed - start_elapsed) / (tally.step - start_step))
    if t.max_time is not None:
        left.append(t.max_time - tally.elapsed)
    return max(0.0, min(left)) if left else None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _divergence(loss: float, grad_norm: float, first_loss: float, scaled: bool) -> str | None:
    """Why training must stop, or None. Like char-rnn, a loss three times its first value has exploded.
    With fp16 loss scaling an infinite gradient only means the scale was too high: the scaler skips it."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if not math.isfinite(grad_norm) and not scaled:
        return f"the gradient norm became {grad_norm}"
    if loss > 3 * first_loss:
        return f"the loss exploded to {loss:.4g}, over three times its first value {first_loss:.4g}"
    return None


def _record_resume(run_dir: Path, step: int, changes: list[str]) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} resumed at step {step}"
    line += f" with {'; '.join(changes)}" if changes else ""
    with open(run_dir / RESUME_LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    _say(f"resuming at step {step}" + (f" with {'; '.join(changes)}" if changes else ""))


def _say(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def _progress(total: int | None, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")


def _preview(model: CharRNN, vocab: Vocab, records: bool, packed: bool, seed: int, start: State | None) -> str:
    """A short sample while training; a model trained on sequential streams writes from the state training
    carries, as `rnnlm sample` does from a checkpoint's (`rnnlm.sample.start_state`)."""
    opts = SampleOptions(length=200, temperature=0.8, num_samples=5 if records else 1, seed=seed)
    ids = generate(model, vocab, "", opts, records=records, packed=packed, start=start)
    return "\n".join(vocab.decode(s) for s in ids)


def _fingerprint(model: torch.nn.Module) -> str:
    """A digest of the parameters: equal on every process while the replicas agree."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _restore_rng(rng: dict[str, list[torch.Tensor]], dist: Dist) -> None:
    """This process's generators as saved; a process the saving run did not have keeps its fresh seed."""
    if dist.rank < len(rng["torch"]):
        torch.set_rng_state(rng["torch"][dist.rank])
    if dist.device.type == "cuda" and dist.rank < len(rng["cuda"]):
        torch.cuda.set_rng_state(rng["cuda"][dist.rank], dist.device)


def _gather_rows(state: State | None, dist: Dist) -> State | None:
    """Every process's rows of the carried state (layers, rows, hidden), as one process would carry it."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(dist.gather_rows(s, 1) for s in state)  # type: ignore[return-value]
    return dist.gather_rows(state, 1)


def _take_rows(state: State | None, rows: slice) -> State | None:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)  # type: ignore[return-value]
    return state[:, rows]


def _to_device(state: Any, device: torch.device | str) -> Any:
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(s.to(device) for s in state)
    return state.to(device)
