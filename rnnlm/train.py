"""The training loop: corpus -> batches -> model -> optimizer, with evaluation, checkpoints and metrics.

Each step (`Trainer.step`) is the seeds' loop:

    inputs, targets = next minibatch;  state = truncate(state) if the minibatch continues the last one
    logits, state = model(inputs, state);  loss = cross-entropy(logits, targets)
    loss.backward();  clip the gradient norm;  optimizer step

and around it (`Trainer.run`): a training record every `log_every` steps, an evaluation and checkpoints every
`eval_every`, a sample every `sample_every`, and the budgets (`max_steps`, `max_epochs`, `max_time`, `patience`),
the first spent ending the run with a final evaluation and checkpoint. `train(cfg, run_dir, resume=checkpoint)`
continues a run as if it had never stopped: the model, optimizer, step, epoch, batcher position, every random
generator, the carried hidden state and the half-gathered training record come back from `last.pt`. SIGINT or SIGTERM
saves `last.pt` without evaluating, so a resumed run logs exactly what an uninterrupted one would have.

Where the rest lives: the corpus read through the model's vocabulary, and the split evaluation, in `rnnlm.corpus`;
run directories and what a resume may change in `rnnlm.runs`, devices, precision and compile
checks in `rnnlm.device`, the progress bar in `rnnlm.console`, the optimizer and schedule in `rnnlm.optim`, the
checkpoint's contents in `rnnlm.checkpoint`. Under torchrun every process runs this same loop on its rows of each
minibatch (`rnnlm.distributed`); rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from rnnlm import checkpoint as ckpt
from rnnlm import device as dev
from rnnlm import fused
from rnnlm.batching import IGNORE, Batch, Batcher, make_batcher, truncate
from rnnlm.checkpoint import Checkpoint, Gathered, Tally, TrainingState
from rnnlm.config import Config, inert_settings
from rnnlm.console import Progress, say
from rnnlm.corpus import Prepared, evaluate_split, padded, prepare, scores_nothing, widest_step
from rnnlm.data import DataRoot
from rnnlm.distributed import Dist, fingerprint, gather_state, restore_rng, rng_states
from rnnlm.errors import RnnlmError, first_line
from rnnlm.evaluate import Score
from rnnlm.finetune import start_from, starting_point, transplant
from rnnlm.inference import warm_start
from rnnlm.metrics import METRICS, TENSORBOARD, JsonlLogger, Loggers, TensorBoardLogger, check_tensorboard
from rnnlm.model import CharRNN, check_fits
from rnnlm.optim import learning_rate, make_optimizer
from rnnlm.runs import (check_resume_config, check_resume_corpus, check_resume_corpus_path, folder_identity,
                        new_run_from, open_run, record_status)
from rnnlm.runtime import StopSignal, poll
from rnnlm.sample import SampleOptions, generate
from rnnlm.state import map_state, select_rows
from rnnlm.vocab import listed

Stopped = Literal["max_steps", "max_epochs", "max_time", "patience", "interrupted"]

OVERFLOWS_IN_A_ROW = 50
"""fp16 steps skipped in a row for an overflowing gradient that end the run: the loss scale is then 2**-50 of what
it was (a scale too high costs a few steps once)."""


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
    nothing_to_do: bool = False
    """A resumed run whose budget was already spent: it trained nothing and wrote nothing."""
    elapsed: float = 0.0
    """Seconds over every session, what train.max_time limits."""
    unsaved: tuple[str, ...] = ()
    """With nothing to do: the changes the resume accepted (`key: old -> new`), which it did not write either."""


class Agreed(NamedTuple):
    """What every process takes from a step (`Trainer._agree`)."""

    loss: float
    grad_norm: float
    stop: bool
    time_up: bool


def train(cfg: Config, run_dir: Path, resume: Checkpoint | None = None, root: DataRoot | None = None,
          progress: bool = True, dist: Dist | None = None) -> RunResult:
    """Train `cfg` in `run_dir` (created if new), or continue `resume` there. Under torchrun, pass the
    `Dist` of `rnnlm.distributed.setup`; every process calls this with the same arguments."""
    return Trainer(cfg, run_dir, resume, root, dist or Dist(device=dev.resolve_device(cfg.train.device))).run(progress)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, resume: Checkpoint | None, root: DataRoot | None,
                 dist: Dist) -> None:
        t, device = cfg.train, dist.device
        self.cfg, self.run_dir, self.dist, self.device = cfg, run_dir, dist, device
        self.data_root = str((root or DataRoot.resolve()).path.resolve())
        _check_settings(cfg, dist)
        changes = check_resume_config(resume.config, cfg, run_dir) if resume is not None else None
        self.resumed_from = resume.config if resume is not None else None
        torch.manual_seed(t.seed)
        if resume is not None:
            check_resume_corpus_path(cfg, run_dir, resume)
        point = starting_point(cfg) if t.init_from and resume is None else None
        self.prepared = prepare(cfg, root, resume.vocab if resume else None, dist.is_main, new_run=resume is None)
        if resume is not None:
            check_resume_corpus(cfg, run_dir, resume, self.prepared.store)
        self.start = start_from(cfg, self.prepared.vocab, point) if point is not None else None
        if self.start is not None:
            self.prepared = Prepared(self.prepared.store, self.start.vocab)
        self.vocab = self.prepared.vocab
        check_fits(len(self.vocab), cfg.model, device, t.batch_size, widest_step(cfg, self.prepared),
                   padded=padded(cfg, self.prepared), resumed=resume is not None, world=dist.world_size,
                   here=dist.sharing_memory)
        self.model = CharRNN(len(self.vocab), cfg.model)
        if self.start is not None:
            transplant(self.model, self.start)
        self.model.to(device)
        if device.type == "cpu":
            fused.kernels()  # compiled (the first time on this CPU) now, not inside the first timed step
        if dist.rank:  # own dropout masks per process; the weights all come from rank 0 (DDP broadcasts them)
            torch.manual_seed(t.seed + dist.rank)
        self.optimizer = make_optimizer(cfg, self.model)
        self.batcher = make_batcher(cfg, self.prepared.tokens("train"), self.prepared.offsets("train"), device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
        if dist.is_main and scores_nothing(cfg, self.prepared, "val"):  # say so now, not after an hour
            _no_validation(cfg)
        self.tally, self.state = Tally(), None
        self.fastest = 0.0  # characters a second of this session's fastest step (its first ones warm up, slowly)
        self.step_seconds = 0.0  # the last step's
        self.out_of_room = False  # the evaluation just made has to be the final one: `_room_after_evaluating`
        self.overflows = 0  # steps in a row whose gradient was not finite (fp16's scaler skipped them)
        if resume is not None:
            self._restore(resume)
        # Three handles on one model: `model` (its weights, saved and evaluated), `net` (what a step runs: the model,
        # or DDP's wrapper that averages gradients) and `compiled` (net compiled, for full windows, or net itself).
        self.net: torch.nn.Module = self.model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
        self.compiled = torch.compile(self.net, dynamic=False) if t.compile else self.net
        self.changes, self.loggers = changes, Loggers([])

    def _open(self) -> None:
        """The run directory made ready for this session, and the metric loggers writing into it (rank 0)."""
        t = self.cfg.train
        if self.changes is not None and self.cfg.train.schedule == "cosine":
            self._note_schedule()
        if self.dist.is_main:
            open_run(self.run_dir, self.cfg, self.tally.step, self.changes,
                     evaluated=self.tally.last_eval_step == self.tally.step)
            self.run_folder = folder_identity(self.run_dir)
            self.loggers = Loggers([JsonlLogger(self.run_dir / METRICS)] + (
                [TensorBoardLogger(self.run_dir / TENSORBOARD, purge_step=self.tally.step + 1)] if t.tensorboard
                else []))
            unknown = self.vocab.unknown(self.cfg.sample.prime) if t.sample_every else []
            if unknown:  # as rnnlm sample says of its prime
                say("warning: sample.prime has character(s) the model never saw, read as <unk> in the samples shown "
                    "while training: " + listed(unknown))
            if self.changes is None:
                say(self._described())
                self._note_line_ends()
                unseen, count = self.prepared.unseen("val")
                if unseen and not scores_nothing(self.cfg, self.prepared, "val"):  # else: warned it scores nothing
                    # a new run's vocabulary is the training split's (char-rnn's is the whole file's)
                    whose = "the model's vocabulary" + (" (the training split's)" if self.start is None else "")
                    say(f"warning: the val split holds {count:,} occurrence{'s' * (count != 1)} of {len(unseen):,} "
                        f"character{'s' * (len(unseen) != 1)} {whose} lacks ({listed(unseen)}): read as <unk>, they "
                        "count in the val loss")
            if self.start is not None and self.changes is None:  # where a fine-tuned run came from
                origin = str(Path(str(self.start.point.path)).resolve())
                self.loggers.log({"step": 0, "init_from": origin, "init_vocab": t.init_vocab,
                                  "new_characters": self.start.new_characters})

    def _described(self) -> str:
        """What a new run trains, as char-rnn and nanoGPT say at their start: the model, its size, its vocabulary,
        the training split, and for a fine-tuned run the weights it starts from."""
        m, split = self.cfg.model, self.prepared.store.manifest["splits"]["train"]
        weights = sum(p.numel() for p in self.model.parameters())
        line = (f"model: {m.cell} {m.num_layers}x{m.hidden_size}, {weights:,} parameters, {len(self.vocab)} symbols "
                f"(characters, <eos>, <unk>); training split: {split['characters']:,} characters of "
                f"{self.prepared.store.name}" + (f" ({self.cfg.data.path})" if self.cfg.data.path else ""))
        if self.start is not None:
            count = len(self.start.new_characters)
            fate = "read as <unk>" if self.cfg.train.init_vocab == "keep" else "given rows of their own"
            line += (f"\nstarting from the weights of {self.start.point.path} (step {self.start.point.step}); "
                     f"{count} character{'s' * (count != 1)} new to them" + (f", {fate}" if count else ""))
        return line

    def _note_line_ends(self) -> None:
        """Carriage returns are read as they are, a character the model learns and writes, which few expect of a
        text with Windows (CR LF) or classic Mac (CR) line ends: said once, at a new run's start, with how to go
        without. A few strays (a log's progress lines) are not worth a note."""
        counts = self.prepared.store.counts["train"]
        returns, newlines = counts.get("\r", 0), counts.get("\n", 0)
        if self.dist.is_main and returns and returns >= newlines / 2:
            say(f"note: the training split holds {returns:,} carriage returns (\\r) beside {newlines:,} newlines: the "
                "model learns \\r as a character and writes it; to train on \\n alone, convert the files first "
                "(dos2unix for \\r\\n line ends, mac2unix for \\r alone)")

    def _note_schedule(self) -> None:
        """A cosine decays over the step, epoch and time budgets: a resume that changes them changes the rest of the
        learning rate's curve, which the user should hear about before it happens."""
        tally, old = self.tally, self.resumed_from
        args = (tally.step, self.batcher.epoch, tally.clock, self.batcher.epochs_done())
        before, after = learning_rate(old, *args), learning_rate(self.cfg, *args)  # type: ignore[arg-type]
        if self.dist.is_main and not math.isclose(before, after, rel_tol=1e-9):
            say(f"note: train.schedule=cosine decays over train.max_steps, max_epochs and max_time, so the changed "
                f"budget changes the learning rate from step {tally.step + 1} on: {before:.2e} there before, "
                f"{after:.2e} now")

    def _restore(self, resume: Checkpoint) -> None:
        if resume.train is None:
            raise ckpt.CheckpointError(f"{resume.path}: holds no training state to resume from")
        saved = resume.train
        self.model.load_state_dict(resume.model)
        try:
            self.optimizer.load_state_dict(saved.optimizer)
            self.batcher.load_state_dict(saved.batcher)
            if saved.scaler:
                self.scaler.load_state_dict(saved.scaler)
            restore_rng(saved.rng, self.dist)
        except torch.cuda.OutOfMemoryError:  # (torch.OutOfMemoryError, under its older name)
            raise
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"{resume.path}: damaged checkpoint (its training state cannot be restored: "
                                       f"{first_line(e)}); start a new run from its weights: "
                                       f"{new_run_from(self.run_dir, resume.path)}") from None
        rows = self.dist.rows(self.cfg.train.batch_size)
        # float32 whatever precision saved it: a bf16 run's state is bfloat16, and `auto` may resolve otherwise here
        self.state = select_rows(map_state(lambda s: s.to(self.device, torch.float32), saved.state), rows)
        self.tally = copy.deepcopy(saved.tally)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self, progress: bool) -> RunResult:
        t, tally = self.cfg.train, self.tally
        stopped = self.budget_spent() or self._spent_before_a_step()
        if stopped is not None and self.resumed_from is not None and tally.last_eval_step == tally.step:
            # a finished run: nothing to do, nothing written
            return RunResult(self.run_dir, tally.step, tally.best_val, tally.last_val, stopped, nothing_to_do=True,
                             elapsed=tally.elapsed, unsaved=tuple(self.changes or ()))
        tally.ended_by = ""  # this session's own, once `finish` knows it
        self._open()
        self.bar = Progress(t, tally, progress and self.dist.is_main, epochs=self.batcher.epochs_done)
        if tally.gathered.steps and tally.gathered.lr is None:  # a checkpoint from before the rate was kept
            tally.gathered.lr = learning_rate(self.cfg, max(0, tally.step - 1), self.batcher.epoch, tally.clock,
                                              self.batcher.epochs_done())
        self.model.train()
        try:
            with StopSignal() as self.stop:
                self.tick = time.perf_counter()
                if self._evaluation_owed():  # first, as the stopped session would have done it, and its preview
                    if not self.evaluate_and_save():
                        stopped = "interrupted"
                    else:
                        stopped = self.budget_spent() or stopped or self._time_spent(False)
                    if stopped != "interrupted":
                        self._show_preview_if_due()
                        self._clock_in()
                while stopped is None:
                    stopped = self.train_one()
                stopped = self.finish(stopped)
        finally:
            self.bar.close()
            self.loggers.close()
        if self.dist.is_main:
            record_status(self.run_dir, stopped, tally.step)
        received = (self.stop.received or signal.SIGINT) if stopped == "interrupted" else None
        return RunResult(self.run_dir, tally.step, tally.best_val, tally.last_val, stopped, received)

    def train_one(self) -> Stopped | None:
        """One step and what is due after it; then why the session ends, or None to go on."""
        batch = _draw(self.batcher, self.cfg.train.max_epochs)
        if batch is None:
            return "max_epochs"
        interrupted, time_up = self.step(batch, self.stop)
        if not self.after_step():  # a cut evaluation ends the session whatever else is spent
            return "interrupted"
        return self.budget_spent() or ("interrupted" if interrupted else None) or self._time_spent(time_up)

    def _time_spent(self, time_up: bool) -> Stopped | None:
        """"max_time" if the step agreed the time is up, or the evaluation after it left no room for another."""
        return "max_time" if time_up or self.out_of_room else None

    def step(self, batch: Batch, stop: StopSignal) -> tuple[bool, bool]:
        """One optimizer step on `batch`; returns whether any process was told to stop, or ran out of time."""
        t, tally, dist = self.cfg.train, self.tally, self.dist
        self.state = truncate(self.state) if batch.carry else None
        lr = learning_rate(self.cfg, tally.step, batch.epoch, tally.clock, self.batcher.epochs_done())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        rows = dist.rows(t.batch_size)
        inputs, targets, chars = batch.inputs[rows], batch.targets[rows], batch.chars  # chars: the global minibatch's
        run, state = self.compiled, self.state
        if inputs.shape[1] != t.seq_len:  # compiled for full windows only
            run = self.net
        elif run is not self.net:  # compiled: one signature, float32 states (a None, or autocast's, compiled again)
            state = self.model.init_state(len(inputs)) if state is None else map_state(lambda s: s.float(), state)
        with dev.autocast(self.cfg, self.device):
            logits, self.state = run(inputs, state)
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                  ignore_index=IGNORE, reduction="sum")
        loss = nll * (dist.world_size / max(1, chars))  # DDP averages gradients: the step of the global mean loss
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip or math.inf)
        agreed = self._agree(nll, grad_norm, chars, stop)
        if tally.step == 0:
            tally.first_loss = agreed.loss
        self._check_divergence(agreed.loss, agreed.grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        now = time.perf_counter()
        tally.count_step(batch.epoch, now - self.tick, agreed.loss, chars, agreed.grad_norm, lr)
        self.fastest = max(self.fastest, chars / max(now - self.tick, 1e-9))
        self.step_seconds, self.tick = now - self.tick, now
        return agreed.stop, agreed.time_up

    def _agree(self, nll: torch.Tensor, grad_norm: torch.Tensor, chars: int, stop: StopSignal) -> Agreed:
        """What every process takes from a step, in one exchange and one read from the device (each read waits for
        the GPU to drain its queue): the global loss, the gradient norm (the same on every process), whether any
        process was told to stop or ran out of time; and the clock, their mean, which it sets in the tally (the
        schedule reads it)."""
        t, tally, dist = self.cfg.train, self.tally, self.dist
        now = time.perf_counter()
        # room for the final evaluation, and for the one due after this step: with no room for both, that one is the
        # final one (else the run would evaluate again a step later, past the budget)
        evaluations = 1 + ((tally.step + 1) % t.eval_every == 0)
        time_up = (t.max_time is not None
                   and tally.elapsed + (now - self.tick) + evaluations * self._final_eval() >= t.max_time)
        flags = torch.tensor([float(stop.received is not None), float(time_up), tally.elapsed + now - self.tick],
                             dtype=torch.float64)
        shared = dist.all_reduce_sum(torch.cat([nll.detach().double().reshape(1), grad_norm.double().reshape(1),
                                                dev.to_device(flags, self.device)]))
        nll_sum, norm_sum, stops, time_ups, clocks = shared.tolist()
        tally.clock = clocks / dist.world_size
        return Agreed(nll_sum / max(1, chars), norm_sum / dist.world_size, stops > 0, time_ups > 0)

    def after_step(self) -> bool:
        """The records, evaluations and samples due after this step; their time counts in the wall-clock budget,
        not in the characters per second. False if a stop signal cut the evaluation short."""
        t, tally = self.cfg.train, self.tally
        self.bar.step(tally)  # first: the record shown beside the bar is this step's
        last = t.max_steps is not None and tally.step >= t.max_steps  # its record goes before its evaluation's
        if tally.step % t.log_every == 0 or last:
            self.log_training(final=last)
        if tally.step % t.eval_every == 0 and not self.evaluate_and_save():
            return False
        self._show_preview_if_due()
        poll()
        self._clock_in()
        return True

    def _preview_due(self) -> bool:
        every = self.cfg.train.sample_every
        return bool(every) and self.tally.step % every == 0

    def _show_preview_if_due(self) -> None:
        """The sample due at this step, unless a stop was asked for: the run saves and exits first (a preview of
        a long sample.length can take seconds, which a Ctrl-C should not wait for; a resume does not draw it)."""
        if self._preview_due() and self.dist.is_main and self.stop.received is None:
            self.bar.write(self.preview())

    def _clock_in(self) -> None:
        """The wall-clock seconds since the last tick into the elapsed time (what max_time limits and checkpoints
        keep): steps, evaluations, samples, and an evaluation a stop signal cut short alike."""
        now = time.perf_counter()
        self.tally.elapsed, self.tick = self.tally.elapsed + now - self.tick, now

    def finish(self, stopped: Stopped) -> Stopped:
        """A run interrupted saves without evaluating, so the resumed run logs what this one would have; a run whose
        budget is spent logs its last steps' record, then a final evaluation and checkpoint. Returns how the run
        ended: interrupted, if a stop signal cut the final evaluation short."""
        tally = self.tally
        if stopped != "interrupted":
            tally.ended_by = stopped  # kept in the checkpoints below: a resume knows the session was ending
            self.bar.finish(tally)
            logged = tally.gathered.steps > 0
            if logged:
                self.log_training(final=True)
            if tally.last_eval_step == tally.step:  # evaluated and saved after this step, before its end was known
                if logged or self._preview_due() or stopped == "max_time":  # what a resume reads changed
                    self.save(ckpt.LAST)
                return stopped
            if self.evaluate_and_save():
                return stopped
            stopped = "interrupted"
        if tally.last_eval_step != tally.step:
            self._clock_in()
            self.save(ckpt.LAST)
        return stopped

    def _spent_before_a_step(self) -> Stopped | None:
        """The time or epoch budget a resumed run has spent before it takes a step. Time: a session ended by it (with
        room left for the final evaluation, so perhaps a little short of it) spent it while the budget stays as it
        was. Epochs: the next minibatch, looked at without taking it, is past them."""
        t, old = self.cfg.train, self.resumed_from
        ended = self.tally.ended_by == "max_time" and old is not None and old.train.max_time == t.max_time
        if t.max_time is not None and (ended or self.tally.elapsed >= t.max_time):
            return "max_time"
        if t.max_epochs is not None:
            before = self.batcher.state_dict()
            spent = _draw(self.batcher, t.max_epochs) is None
            self.batcher.load_state_dict(before)
            return "max_epochs" if spent else None
        return None

    def _evaluation_owed(self) -> bool:
        """Whether a resumed run starts where a stop signal cut an evaluation short (a resumed finished run owes
        its final one: `finish`)."""
        tally = self.tally
        return (self.resumed_from is not None and tally.step > 0 and tally.step % self.cfg.train.eval_every == 0
                and tally.last_eval_step != tally.step)

    def _final_eval(self) -> float:
        """Seconds the final evaluation will likely take, which a time budget leaves room for: the last one's (kept in
        checkpoints, so a resumed session's too), or before any, the validation characters at three times the
        training speed (evaluation reads about that much faster than training; `bench/speed.py` measures it). That
        guess rests on the session's fastest step (a busy machine's first steps can take a second each) and leaves
        at most half the budget, so that a run trains."""
        if not self.dist.is_main:
            return 0.0
        if self.tally.eval_seconds is not None:
            return self.tally.eval_seconds
        speed = self.fastest / self.dist.world_size  # one process's: rank 0 evaluates alone
        val = self.prepared.store.manifest["splits"]["val"]["characters"]
        val = min(val, self.cfg.train.eval_chars or val)
        half = self.cfg.train.max_time / 2 if self.cfg.train.max_time is not None else math.inf
        return min(val / (3 * speed), half) if speed else 0.0

    def budget_spent(self) -> Stopped | None:
        """The budgets every process sees alike (time is agreed on separately)."""
        t, tally = self.cfg.train, self.tally
        if t.max_steps is not None and tally.step >= t.max_steps:
            return "max_steps"
        if t.patience is not None and tally.evals_since_best >= t.patience:
            return "patience"
        return None

    def _check_divergence(self, loss: float, grad_norm: float) -> None:
        self.overflows = self.overflows + 1 if not math.isfinite(grad_norm) else 0
        problem = _divergence(loss, grad_norm, self.tally.first_loss, self.scaler.is_enabled(), self.overflows)
        if problem:
            last, clip = self.run_dir / ckpt.LAST, self.cfg.train.grad_clip
            fix = "lower train.lr or set train.grad_clip" if clip is None else (
                f"lower train.lr or train.grad_clip (now {clip:g})")
            # a resume keeps the learning rate and the clip (what is learned): a new run from the weights changes them
            raise TrainingDiverged(
                f"training diverged at step {self.tally.step + 1}: {problem}; " + (
                    f"the last good checkpoint is {last}: {fix} in a new run from it, e.g. "
                    f"{new_run_from(self.run_dir, last)} train.lr=LOWER"
                    if last.exists() else f"no checkpoint was saved yet: {fix} and start again"))

    # -- records, evaluation, checkpoints ----------------------------------------------------------------------------

    def log_training(self, final: bool = False) -> None:
        """The training record of the steps gathered since the last one, which the tally then forgets."""
        tally = self.tally
        means, skipped = tally.gathered.means(), tally.gathered.skipped
        record = {"step": tally.step, "epoch": tally.epoch, "train_loss": means["train_loss"], "lr": means["lr"],
                  "grad_norm": means["grad_norm"], "grad_norm_max": means["grad_norm_max"],
                  "chars_per_sec": means["chars_per_sec"], "elapsed": round(tally.elapsed, 3),
                  "train_time": round(tally.train_time, 3), **({"skipped_steps": skipped} if skipped else {})}
        tally.gathered = Gathered()
        self.loggers.log(record)
        self.bar.show(tally, record, final)

    def evaluate(self, split: str) -> Score:
        return evaluate_split(self.model, self.cfg, self.prepared, split)

    def evaluate_and_save(self) -> bool:
        """Scores the validation split and saves; False, with nothing logged or saved, if a stop signal cut the
        evaluation short (an evaluation can take a minute; the resumed run does it again)."""
        nll = self._validate()
        if nll is None:
            return False
        tally = self.tally
        tally.last_val, tally.last_eval_step = nll, tally.step
        improved = nll < tally.best_val
        tally.best_val = min(tally.best_val, nll)
        tally.evals_since_best = 0 if improved else tally.evals_since_best + 1
        keep_last = self.cfg.train.keep_last
        self._clock_in()
        # last.pt first: a stop or a full disk between the writes leaves a run that resumes (best.pt an older best)
        self.save(ckpt.LAST, *[ckpt.BEST] * improved, *[ckpt.numbered(tally.step)] * (keep_last > 0))
        if self.dist.is_main and keep_last:
            for _, path in ckpt.numbered_checkpoints(self.run_dir)[:-keep_last]:
                path.unlink()
        return True

    def _validate(self) -> float | None:
        """The validation loss every process agrees on (rank 0 scores, logs and shows it), or None if a stop signal
        cut the evaluation short."""
        tally, score = self.tally, None
        if self.dist.is_main:
            self.bar.evaluating(tally)
            began = time.perf_counter()
            with contextlib.suppress(StopSignal.Cut), self.stop.cutting_short():
                score = self.evaluate("val")
                tally.eval_seconds = time.perf_counter() - began
        outcome = None if score is None else (score.nll, not self._room_after_evaluating())
        outcome = self.dist.broadcast(outcome)  # rank 0's; None: cut short
        if outcome is None:
            return None
        self.out_of_room = outcome[1]
        if score is not None:
            self.loggers.log({"step": tally.step, "epoch": tally.epoch, "val_loss": score.nll, "bpc": score.bpc,
                              "perplexity": score.perplexity, "elapsed": round(tally.elapsed, 3),
                              "train_time": round(tally.train_time, 3)})
            self.bar.evaluated(tally, score.nll, score.bpc, tally.eval_seconds or 0.0)
        return outcome[0]

    def _room_after_evaluating(self) -> bool:
        """On rank 0, after an evaluation: whether the time budget still holds another step and the final evaluation,
        whose cost the one just made tells (the time check before it could only guess). Without, this one is the
        final one: another step would end in a second evaluation past the budget. Every process takes rank 0's
        answer."""
        t = self.cfg.train
        spent = self.tally.elapsed + time.perf_counter() - self.tick
        return t.max_time is None or spent + self.step_seconds + self._final_eval() < t.max_time

    def save(self, *names: str) -> None:
        """One checkpoint under each name (in order): every process hands in its rows of the hidden state and its
        random generators, rank 0 writes."""
        dist = self.dist
        full_state = gather_state(truncate(self.state), dist)
        rng = rng_states(dist)
        replicas = dist.all_gather(fingerprint(self.model)) if dist.enabled else []
        if len(set(replicas)) > 1 and dist.is_main:
            say(f"warning: the model replicas differ at step {self.tally.step} ({', '.join(replicas)})")
        if not dist.is_main:
            return
        if folder_identity(self.run_dir) != self.run_folder:  # else into a folder made again, or another run's
            raise RnnlmError(f"{self.run_dir} was removed while the run trained; nothing more is saved, the run stops")
        training = TrainingState(self.optimizer.state_dict(), self.batcher.state_dict(),
                                 self.scaler.state_dict() if self.scaler.is_enabled() else None, rng,
                                 map_state(lambda s: s.cpu(), full_state), self.tally, replicas,
                                 self.prepared.store.fingerprint)
        ckpt.save([self.run_dir / n for n in names],
                  Checkpoint(self.cfg, self.vocab, self.prepared.records, self.model.state_dict(),
                             self.tally.step, training, data_root=self.data_root))

    def preview(self) -> str:
        """A sample while training, with the run's `sample` settings, under a header naming the step; a model trained
        on sequential streams writes from the state training carries, as `rnnlm sample` does from a checkpoint's
        (`rnnlm.inference.start_state`)."""
        records, s = self.prepared.records, self.cfg.sample
        opts = SampleOptions(length=s.length, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                             num_samples=5 if records else 1, seed=self.cfg.train.seed)
        ids = generate(self.model, self.vocab, s.prime, opts, records=records, packed=self.cfg.data.records == "pack",
                       start=warm_start(self.state, self.cfg, records))
        drawn = [f"temperature {s.temperature:g}", *([f"top-k {s.top_k}"] if s.top_k else []),
                 *([f"top-p {s.top_p:g}"] if s.top_p else []), *([f"prime {s.prime!r}"] if s.prime else [])]
        return (f"sample at step {self.tally.step} ({', '.join(drawn)}):\n"
                + "\n".join(s.prime + self.vocab.decode(row) for row in ids))


def _check_settings(cfg: Config, dist: Dist) -> None:
    """The settings this machine and this number of processes cannot train with, refused before any work."""
    t = cfg.train
    dev.check_precision(cfg, dist.device)
    dev.check_compile(cfg, dist.device)
    if t.batch_size % dist.world_size:
        raise RnnlmError(f"train.batch_size={t.batch_size} cannot be shared evenly by {dist.world_size} "
                         f"processes; use a multiple of {dist.world_size}")
    if t.tensorboard and dist.is_main:
        check_tensorboard()
    if not dist.is_main:
        return
    if t.max_steps is not None and t.warmup_steps > t.max_steps:  # a slip, most likely: said
        say(f"warning: train.warmup_steps={t.warmup_steps} is above train.max_steps={t.max_steps}, so the learning "
            f"rate rises for the whole run and never reaches train.lr={t.lr:g}; lower train.warmup_steps")
    for warning in inert_settings(cfg):
        say(warning)


def _no_validation(cfg: Config) -> None:
    """A validation split with nothing to score: refused for early stopping, which reads it; otherwise said once."""
    if cfg.train.patience is not None:
        raise RnnlmError("train.patience stops on the validation loss, but the validation split has nothing "
                         "to score; give data.splits a val share or set train.patience=null")
    # "nothing to score": a stream split of one character has that one, read as context only
    say("warning: the validation split has nothing to score, so the run logs no validation loss and saves no "
        "best.pt; give data.splits a larger val share to measure it")


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


def _divergence(loss: float, grad_norm: float, first_loss: float, scaled: bool, overflows: int = 0) -> str | None:
    """Why training must stop, or None. Like char-rnn, a loss three times its first value has exploded.
    With fp16 loss scaling an infinite gradient only means the scale was too high: the scaler skips it and halves
    the scale, without a floor, so `overflows` in a row (this step's included) mean no scale will do."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if not math.isfinite(grad_norm) and not scaled:
        return f"the gradient norm became {grad_norm}"
    if scaled and overflows >= OVERFLOWS_IN_A_ROW:
        return (f"the fp16 gradient overflowed {overflows} steps in a row (each one skipped, the loss scale halved "
                "each time); train.precision=bf16 has float32's range")
    if loss > 3 * first_loss:
        return f"the loss exploded to {loss:.4g}, over three times its first value {first_loss:.4g}"
    return None
