"""Run directories: where a new run goes, where a resume starts, and what a resume may change.

    checkpoints/<run>/
        config.yaml      the fully resolved config
        metrics.jsonl    training and evaluation records (rnnlm.metrics)
        last.pt          the newest checkpoint: everything needed to resume exactly
        best.pt          the checkpoint with the lowest validation loss so far
        step-000400.pt   with train.keep_last: the newest numbered checkpoints, one per evaluation
        resume.log       one line per resume, with the config keys it changed
        tensorboard/     with train.tensorboard: the same metrics as TensorBoard event files
        status.json      how the last session ended (finished, interrupted, failed), for `rnnlm runs`
        .lock            held (flock) by the process training in the folder; names its pid
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rnnlm import checkpoint as ckpt
from rnnlm.atomic import atomic_file, remove_stale_temp_files
from rnnlm.config import Config, ConfigError, read_yaml, value_at
from rnnlm.console import say
from rnnlm.data import missing_path
from rnnlm.data.store import Store
from rnnlm.data.text import is_glob
from rnnlm.distributed import Dist
from rnnlm.errors import RnnlmError, shell_word
from rnnlm.finetune import FREE
from rnnlm.metrics import METRICS, read_metrics, truncate_metrics
from rnnlm.rundir import LOCK, RESUME_LOG, STATUS, holder, is_run, run_meant

SAFE_TO_CHANGE = {"train.max_steps", "train.max_epochs", "train.max_time", "train.patience", "train.eval_every",
                  "train.log_every", "train.sample_every", "train.keep_last", "train.tensorboard", "train.device",
                  "train.threads", "train.compile"}
"""Keys a resumed run may change, besides every `sample.*` key: budgets, intervals, what is kept and
where or how fast it runs, never what is learned or from what."""
MOVED = "data.path"
"""A key a resume may change when it leads to the text the run trained on (the trainer compares the corpus's
fingerprint): a corpus that moved."""


def new_run_dir(out: Path, stem: str, name: str | None, dist: Dist) -> Path:
    """A new run's folder, created: `out/name`, or `out/<stem>-<date>-<time>` (then `-2`, `-3`... when runs started
    in the same second, a sweep's, took it); never a folder that exists. Creating it is the claim (one `mkdir`,
    which two processes cannot both win). Under torchrun rank 0 creates it and every process gets its name."""
    if name is not None and (not name.strip() or name in (".", "..") or "/" in name or "\0" in name):
        why = ("not blank; leave --name out for one made of the config's name and the time" if not name.strip() else
               f"not {name!r}, which names a folder already there" if name in (".", "..") else
               "without '/'; choose where runs go with --out")
        raise RnnlmError(f"--name {name!r}: a run's name is one folder name, {why}")
    first, problem = out / (name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"), None
    run_dir = first
    if dist.is_main and out.exists() and not out.is_dir():
        problem = f"--out {out}: a file, not a folder; choose a folder for the runs"
    elif dist.is_main and is_run(out):  # `--out checkpoints/book` meant as --name: a run hidden inside another
        problem = (f"--out {out} is a run, and --out is the folder new runs are made in; continue it with "
                   f"rnnlm train --resume {shell_word(out)}, or name a new run beside it with --out "
                   f"{shell_word(Path(os.path.abspath(out)).parent)} --name NAME")
    elif dist.is_main:
        for n in range(1, 2 if name is not None else 1000):  # a name given is that folder or none
            run_dir = first if n == 1 else first.with_name(f"{first.name}-{n}")
            try:
                problem = _claim(out, run_dir)
                break
            except _Taken as taken:
                problem = str(taken)
    run_dir, problem = dist.broadcast((run_dir, problem))
    if problem:
        raise RnnlmError(problem)
    return run_dir


class _Taken(Exception):
    """The folder is another run's, or another start's that has not begun training yet."""


def _claim(out: Path, run_dir: Path) -> str | None:
    """Creates `run_dir` (and `out`), or takes over an abandoned one: None, or what is wrong; `_Taken` if another
    run or start has it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        if run_dir.exists() and not run_dir.is_dir():
            return f"{run_dir} is a file, not a run folder; choose another --name"
        occupant = _occupant(run_dir)
        if occupant == "nobody":
            return None
        if occupant == "a start":
            raise _Taken(f"{run_dir} is an empty folder (a start that never began, or one beginning now); remove it "
                         "or choose another --name") from None
        pid = holder(run_dir)
        if pid is not None:
            raise _Taken(f"{run_dir} is a run being trained by process {pid}; choose another --name") from None
        raise _Taken(f"{run_dir} already exists; continue it with --resume {shell_word(run_dir)} or choose another "
                     "--name") from None
    except OSError as e:
        return f"cannot write the run directory {run_dir}: {e.strerror or e}; choose another folder with --out"
    return None


def _occupant(run_dir: Path) -> Literal["nobody", "a start", "a run"]:
    """Whose an existing folder is. "nobody": it holds only a run's lock, with the pid of the start that took it and
    no process holding it now (a start killed, by SIGKILL or by SIGTERM before training, before it wrote anything):
    a new run may take its name. "a start": it holds nothing, or a lock no start has written its pid into yet (a
    start that never began, or one that claimed the folder a moment ago). "a run": anything else."""
    try:
        names = {p.name for p in run_dir.iterdir()}
        pid = (run_dir / LOCK).read_text().strip() if names == {LOCK} else None
    except OSError:
        return "a run"
    if not names or pid == "":
        return "a start"
    return "nobody" if pid is not None and holder(run_dir) is None else "a run"


class RunLock:
    """An exclusive OS lock on a run directory, held by the process that trains in it: a second `train --resume` of
    the run is refused, naming the holder. The lock dies with its process, so a killed run leaves none behind."""

    def __init__(self, run_dir: Path) -> None:
        self.path, self.file = run_dir / LOCK, None

    def __enter__(self) -> "RunLock":
        try:
            self.file = open(self.path, "a+")
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self.path.read_text().strip() or "?"
            self.file.close()  # type: ignore[union-attr]
            raise RnnlmError(f"{self.path.parent} is being trained by process {pid}; wait for it to end, or stop it "
                             f"(kill {pid}) and then resume") from None
        except OSError as e:
            raise RnnlmError(f"cannot lock the run directory {self.path.parent}: {e.strerror or e}") from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def require_run_dir(run_dir: Path) -> None:
    """An error unless `run_dir` is a run a resume can continue: a folder with its config.yaml or last.pt."""
    if not run_dir.is_dir():
        what, meant = "a file" if run_dir.exists() else "no such folder", run_meant(run_dir)
        raise RnnlmError(f"--resume {run_dir}: not a run directory ({what}); " + (
            f"did you mean --resume {shell_word(meant)}?" if meant is not None else
            "give the folder `rnnlm train` made (rnnlm runs lists them)"))
    if not (run_dir / "config.yaml").is_file() and not (run_dir / ckpt.LAST).exists():
        if _occupant(run_dir) == "nobody":  # its lock alone
            raise RnnlmError(f"--resume {run_dir}: a start killed before it wrote anything (it holds only its lock), "
                             "so nothing to resume: start the run again (its --name may be used again)")
        raise RnnlmError(f"--resume {run_dir}: not a run directory (it has no config.yaml or {ckpt.LAST}); give the "
                         "folder `rnnlm train` made (rnnlm runs lists them)")
    if not (run_dir / ckpt.LAST).exists() and not is_run(run_dir):  # a project's own config.yaml: not to overwrite
        raise RnnlmError(f"--resume {run_dir}: not a run directory (its config.yaml has nothing training writes beside "
                         "it); for a new run with that config: rnnlm train "
                         f"{shell_word(run_dir / 'config.yaml')}")


def resume_point(run_dir: Path) -> ckpt.Checkpoint | None:
    """The checkpoint a resume of `run_dir` starts from; None if the run was stopped before its first
    checkpoint (it then starts over from its config.yaml)."""
    require_run_dir(run_dir)
    if (run_dir / ckpt.LAST).exists():
        return ckpt.load(run_dir / ckpt.LAST)
    others = sorted(p.name for p in run_dir.glob("*.pt"))
    if others:  # trained, but last.pt is gone: starting over would overwrite what the run learned
        kept = ckpt.numbered_checkpoints(run_dir)
        weights = ckpt.BEST if ckpt.BEST in others else kept[-1][1].name if kept else others[-1]  # or the newest
        raise RnnlmError(f"--resume {run_dir}: the run has {', '.join(others)} but no {ckpt.LAST}, which a resume "
                         "continues from (the optimizer, the position in the data); start a new run from its weights "
                         f"with: {new_run_from(run_dir, run_dir / weights)}")
    if checkpoints_removed(run_dir):  # starting over would empty its metrics.jsonl
        raise RnnlmError(f"--resume {run_dir}: the run saved checkpoints (its {METRICS} goes to step "
                         f"{max((r['step'] for r in _stepped(run_dir)), default=0)}), but they are gone, and a resume "
                         f"would start it over on top of its metrics; train it again as a new run: rnnlm train "
                         f"{shell_word(run_dir / 'config.yaml')} --out {shell_word(run_dir.parent)}")
    return None


def checkpoints_removed(run_dir: Path) -> bool:
    """Whether a run without any checkpoint had saved some, removed since: a session ended after a step (its end
    saves one), or it trained on past an evaluation (each evaluation saves one, after logging its record: a run
    killed in between has the record alone). A run stopped before its first checkpoint did neither."""
    if any(run_dir.glob("*.pt")):
        return False
    records = _stepped(run_dir)
    evaluated = min((r["step"] for r in records if "val_loss" in r), default=None)
    return _ended(run_dir).get("step", 0) > 0 or (evaluated is not None and
                                                   max(r["step"] for r in records) > evaluated)


def _ended(run_dir: Path) -> dict[str, Any]:
    """How the run's last session ended (`record_status`): {} when unknown (running, killed, or a hand edit)."""
    try:
        ended = json.loads((run_dir / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return ended if isinstance(ended, dict) and type(ended.get("step", 0)) is int else {}


def _stepped(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics records that have an integer step (a hand edit may have left others)."""
    metrics = run_dir / METRICS
    return [r for r in read_metrics(metrics) if type(r.get("step")) is int] if metrics.is_file() else []


def check_resume_config(old: Config, new: Config, run_dir: Path, source: Path | None = None,
                        overrides: Sequence[str] = ()) -> list[str]:
    """The changes a resume accepts, as `key: old -> new`; any other change is an error listing the keys, where
    they came from (`overrides`, else the config file `source`, by default the run's config.yaml), and how to go on
    with them: from the run's weights in a new run, when the model keeps its shape."""
    a, b = old.to_dict(), new.to_dict()
    changed = [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
    refused = [k for k in changed if k not in SAFE_TO_CHANGE and k != MOVED and not k.startswith("sample.")]
    if refused:
        reshaped = any(k.startswith("model.") and k.removeprefix("model.") not in FREE for k in refused)
        fresh = ("start a new run" if reshaped else f"start a new run from its weights with the change: "
                 f"{new_run_from(run_dir)} and the overrides given here")
        given = [k for k in refused if any(o.startswith(f"{k}=") for o in overrides)]
        # data.path may change (to the same text, moved), but a config file's own is rarely the run's: give it back
        # too, unless the run's own place is gone (then the text did move)
        back = [k for k in refused if k not in given] + [k for k in changed if k == MOVED and not any(
            o.startswith(f"{k}=") for o in overrides) and missing_path(old.data) is None]
        undo = ([f"drop {', '.join(given)} from the overrides"] if given else []) + (
            [_undo(source, run_dir, [(k, value_at(a, k)) for k in back])] if len(given) < len(refused) else [])
        raise ConfigError(f"cannot resume with a changed config: {', '.join(refused)} "
                          f"{'differs' if len(refused) == 1 else 'differ'} from the config the run "
                          f"was trained with; only {', '.join(sorted(SAFE_TO_CHANGE))}, sample.* and {MOVED} (to the "
                          f"same text, moved) may change on resume ({' and '.join(undo)}, or {fresh})")
    return [f"{k}: {_shown(value_at(a, k))} -> {_shown(value_at(b, k))}" for k in changed]


def _undo(source: Path | None, run_dir: Path, keys: list[tuple[str, Any]]) -> str:
    """How to take back the changes a config file made: the run's own config.yaml was edited; a CONFIG given with
    --resume differs where the run was started with overrides too, or it is another config."""
    if source is None or source.resolve() == (run_dir / "config.yaml").resolve():
        return f"undo the edit in {source or 'config.yaml'}"
    again = " ".join(shell_word(f"{k}={v if isinstance(v, str) else _shown(v)}") for k, v in keys)
    return f"leave {shell_word(source)} out (the run's config.yaml holds what it trained with) or give {again} after it"


def _shown(value: Any) -> str:
    """A config value as it is typed (null, true, 0.001, "text"), not as Python prints it (None, True)."""
    return json.dumps(value, ensure_ascii=False)


def check_resume_corpus_path(cfg: Config, run_dir: Path, resume: ckpt.Checkpoint) -> None:
    """A resume whose corpus is not where data.path says is told how to say where it went."""
    gone, before = missing_path(cfg.data), resume.config.data.path
    if gone is not None:
        fix = (f"if the run's text moved, resume with its new place: rnnlm train --resume {shell_word(run_dir)} "
               "data.path=WHERE_IT_IS" if gone == before else
               f"the run read the {cfg.data.dataset} corpus's own file: give data.path=null" if before is None
               else f"give the place the text the run trained on (from {before}) moved to")
        raise RnnlmError(f"data.path={gone}: no such file or directory; {fix}")
    if cfg.data.path != before and resume.train is not None and not resume.train.corpus:
        raise RnnlmError(f"--resume {run_dir}: this checkpoint predates corpus fingerprints, so rnnlm cannot tell "
                         f"whether {cfg.data.path} holds the text it trained on; resume with "
                         f"data.path={shell_word(before)}")


def check_resume_corpus(cfg: Config, run_dir: Path, resume: ckpt.Checkpoint, store: Store) -> None:
    """A resume continues over the text the run was trained on (`store`, prepared from cfg.data), or not at all."""
    if resume.other_text_at(cfg.data, store.fingerprint):
        raise RnnlmError(f"--resume {run_dir}: data.path={cfg.data.path} does not hold the text the run trained on "
                         f"(from {resume.config.data.path}): a moved corpus must hold the same text, unchanged; give "
                         "the place it moved to")
    if resume.corpus_changed(store.fingerprint):
        raise RnnlmError(f"--resume {run_dir}: the {store.name} corpus has changed since this run trained on it (files "
                         "edited, added or removed), so the position saved in it means nothing now; put the files "
                         f"back, or start a new run from this one's weights: {new_run_from(run_dir)}")


def discard_if_empty(run_dir: Path, made_out: bool, made: tuple[int, int] | None) -> None:
    """Remove the run folder this process created (`made`: its `folder_identity`, not another made under its name
    since), when the run failed before writing a checkpoint: so that a failed start does not keep the name (nothing
    in it was worth keeping); and its --out folder, when this run made it and nothing else is in it."""
    if folder_identity(run_dir) == made and not any(run_dir.glob("*.pt")):
        shutil.rmtree(run_dir, ignore_errors=True)
        if made_out:
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()


def open_run(run_dir: Path, cfg: Config, step: int, changes: list[str] | None, evaluated: bool = True) -> None:
    """Make `run_dir` ready for a run at `step` (`evaluated` there, or to be): created and writable, cleared of what a
    killed writer left and of what was written after the checkpoint (a future this run will write again), with its
    config.yaml; a resume (`changes` not None) is logged with the keys it changed."""
    over = changes is None and (run_dir / "config.yaml").exists()
    _make_run_dir(run_dir, resumed=changes is not None)
    say(f"run directory: {run_dir}" + (" (stopped before its first checkpoint: starting it over)" if over else ""))
    for stale in remove_stale_temp_files(run_dir):
        say(f"removed {stale.name}, left by a process killed while writing it")
    truncate_metrics(run_dir / METRICS, step if changes is not None else -1, evaluated)  # starting over: keep nothing
    for numbered_step, path in ckpt.numbered_checkpoints(run_dir):
        if numbered_step > step:
            path.unlink()
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    if changes is not None:
        (run_dir / STATUS).unlink(missing_ok=True)  # how the session before ended, not how one killed in this stands
        line = f"resumed at step {step}" + (f" with {'; '.join(changes)}" if changes else "")
        with open(run_dir / RESUME_LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        say(line.replace("resumed", "resuming", 1))


def _make_run_dir(run_dir: Path, resumed: bool = False) -> None:
    """Create the run directory and prove it takes files, before any training time is spent."""
    probe = run_dir / f".write-test-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fix = (f"make it writable, or start a new run from its weights elsewhere: {new_run_from(run_dir, out='FOLDER')}"
               if resumed else "choose another folder with --out (or --name)")
        raise RnnlmError(f"cannot write the run directory {run_dir}: {e.strerror or e}; {fix}") from None


def folder_beside(run_dir: Path) -> Path:
    """The folder holding `run_dir`, where a new run from it goes: not `.` for a run given as `.` (inside it)."""
    return run_dir.parent if run_dir.name not in ("", "..") else run_dir.absolute().parent


def new_run_from(run_dir: Path, weights: Path | None = None, out: str | Path | None = None) -> str:
    """The command that starts a new run with `run_dir`'s config from its weights (`weights`: one of its checkpoints,
    else its best), into the folder beside it (or `out`)."""
    words = (run_dir / "config.yaml", weights or run_dir, out or folder_beside(run_dir))
    return "rnnlm train {} --init-from {} --out {}".format(*map(shell_word, words))


def folder_identity(folder: Path) -> tuple[int, int] | None:
    """Which folder `folder` is now (device and inode): another one made under its name after it was removed is
    another; None when there is none."""
    try:
        found = os.stat(folder)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def record_status(run_dir: Path, stopped: str, step: int) -> None:
    with atomic_file(run_dir / STATUS, encoding="utf-8") as f:
        f.write(json.dumps({"stopped": stopped, "step": step}) + "\n")


@dataclass
class RunInfo:
    """One line of `rnnlm runs`."""

    name: str
    path: str
    model: str
    """The cell and its size, e.g. lstm 2x512."""
    dataset: str
    corpus: str
    """The dataset, and the file, folder or pattern data.path names: e.g. text notes.txt."""
    init_from: str | None
    """The checkpoint a fine-tuned run started from."""
    steps: int
    best_val: float | None
    best_bpc: float | None
    seconds: float
    """Wall-clock seconds of training, evaluations included, over every session."""
    status: str
    """finished (a budget ended it), stopped (Ctrl-C, killed, failed), running (a process holds its lock), or what
    a resume lacks: no last.pt, no checkpoints."""
    modified: float


def list_runs(folder: Path) -> list[RunInfo]:
    """The run directories in `folder` (or `folder` itself, a run), the most recently active first."""
    if not folder.is_dir():
        raise RnnlmError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}; give the folder that "
                         "holds the runs (train's --out, checkpoints by default)")
    found = [folder.resolve()] if is_run(folder) else [d for d in folder.iterdir() if is_run(d)]
    return sorted((r for r in map(_run_info, found) if r is not None), key=lambda r: -r.modified)


def _run_info(run_dir: Path) -> RunInfo | None:
    """A run's line, from what it wrote; whatever a hand edit damaged is '?' or left out, the run still listed (a
    resume names what is wrong with it)."""
    try:
        cfg = read_yaml(run_dir / "config.yaml")  # as training reads it (YAML 1.2 integers)
    except FileNotFoundError:  # gone since the folder was listed
        return None
    except (OSError, ConfigError):
        cfg = None
    model, data = _section(cfg, "model"), _section(cfg, "data")
    shape = f"{model.get('cell', '?')} {model.get('num_layers', '?')}x{model.get('hidden_size', '?')}" if model else "?"
    running = holder(run_dir) is not None
    saved = None if running else ckpt.saved_progress(run_dir / ckpt.LAST)
    records = _records(run_dir, running, saved)
    evals = [r for r in records if _number(r.get("val_loss"))]
    best = min(evals, key=lambda r: r["val_loss"]) if evals else None
    logged = max((r["step"] for r in records), default=0)
    steps, status = (logged, "running") if running else _progress(run_dir, logged)
    seconds = max([r["elapsed"] for r in records if _number(r.get("elapsed"))] + [saved[1] if saved else 0.0])
    modified = max((_mtime(p) for p in run_dir.iterdir()), default=0.0)
    return RunInfo(run_dir.name, str(run_dir), shape, str(data.get("dataset", "?")), _corpus(data),
                   _init_from(cfg), steps, best["val_loss"] if best else None,
                   best["bpc"] if best and _number(best.get("bpc")) else None, seconds, status, modified)


def _records(run_dir: Path, running: bool, saved: tuple[int, float] | None) -> list[dict[str, Any]]:
    """The metrics records of the steps a resume continues from (each with an integer step): up to the last
    checkpoint of a run killed outright, none for a run stopped before its first (a resume starts it over)."""
    records = _stepped(run_dir)
    if running:
        return records
    if saved is not None:
        return [r for r in records if r["step"] <= saved[0]]
    return records if any(run_dir.glob("*.pt")) or checkpoints_removed(run_dir) else []


def _section(cfg: Any, name: str) -> dict[str, Any]:
    section = cfg.get(name) if isinstance(cfg, dict) else None
    return section if isinstance(section, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _corpus(data: dict[str, Any]) -> str:
    """What `rnnlm runs` calls a run's corpus: its dataset, and the last part of data.path (from the folder a
    pattern starts in): runs on different text files are told apart; `(pad)` for records read each alone, whose
    validation loss is makemore's per record, where a packed run's carries the state from record to record."""
    dataset, path = str(data.get("dataset", "?")), data.get("path")
    padded = " (pad)" if data.get("records") == "pad" else ""
    if not isinstance(path, str) or not path:
        return dataset + padded
    parts = Path(path).parts
    pattern = next((k for k, part in enumerate(parts) if is_glob(part)), None)
    return f"{dataset} {Path(*parts[max(pattern - 1, 0):]) if pattern is not None else Path(path).name}{padded}"


def _init_from(cfg: Any) -> str | None:
    start = _section(cfg, "train").get("init_from")
    return start if isinstance(start, str) and start else None


def _mtime(path: Path) -> float:
    """0 for a file gone since the folder was listed (a running run renames and prunes its checkpoints)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _progress(run_dir: Path, logged: int) -> tuple[int, str]:
    """The steps a resume of a run not running would continue from and its status (finished, stopped), from the
    steps its metrics logged up to its last checkpoint: none when nothing was saved (a resume starts over), the stop's
    own step when it was saved after the last record. A run whose checkpoints were removed is said so: the steps are
    those it trained, which no resume continues (it is refused)."""
    if not any(run_dir.glob("*.pt")):
        return (logged, "no checkpoints") if checkpoints_removed(run_dir) else (0, "stopped")
    if not (run_dir / ckpt.LAST).exists():
        return logged, f"no {ckpt.LAST}"
    ended = _ended(run_dir)
    if not ended:
        return logged, "stopped"
    saved = ended.get("step", 0)
    steps = max(logged, saved)
    return steps, "finished" if ended.get("stopped") != "interrupted" and saved == steps else "stopped"
