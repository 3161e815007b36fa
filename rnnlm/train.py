"""The training loop: corpus -> batches -> model -> optimizer, with evaluation, checkpoints and metrics.

A run lives in one folder:

    checkpoints/<run>/
        config.yaml      the fully resolved config
        metrics.jsonl    training and evaluation records (rnnlm.metrics)
        last.pt          the newest checkpoint: everything needed to resume exactly
        best.pt          the checkpoint with the lowest validation loss so far

`train(cfg, run_dir)` starts a run; `train(cfg, run_dir, resume=checkpoint)` continues one as if it had
never stopped: the model, optimizer, step, epoch, batcher position, every random generator and the
carried hidden state come back from `last.pt`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from rnnlm import checkpoint as ckpt
from rnnlm.batching import IGNORE, Batcher, RandomWindows, RecordBatches, SequentialStreams, WindowLengths, truncate
from rnnlm.config import Config, ConfigError
from rnnlm.data import Corpus, DataRoot, load_corpus
from rnnlm.errors import RnnlmError
from rnnlm.evaluate import Score, score_records, score_stream
from rnnlm.metrics import METRICS, JsonlLogger, truncate_metrics
from rnnlm.model import CharRNN, State
from rnnlm.sample import SampleOptions, generate
from rnnlm.vocab import Vocab

SAFE_TO_CHANGE = {"train.max_steps", "train.max_time", "train.eval_every", "train.log_every", "train.sample_every"}
"""Keys a resumed run may change: budgets and intervals, not what is learned or how."""


class TrainingDiverged(RnnlmError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class RunResult:
    run_dir: Path
    step: int
    best_val: float
    last_val: float
    stopped: Literal["max_steps", "max_time", "interrupted"]


# ---------------------------------------------------------------------------------------------------
# Setting up: device, data, model, optimizer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RnnlmError(f"train.device={name}: this machine has no CUDA device; use train.device=cpu (or auto)")
        index = int(name[5:]) if name.startswith("cuda:") else 0
        if index >= torch.cuda.device_count():
            raise RnnlmError(f"train.device={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)


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
    if records_mode == "pad":
        return [vocab.encode(r) for r in texts]
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
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return torch.optim.RMSprop(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, alpha=0.95)


def learning_rate(cfg: Config, step: int, epoch: int) -> float:
    """The rate for optimizer step `step` (0-based) in epoch `epoch` (epochs completed before it)."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        span = max(1, t.max_steps - t.warmup_steps)
        progress = min(1.0, (step - t.warmup_steps) / span)
        return t.min_lr + (t.lr - t.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    if t.schedule == "char_rnn":
        # char-rnn decays the rate at the end of every epoch from `learning_rate_decay_after` on
        return t.lr * t.decay_rate ** max(0, epoch - t.decay_after + 1) if epoch >= 1 else t.lr
    return t.lr


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(cfg: Config, device: torch.device) -> None:
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise RnnlmError("train.precision=fp16 needs a CUDA device; on a CPU use train.precision=bf16 or fp32")
    if cfg.train.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RnnlmError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")


# ---------------------------------------------------------------------------------------------------
# Evaluation and the config a resumed run may differ in


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
    """The changed keys a resume accepts; any other change is an error listing the keys."""
    changed = config_differences(old, new)
    refused = [k for k in changed if k not in SAFE_TO_CHANGE and not k.startswith("sample.")]
    if refused:
        raise ConfigError(f"cannot resume with a changed config: {', '.join(refused)} differ from the run's "
                          f"config.yaml; only {', '.join(sorted(SAFE_TO_CHANGE))} may change on resume")
    return changed


# ---------------------------------------------------------------------------------------------------
# The loop


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
          progress: bool = True) -> RunResult:
    """Train `cfg` in `run_dir` (created if new), or continue `resume` there."""
    # --- setup -------------------------------------------------------------------------------------
    device = resolve_device(cfg.train.device)
    check_precision(cfg, device)
    torch.manual_seed(cfg.train.seed)
    prepared = prepare(cfg, root, resume.vocab if resume else None)
    vocab = prepared.vocab
    model = CharRNN(len(vocab), cfg.model).to(device)
    optimizer = make_optimizer(cfg, model)
    batcher = make_batcher(cfg, prepared.train, device)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
    evaluate_split(model, cfg, prepared, "val")  # fail now, not after an hour, if val cannot be scored

    step, best_val, last_val, elapsed, first_loss = 0, math.inf, math.inf, 0.0, math.nan
    state: State | None = None
    pending = {"loss": 0.0, "chars": 0, "since": 0.0}  # a training record averages the steps since the last one
    if resume is not None:
        model.load_state_dict(resume.model)
        r = resume.train
        optimizer.load_state_dict(r["optimizer"])
        batcher.load_state_dict(r["batcher"])
        scaler.load_state_dict(r["scaler"]) if r.get("scaler") else None
        torch.set_rng_state(r["rng"]["torch"])
        if device.type == "cuda" and r["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(r["rng"]["cuda"])
        state = _to_device(r.get("state"), device)
        step, best_val, last_val, elapsed = resume.step, r["best_val"], r["last_val"], r["elapsed"]
        first_loss = r["first_loss"]
        pending = dict(r["pending"])
        truncate_metrics(run_dir / METRICS, step)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    metrics = JsonlLogger(run_dir / METRICS)

    def save(path: Path) -> None:
        ckpt.save(path, {
            "config": cfg.to_dict(), "vocab": list(vocab.itos), "records": prepared.corpus.records,
            "model": model.state_dict(), "step": step,
            "train": {
                "optimizer": optimizer.state_dict(), "batcher": batcher.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
                "state": _to_device(state, "cpu"), "best_val": best_val, "last_val": last_val,
                "elapsed": elapsed, "pending": dict(pending), "first_loss": first_loss,
            },
        })

    def evaluate_and_save() -> None:
        nonlocal best_val, last_val
        score = evaluate_split(model, cfg, prepared, "val")
        last_val = score.nll
        metrics.log({"step": step, "val_loss": score.nll, "bpc": score.bpc, "perplexity": score.perplexity,
                     "elapsed": round(elapsed, 3)})
        if score.nll < best_val:
            best_val = score.nll
            save(run_dir / ckpt.BEST)
        save(run_dir / ckpt.LAST)

    # --- loop --------------------------------------------------------------------------------------
    t = cfg.train
    bar = _progress(t.max_steps, step, progress)
    stopped: Literal["max_steps", "max_time", "interrupted"] = "max_steps"
    model.train()
    with _StopSignal() as stop:
        tick = time.perf_counter()
        while step < t.max_steps:
            if t.max_time is not None and elapsed >= t.max_time:
                stopped = "max_time"
                break
            if stop.received is not None:
                stopped = "interrupted"
                break
            batch = batcher.next()
            state = truncate(state) if batch.carry else None
            lr = learning_rate(cfg, step, batch.epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr

            with autocast(cfg, device):
                logits, state = model(batch.inputs, state)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1),
                                       ignore_index=IGNORE)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip or math.inf)
            loss_value, norm_value = loss.item(), grad_norm.item()
            first_loss = loss_value if step == 0 else first_loss
            problem = _divergence(loss_value, norm_value, first_loss, scaler.is_enabled())
            if problem:
                last = run_dir / ckpt.LAST
                raise TrainingDiverged(
                    f"training diverged at step {step + 1}: {problem}; "
                    + (f"the last good checkpoint is {last}; " if last.exists() else "no checkpoint was saved yet; ")
                    + "lower train.lr or set train.grad_clip")
            scaler.step(optimizer)
            scaler.update()
            step += 1

            now = time.perf_counter()
            elapsed += now - tick
            tick = now
            chars = int((batch.targets != IGNORE).sum())
            pending["loss"] += loss_value * chars
            pending["chars"] += chars
            if step % t.log_every == 0 or step == t.max_steps:
                train_loss = pending["loss"] / max(1, pending["chars"])
                chars_per_sec = pending["chars"] / max(elapsed - pending["since"], 1e-9)
                metrics.log({"step": step, "epoch": batch.epoch, "train_loss": train_loss, "lr": lr,
                             "grad_norm": norm_value, "chars_per_sec": round(chars_per_sec, 1),
                             "elapsed": round(elapsed, 3)})
                bar.set_postfix_str(f"loss {train_loss:.4f} val {last_val:.4f} lr {lr:.2e} {chars_per_sec:,.0f} chars/s",
                                    refresh=False)
                pending = {"loss": 0.0, "chars": 0, "since": elapsed}
            bar.update(1)
            if step % t.eval_every == 0:
                evaluate_and_save()
                tick = time.perf_counter()  # evaluation is not training time
            if t.sample_every and step % t.sample_every == 0:
                bar.write(_preview(model, vocab, prepared.corpus.records, cfg.data.records == "pack", t.seed))
                tick = time.perf_counter()
    # --- the end: a final evaluation and checkpoint, whatever stopped the run ------------------------
    if step % t.eval_every != 0 or step == 0:
        evaluate_and_save()
    bar.close()
    metrics.close()
    return RunResult(run_dir, step, best_val, last_val, stopped)


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


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr)


def _preview(model: CharRNN, vocab: Vocab, records: bool, packed: bool, seed: int) -> str:
    opts = SampleOptions(length=200, temperature=0.8, num_samples=5 if records else 1, seed=seed)
    ids = generate(model, vocab, "", opts, records=records, packed=packed)
    return "\n".join(vocab.decode(s) for s in ids)


def _to_device(state: Any, device: torch.device | str) -> Any:
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(s.to(device) for s in state)
    return state.to(device)
