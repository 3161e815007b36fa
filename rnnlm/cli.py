"""The `rnnlm` command: parse, build a config, call one library function, report.

Mistakes the user can fix arrive as `RnnlmError` and leave as one short message on stderr with exit
status 2; anything else is a bug and keeps its traceback. RNNLM_DEBUG=1 (or --debug) shows the traceback
behind a user mistake's message too.

torch is imported inside the commands, so `rnnlm --help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TextIO

import typer

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # an older typer, on the click package
    from click import exceptions as _click_errors

    ClickException, UsageError = _click_errors.ClickException, _click_errors.UsageError
    NoArgsIsHelpError = getattr(_click_errors, "NoArgsIsHelpError", ())  # () catches nothing

from rnnlm.errors import AlreadySaid, RnnlmError, said_once_per_machine, shell_word
from rnnlm.rundir import OUT

if TYPE_CHECKING:
    import torch

    from rnnlm.distributed import Dist
    from rnnlm.train import RunResult

# Typer prints each argument's Python type beside its name in --help (`KEY=VALUE... <list[str]>`); the metavars
# below already say what to give, so arguments show those alone.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
# and its usage line braces required arguments (`rnnlm sample [OPTIONS] {RUN}`): the usual form is RUN and [RUN].
if hasattr(typer.core.TyperArgument, "_usage_display_name"):
    typer.core.TyperArgument._usage_display_name = lambda self: (  # type: ignore[method-assign]
        (self.display_name_raw if self.required else f"[{self.display_name_raw}]") + ("..." if self.nargs != 1 else ""))

app = typer.Typer(
    name="rnnlm",
    help="Train character-level recurrent language models, sample from them and measure them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    rich_markup_mode=None,  # help texts say "[default: ...]", which rich markup would swallow as a tag
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunArg = Annotated[Path, typer.Argument(help="A run directory (its best checkpoint is used) or a checkpoint file.",
                                        show_default=False, metavar="RUN")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the model runs: auto (CUDA when present), cpu, cuda or "
                                        "cuda:N.", metavar="[auto|cpu|cuda|cuda:N]")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, show_default=False, help="CPU threads to "
                                                   "compute with [default: one per core other processes leave "
                                                   "free, looked at as it runs].")]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="Config overrides as section.key=value, e.g. train.lr=0.001 model.hidden_size=256.", show_default=False,
    metavar="KEY=VALUE")]


def _version(value: bool) -> None:
    if value:
        from rnnlm import __version__

        typer.echo(f"rnnlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show the Python traceback behind any error, a "
                                              "user mistake's message included.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print rnnlm's version and exit.", callback=_version,
                                                is_eager=True)] = False) -> None:
    if debug:
        os.environ["RNNLM_DEBUG"] = "1"


@app.command(short_help="Train a model into a run directory.")
def train(
    config: Annotated[Optional[str], typer.Argument(help="YAML config, e.g. configs/tiny.yaml. With --resume, leave it "
                                                     "out (the run's config.yaml is read); given, it is read instead, "
                                                     "and the overrides the run started with are lost unless given "
                                                     "again.",
                                                     show_default=False, metavar="CONFIG")] = None,
    overrides: OverridesArg = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder that holds run directories [default: "
                                                "checkpoints].", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run directory name [default: config name + time].",
                                                show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run directory from its last checkpoint.",
                                                   show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept [default: data/ or $RNNLM_DATA_DIR].",
                                                     show_default=False)] = None,
    mirror: Annotated[Optional[Path], typer.Option("--mirror", help="A folder laid out like the data root, tried before "
                                                   "the network [default: $RNNLM_DATA_MIRROR].", show_default=False)] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from this trained model's weights (a "
                                                      "run directory or checkpoint): fine-tuning; the same as "
                                                      "train.init_from=PATH.", show_default=False,
                                                      metavar="RUN")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a model; writes config.yaml, metrics.jsonl, best.pt and last.pt into a run directory.

    Ctrl-C (or SIGTERM) saves last.pt and prints the command that resumes. Under
    `torchrun --nproc_per_node=N -m rnnlm train ...` the N processes train one model data-parallel."""
    from rnnlm.console import outliving_the_reader

    named = out is not None or name is not None
    with said_once_per_machine():
        config_file, args = _train_args(config, list(overrides or []), resume, init_from, named, out)
    with outliving_the_reader():
        result, dist = _train_run(config_file, args, resume, out or OUT, name, data_dir, mirror, quiet)
        if dist.is_main:
            _report(result, dist, data_dir)
    if result.stopped == "interrupted":
        raise typer.Exit(128 + int(result.signal or 2))


def _train_run(config_file: Optional[Path], args: list[str], resume: Optional[Path], out: Path, name: Optional[str],
               data_dir: Optional[Path], mirror: Optional[Path], quiet: bool) -> tuple["RunResult", "Dist"]:
    """`train` once its command line is read: the run's result and this process's place in the job."""
    from rnnlm.data import DataRoot
    from rnnlm.distributed import setup
    from rnnlm.runs import RunLock, discard_if_empty, folder_identity, new_run_dir, require_run_dir
    from rnnlm.runtime import keep_freed_memory, use_threads
    from rnnlm.train import train as run_training

    with contextlib.ExitStack() as stack:
        if "RANK" not in os.environ:  # a kill while the corpus is prepared unwinds (training's own stop takes over)
            stack.enter_context(_termination_unwinds())
        if resume is not None and os.environ.get("RANK", "0") == "0":  # rank 0 (or a lone process) writes the run
            require_run_dir(resume)  # before the lock, which would leave its file in any folder
            stack.enter_context(RunLock(resume))
        with said_once_per_machine():
            previous, cfg = _run_config(config_file, args, resume)
            root = DataRoot.resolve(data_dir or recorded_root(previous), mirror)  # a resume reads where the run did
        with setup(cfg.train.device) as dist:
            if dist.device.type == "cpu":
                keep_freed_memory()
                use_threads(cfg.train.threads)
            made_out = not out.exists()
            stem = _stem(config_file) if config_file is not None else ""  # a new run always has its CONFIG
            run_dir = resume if resume is not None else new_run_dir(out, stem, name, dist)
            made = folder_identity(run_dir)
            if resume is None and dist.is_main:
                stack.enter_context(RunLock(run_dir))
            try:
                return run_training(cfg, run_dir, resume=previous, root=root, progress=not quiet, dist=dist), dist
            except BaseException as e:
                if resume is None and dist.is_main:
                    discard_if_empty(run_dir, made_out, made)
                if dist.is_main and isinstance(e, (KeyboardInterrupt, SystemExit)):
                    _stopped_at_once(run_dir)
                from rnnlm.checkpoint import CheckpointWriteError

                if dist.is_main and isinstance(e, CheckpointWriteError):
                    raise RnnlmError(f"{e}; {_after_a_failed_save(run_dir)}") from None
                raise


def _after_a_failed_save(run_dir: Path) -> str:
    """What a run whose checkpoint could not be written left: one to resume from once the disk is mended, or none,
    and then no folder (a failed start keeps no name)."""
    from rnnlm import checkpoint as ckpt

    if (run_dir / ckpt.LAST).exists():
        return f"once that is mended, resume with: rnnlm train --resume {shell_word(run_dir)}"
    return f"nothing was saved, and {run_dir} was removed" if not run_dir.exists() else "nothing was saved"


def _stopped_at_once(run_dir: Path) -> None:
    """What a stop that could not wait for the end of a step left (a second Ctrl-C, a signal while the corpus was
    prepared): it said nothing, as if the run had ended well."""
    from rnnlm import checkpoint as ckpt

    if (run_dir / ckpt.LAST).exists():
        typer.echo(f"stopped at once: the steps since the last checkpoint are lost; resume with: rnnlm train --resume "
                   f"{shell_word(run_dir)}", err=True)
    elif any(run_dir.glob("*.pt")):  # its last.pt removed, or a run saved by an older rnnlm (best.pt first)
        from rnnlm.runs import new_run_from

        typer.echo(f"stopped at once, without a last.pt to resume from; its weights can start a new run: "
                   f"{new_run_from(run_dir)}", err=True)
    else:
        typer.echo("stopped before the run saved anything" + ("" if run_dir.exists() else f" ({run_dir} removed)"),
                   err=True)


def _stem(config_file: Path) -> str:
    """What a new run is named after: its config file's name, or, for a run's config.yaml (a new run from another's
    weights: `rnnlm train RUN/config.yaml --init-from RUN`), the run's name without its start time."""
    folder = config_file.resolve().parent
    if config_file.name == "config.yaml" and ((folder / "last.pt").exists() or (folder / "metrics.jsonl").exists()):
        return re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", folder.name) or config_file.stem
    return config_file.stem


def _train_args(config_arg: Optional[str], args: list[str], resume: Optional[Path], init_from: Optional[Path],
                named: bool, out: Optional[Path]) -> tuple[Optional[Path], list[str]]:
    """The config file and the overrides `train` was given, its command line's shorthands spelled out; `named`:
    whether --out or --name was given."""
    config, args = _config_and_overrides(config_arg, args)  # `rnnlm train --resume RUN train.max_steps=2000`
    if resume is None and config is None:
        raise RnnlmError(_no_config(args, init_from))
    from rnnlm.runs import is_run, new_run_from

    if config is not None and config.suffix == ".pt" and config.is_file():  # `rnnlm train RUN/best.pt`
        run = config.parent
        raise RnnlmError(f"{config} is a checkpoint, not a config: to start a new run from its weights, "
                         + (_command_meant({config_arg: [str(run / "config.yaml"), "--init-from", str(config)]}, run)
                            if (run / "config.yaml").is_file() else
                            f"give a config and --init-from {shell_word(config)}")
                         + (f"; to continue its run: rnnlm train --resume {shell_word(run)}" if is_run(run) else ""))
    if config is not None and config.is_dir() and (config / "config.yaml").is_file():  # `rnnlm train RUN`
        raise RnnlmError(f"{config} is a folder: for a new run from its config, give {config / 'config.yaml'}"
                         + (f"; to continue the run in it: rnnlm train --resume {shell_word(config)}"
                            if is_run(config) else ""))
    if resume is not None and named:  # nanoGPT's init_from=resume writes to out_dir: here that would be ignored
        raise RnnlmError(f"--resume continues {resume} where it is; --out and --name name a new run: drop them, or "
                         f"start a new run from its weights: {new_run_from(resume, out=out)}")
    if init_from is not None:
        if resume is not None:
            raise RnnlmError("--init-from starts a new run from a trained model; --resume continues a run: give one")
        given = next((a for a in args if a.startswith("train.init_from=")), None)
        if given is not None:  # one of the two would be dropped unsaid
            raise RnnlmError(f"--init-from {init_from} and {given} both name the weights to start from: give one")
        try:
            args.append(f"train.init_from={ckpt_path(init_from)}")
        except RnnlmError as e:
            raise RnnlmError(f"--init-from {e}") from None
    return config, args


def _no_config(args: list[str], init_from: Optional[Path]) -> str:
    """What to say to `rnnlm train` given neither a config nor --resume: the config placed after the overrides goes
    first; --init-from alone takes its run's config."""
    placed = next((a for a in args if "=" not in a and a.endswith((".yaml", ".yml"))), None)
    if placed is not None:
        return f"the config goes before the overrides: {_command_meant({placed: []}, first=placed)}"
    run = None if init_from is None else init_from if init_from.is_dir() else init_from.parent
    if run is not None and (run / "config.yaml").is_file():
        return f"--init-from takes its model from a config too; the run's own: " \
               f"{_command_meant({}, run, first=str(run / 'config.yaml'))}"
    return "give a config file (e.g. rnnlm train configs/tiny.yaml) or --resume RUN_DIR"


def _command_meant(replaced: dict[str, list[str]], run: Optional[Path] = None, first: Optional[str] = None) -> str:
    """The command line as typed (every option and override kept), with some words `replaced` and the word `first`
    right after the command's name; a new run from `run` goes beside it unless --out says where."""
    from rnnlm.runs import folder_beside

    words = [w for word in sys.argv[2:] for w in replaced.get(word, [word])]
    if run is not None and not any(w == "--out" or w.startswith("--out=") for w in words):
        words += ["--out", str(folder_beside(run))]
    return " ".join(shell_word(w) for w in ["rnnlm", sys.argv[1], *([first] if first else []), *words])


def _config_and_overrides(config: Optional[str], args: list[str]) -> tuple[Optional[Path], list[str]]:
    """The CONFIG argument as a file, or as the first override when it is one (no file, just overrides; its value
    kept as typed, `sample.prime=a//b` and all)."""
    if config is not None and re.match(r"[A-Za-z_]+\.[A-Za-z_]+=", config) and not Path(config).exists():
        return None, [config, *args]
    if config is not None and re.match(r"[A-Za-z_]+=", config) and not Path(config).exists():
        from rnnlm.config import as_override

        meant = as_override(config)  # nanoGPT's `max_iters=100`: a key without its section
        if meant:
            raise RnnlmError(f"{config}: write a config key with its section: {meant}")
    return (None if config is None else Path(config)), args


def _report(result: "RunResult", dist: "Dist", data_dir: Optional[Path]) -> None:
    """How the run ended, and what to run next."""
    from rnnlm import checkpoint as ckpt

    run_dir = result.run_dir
    summary = f"step {result.step}: " + (f"val loss {result.last_val:.4f} nats/char (best {result.best_val:.4f})"
                                         if math.isfinite(result.last_val) else "no validation loss (nothing to score)"
                                         if math.isnan(result.last_val) else "not evaluated yet")
    if result.stopped == "interrupted":
        launcher = ("rnnlm" if not dist.enabled
                    else f"torchrun --standalone --nproc_per_node={dist.world_size} -m rnnlm"
                    if dist.local_world_size == dist.world_size else "torchrun (as before, on every machine) -m rnnlm")
        where = f" --data-dir {shell_word(data_dir)}" if data_dir is not None else ""
        typer.echo(f"stopped at {summary}; saved {run_dir / ckpt.LAST}\n"
                   f"resume with: {launcher} train --resume {shell_word(run_dir)}{where}", err=True)
    elif result.nothing_to_do:
        budget = {"max_steps": f"train.max_steps={2 * result.step}", "max_epochs": "train.max_epochs=N",
                  "max_time": f"train.max_time={2 * math.ceil(result.elapsed)} (seconds over every session: "
                              f"{result.elapsed:.0f} spent)", "patience": "train.patience=N"}[result.stopped]
        unsaved = "; ".join(result.unsaved)
        typer.echo(f"nothing to do: the run is at {summary} and its {result.stopped.replace('_', ' ')} is spent; "
                   f"give it more with: rnnlm train --resume {shell_word(run_dir)} {budget}"
                   + (f"\nthe changes given were not kept either ({unsaved})" if unsaved else "")
                   + ("; rnnlm sample takes its settings as options (--temp, --length, --prime, --top-k, --top-p)"
                      if any(c.startswith("sample.") for c in result.unsaved) else ""), err=True)
    else:
        typer.echo(f"done at {summary} ({result.stopped.replace('_', ' ')} reached)", err=True)
        typer.echo(f"sample with: rnnlm sample {shell_word(run_dir)}", err=True)


def ckpt_path(path: Path) -> str:
    """A checkpoint given on the command line, as the absolute path a run records."""
    from rnnlm import checkpoint as ckpt

    return str(ckpt.resolve(path).resolve())


def _run_config(config: Optional[Path], args: list[str], resume: Optional[Path]) -> tuple[Any, Any]:
    """The checkpoint a resume starts from (None for a new run, or a run stopped before its first checkpoint) and
    the config to train with: CONFIG and overrides; for a resume, the run's config.yaml with its edits (each then
    checked like an override), else its checkpoint's."""
    from rnnlm.config import from_dict, load_config, merge_overrides, read_yaml, with_absolute_paths
    from rnnlm.data import check_relative_path
    from rnnlm.runs import check_resume_config, resume_point

    if resume is None:
        cfg = load_config(config, args)
        if config is not None:
            check_relative_path(cfg.data, config)
        return None, with_absolute_paths(cfg)
    previous = resume_point(resume)
    edited = resume / "config.yaml" if (resume / "config.yaml").is_file() else None
    if edited is not None and previous is not None and not read_yaml(edited):  # emptied: all defaults, unmeant
        if os.environ.get("RANK", "0") == "0":  # every torchrun process reads it; one says so
            warnings.warn(f"{edited} is empty: resuming with the config the checkpoint holds (written back to it)")
        edited = None
    source = config if config is not None else edited
    if source is not None or previous is None:  # paths as a new run records them: a relative one is the same file
        cfg = with_absolute_paths(load_config(source, args))
    else:
        cfg = with_absolute_paths(from_dict(merge_overrides(previous.config.to_dict(), args)))
    if previous is not None:  # here, where it is known whether a change came from an override or a file
        check_resume_config(previous.config, cfg, resume, source, args)
    return previous, cfg


@app.command(short_help="Generate text from a trained model.")
def sample(
    run: RunArg,
    temp: Annotated[Optional[float], typer.Option("--temp", "-t", help="Temperature; 0 always takes the most likely character "
                                                  "[default: the run's sample.temperature].", show_default=False)] = None,
    length: Annotated[Optional[int], typer.Option("--length", "-n", help="Characters to generate per sample (for records: "
                                                  "the most a record may add to the prime) [default: sample.length].",
                                                  show_default=False)] = None,
    prime: Annotated[Optional[str], typer.Option("--prime", "-p", help="Text the model reads before it writes; may be empty "
                                                 "[default: sample.prime].", show_default=False)] = None,
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime from this UTF-8 file (- for "
                                                       "standard input).", show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Prime characters the model never saw are an error, "
                                         "not a warning.")] = False,
    zero_state: Annotated[bool, typer.Option("--zero-state", help="Read the prime from the zero state, as char-rnn "
                                             "does [default for train.batching=sequential: from the state training "
                                             "reached, which a model of few epochs reads better].")] = False,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Draw only among the k most likely characters; 0 "
                                                 "for all [default: sample.top_k].", show_default=False)] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Draw only from the smallest set of characters whose "
                                                   "probability reaches p [default: sample.top_p].",
                                                   show_default=False)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-N", help="Samples generated together, as one batch.")] = 1,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed, same text (sample i uses seed + i).",
                                                show_default=False)] = None,
    unique: Annotated[bool, typer.Option("--unique", help="Records: drop repeated records.")] = False,
    novel: Annotated[bool, typer.Option("--novel", help="Records: keep only records the training split does not hold.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the samples to this file instead of "
                                                "stdout (- is stdout); it appears (or replaces one) when sampling "
                                                "ends.",
                                                show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept, to count novel records "
                                                     "[default: where the run trained from].",
                                                     show_default=False)] = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Where the run's data.path is now, if its "
                                                      "files moved since training (the same text, unchanged), to count "
                                                      "novel records.", show_default=False)] = None,
    device: DeviceOpt = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, show_default=False, help="CPU threads "
                                                   "[default: 1 for up to 8 samples, a step too small to share "
                                                   "well on a busy machine; else one per core].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Use a checkpoint whose weights hold NaN or infinite values "
                                        "(with a warning) instead of refusing it.")] = False,
) -> None:
    """Generate text from a trained model, streaming it to stdout; records corpora print one record per line."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.sample import read_prime, sample_checkpoint, sampling_threads

    target = device_for(device, threads or sampling_threads(num_samples))
    point = ckpt.load(run)
    opts = _sample_options(point.config.sample, length, temp, top_k, top_p, num_samples, seed)
    primed = read_prime(point.vocab, prime, prime_file, strict, default=point.config.sample.prime,
                        records=point.records)
    if primed.warning():
        typer.echo(f"warning: {primed.warning()}", err=True)
    to_stdout = out is None or str(out) == "-"  # `--out -`: standard output, as without --out
    name_seed = seed is None and opts.temperature != 0  # a seed worth naming: --temp 0 draws nothing at random
    prime_read = prime_file if prime_file is not None and str(prime_file) != "-" else None
    trained_on = () if to_stdout else _trained_on(point, out, data_dir, data_path)
    with output(None if to_stdout else out, (point.path, prime_read), trained_on,
                _corpus_path(point, data_path)) as stream:
        report = sample_checkpoint(point, opts, primed.text, stream, unique=unique, novel=novel,
                                   root=run_data(point, data_dir), device=target, force=force,
                                   on_start=_sampling_start(name_seed, to_stdout), moved_to=data_path,
                                   zero_state=zero_state)
    if report.summary():
        typer.echo(report.summary(), err=True)
    if name_seed and not to_stdout:  # once the file is in place
        _name_seed(report.seed)


def _sample_options(defaults: Any, length: Optional[int], temp: Optional[float], top_k: Optional[int],
                    top_p: Optional[float], num_samples: int, seed: Optional[int]) -> Any:
    """`sample`'s options, each given or else the run's `sample` config (`--top-k 0` turns the run's k off)."""
    from rnnlm.sample import SampleOptions

    return SampleOptions(length=length if length is not None else defaults.length,
                         temperature=temp if temp is not None else defaults.temperature,
                         top_k=(top_k or None) if top_k is not None else defaults.top_k,
                         top_p=top_p if top_p is not None else defaults.top_p, num_samples=num_samples, seed=seed)


def _sampling_start(name_seed: bool, to_stdout: bool) -> Callable[[int], None]:
    """What `sample` does once the model and the corpus are read, when from there on it only writes: on standard
    output, end with a reader that stops early (| head), and name the seed drawn first (`name_seed`), so that the
    sample can be drawn again even then."""
    def start(seed: int) -> None:
        if to_stdout:
            _end_with_the_reader()
            if name_seed:
                _name_seed(seed)
    return start


def _name_seed(drawn: int) -> None:
    typer.echo(f"seed {drawn} (the same samples again: --seed {drawn})", err=True)


@app.command("eval", short_help="Measure a model on held-out text: perplexity, bits per character.")
def evaluate(
    run: RunArg,
    perplexity: Annotated[bool, typer.Option("--perplexity", help="Lead the report with perplexity (nll and bits "
                                             "per character follow; every measure is always reported).")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="A split of the run's corpus [default: val].",
                                                 show_default=False, metavar="[train|val|test]")] = None,
    file: Annotated[Optional[list[Path]], typer.Option("--file", metavar="FILE", help="Score this UTF-8 file instead "
                                                       "of a split (- for standard input; a folder or glob as "
                                                       "data.path reads it); repeat for several (one record per line "
                                                       "of one file for a records model).",
                                                       show_default=False)] = None,
    context: Annotated[Optional[int], typer.Option("--context", help="Score each character after at most N characters of "
                                                   "history, each window from the state sampling starts "
                                                   "from (as a block-size-N model would) "
                                                   "[default: the state carried over the whole text].",
                                                   show_default=False)] = None,
    streams: Annotated[Optional[int], typer.Option("--streams", help="How a stream is read: 1 exactly as one stream, N "
                                                   "in N carried streams (one batched pass, for long texts) "
                                                   "[default: 1 up to 1,048,576 characters, else 128].",
                                                   show_default=False)] = None,
    compare_compressors: Annotated[bool, typer.Option("--compare-compressors", help="Also print the bits per character "
                                                      "of gzip -9, bz2 -9 and xz -9e on the same text.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept [default: where the run "
                                                     "trained from].", show_default=False)] = None,
    data_path: Annotated[Optional[Path], typer.Option("--data-path", help="Where the run's data.path is now, if its "
                                                      "files moved since training (the same text, unchanged).",
                                                      show_default=False)] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Use a checkpoint whose weights hold NaN or infinite values "
                                        "(with a warning) instead of refusing it.")] = False,
) -> None:
    """Measure how well a model predicts held-out text: nats and bits per character, perplexity."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.evaluate import evaluate_sources
    from rnnlm.texts import file_source, split_source

    if file and split is not None:
        raise RnnlmError("give --split or --file, not both")
    if file and data_path is not None:
        raise RnnlmError("--data-path says where the run's corpus moved, for scoring its splits; --file scores a file: "
                         "give one")
    target = device_for(device, threads)
    point = ckpt.load(run)
    with _termination_unwinds():  # a kill while a --file is prepared removes its temporary store, as Ctrl-C does
        sources = ([file_source(f, point) for f in file] if file
                   else [split_source(point, split or "val", run_data(point, data_dir), progress=True,
                                                moved_to=data_path)])
    result = evaluate_sources(point, sources, context=context, compressors=compare_compressors, device=target,
                              streams=streams, progress=True, force=force)
    for warning in result.warnings():
        typer.echo(f"warning: {warning}", err=True)
    _end_with_the_reader()
    typer.echo(json.dumps(result.as_dict()) if as_json else "\n".join(result.lines(perplexity_first=perplexity)))


@app.command("runs", short_help="List the runs in a folder: model, steps, best validation loss, status.")
def list_runs(
    folder: Annotated[Path, typer.Argument(help="The folder that holds run directories.", metavar="FOLDER")]
    = OUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per run, for scripts.")] = False,
) -> None:
    """List the runs in FOLDER, the most recently active first: name, model, corpus, steps, best validation loss
    (nats and bits per character), training time and status (finished, stopped, running)."""
    import dataclasses

    from rnnlm.console import clock
    from rnnlm.runs import list_runs as runs_in

    _end_with_the_reader()
    runs = runs_in(folder)
    if as_json:
        for r in runs:
            typer.echo(json.dumps(dataclasses.asdict(r)))
        return
    if not runs:
        typer.echo(f"no runs in {folder}", err=True)
        return
    rows = [("run", "model", "corpus", "steps", "best val", "bpc", "time", "status")] + [
        (r.name, r.model + (f" from {_run_name(r.init_from)}" if r.init_from else ""), r.corpus, f"{r.steps:,}",
         "-" if r.best_val is None else f"{r.best_val:.4f}",
         "-" if r.best_bpc is None else f"{r.best_bpc:.4f}", clock(r.seconds), r.status) for r in runs]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) if k < 3 or k == 7 else cell.rjust(w)
                             for k, (cell, w) in enumerate(zip(row, widths))).rstrip())


def _run_name(checkpoint: str) -> str:
    """A checkpoint named by its run (RUN/best.pt), or by its file when it is no run's."""
    from rnnlm.rundir import is_run

    path = Path(checkpoint)
    return path.parent.name if is_run(path.parent) else path.name


@app.command("config", short_help="Print a config fully resolved, every key with its value.")
def show_config(
    config: Annotated[Optional[str], typer.Argument(help="YAML config, or a run directory (its config.yaml) "
                                                     "[default: none, the defaults].",
                                                     show_default=False, metavar="CONFIG")] = None,
    overrides: OverridesArg = None,
) -> None:
    """Print the config a run of CONFIG with these overrides would use, as YAML: every key, defaults included, as
    `rnnlm train` writes it to the run's config.yaml. Nothing is trained."""
    from rnnlm.config import inert_settings, load_config, with_absolute_paths
    from rnnlm.data import get_loader

    _end_with_the_reader()
    config_file, args = _config_and_overrides(config, list(overrides or []))  # `rnnlm config train.lr=0.01`
    if config_file is not None and (config_file / "config.yaml").is_file():  # a run: the config it trains with
        config_file = config_file / "config.yaml"
    cfg = load_config(config_file, args)
    get_loader(cfg.data.dataset)  # a corpus name that is none is refused here as `train` refuses it
    for warning in inert_settings(cfg):  # on stderr: the YAML on stdout stays a config to save
        typer.echo(warning, err=True)
    typer.echo(with_absolute_paths(cfg).to_yaml(), nl=False)


@app.command(short_help="Write a web page of how each neuron fires on a text.")
def viz(
    run: RunArg,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="UTF-8 text for the model to read (- for "
                                                 "standard input).",
                                                 show_default=False)] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="The text itself, instead of --file.",
                                                show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("viz.html"),
    neuron: Annotated[Optional[str], typer.Option("--neuron", help="The neuron shown first: LAYER:INDEX (hidden state) "
                                                  "or LAYER:INDEX:c (LSTM cell state), counted from 0; by default "
                                                  "the top of the ranked list.", show_default=False)] = None,
    chars: Annotated[int, typer.Option("--chars", help="Read at most this many characters of the text.")] = 3000,
    force: Annotated[bool, typer.Option("--force", help="Use a checkpoint whose weights hold NaN or infinite values "
                                        "(with a warning) instead of refusing it.")] = False,
) -> None:
    """Write a web page showing how each neuron fires at each character of a text, and what the model predicts next."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.data.text import read_utf8, typed_text
    from rnnlm.viz import page_for_checkpoint
    from rnnlm.vocab import listed

    if (file is None) == (text is None):
        raise RnnlmError("give the text to read with --file FILE or --text TEXT (one of the two)")
    point = ckpt.load(run)
    # --out refused before the work, and a stop during it said to leave the file as it was
    with output(out, (point.path, file), _trained_on(point, out, None, None), _corpus_path(point, None)) as stream:
        # Of a file, no more than the page shows (a character is at most 4 bytes, a byte-order mark 3 more), and
        # one character beyond, so that the page says it was cut.
        if file is not None:
            source = read_utf8(file, 4 * (max(chars, 1) + 1) + 3)
        else:
            source = typed_text(text, "--text", "the text in a UTF-8 file with --file")
        page = page_for_checkpoint(point, source, neuron=neuron, chars=chars, force=force)
        if page.trace.unknown:
            typer.echo(f"warning: characters the model never saw, read as <unk>: {listed(page.trace.unknown)}",
                       err=True)
        stream.write(page.html)
    cut = f" (the first {chars:,}; --chars for more)" if page.truncated else ""
    count = len(page.trace.text)
    typer.echo(f"wrote {out}: {count:,} character{'s' if count != 1 else ''}{cut}, showing neuron {page.neuron}",
               err=True)
    for line in page.best_matches():
        typer.echo(f"  {line}", err=True)


@app.command(short_help="Draw training and validation curves of runs.")
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or their metrics.jsonl files).", show_default=False,
                                               metavar="RUN")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write; the suffix picks the format (.png, .svg, .pdf).")]
    = Path("curves.png"),
    log_y: Annotated[bool, typer.Option("--log-y", help="A logarithmic loss axis.")] = False,
    smooth: Annotated[int, typer.Option("--smooth", help="Average the training loss over this many records.",
                                        min=1)] = 1,
    ylim: Annotated[Optional[str], typer.Option("--ylim", help="The loss axis's range, LOW,HIGH (nats per character; "
                                                "either may be empty), e.g. ,2.5 to cut off the first steps.",
                                                show_default=False, metavar="LOW,HIGH")] = None,
) -> None:
    """Draw training and validation loss (nats and bits per character) against steps and training time, all runs on
    one figure."""
    from rnnlm.plot import Axes, plot_runs

    axes = Axes(log_y, smooth, *_range(ylim))
    if log_y and any(v is not None and v <= 0 for v in (axes.low, axes.high)):
        raise RnnlmError(f"--ylim {ylim}: a logarithmic axis (--log-y) holds only positive values; give LOW > 0, or "
                         "leave it empty")
    typer.echo(f"wrote {plot_runs(runs, _plot_out(out, runs), axes)}", err=True)


def _plot_out(out: Path, runs: list[Path]) -> Path:
    """plot's --out, refused where it would join a run's own text: an SVG is text, which a data.path folder or glob
    reads (PNG and PDF are binary, which it leaves out)."""
    from rnnlm.config import ConfigError, read_yaml

    specs: list[Optional[str]] = []
    for run in runs if out.suffix.lower() == ".svg" else []:
        try:
            data = read_yaml((run if run.is_dir() else run.parent) / "config.yaml").get("data")
        except ConfigError:  # no run's config here: plot says what it misses
            continue
        specs += [_own_text(data.get("dataset"), data.get("path"))] if isinstance(data, dict) else []
    for spec in [s for s in specs if s is not None] or [None]:
        target = out_path(out, corpus=spec)
    return target


def _range(text: Optional[str]) -> tuple[float | None, float | None]:
    if text is None:
        return None, None
    try:
        low, high = (float(p) if p.strip() else None for p in text.split(","))
    except ValueError:
        low = high = math.nan
    if not all(v is None or math.isfinite(v) for v in (low, high)) or (low is not None and high is not None
                                                                       and low >= high):
        raise RnnlmError(f"--ylim {text}: give LOW,HIGH in nats per character, finite and LOW < HIGH, e.g. 1,2.5 or "
                         ",2.5")
    return low, high


data_app = typer.Typer(help="List, fetch and describe the corpora.", no_args_is_help=True, rich_markup_mode=None,
                       context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(data_app, name="data")

DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept "
                                                    "[default: data/ or $RNNLM_DATA_DIR].", show_default=False)]
MirrorOpt = Annotated[Optional[Path], typer.Option("--mirror", help="A folder laid out like the data root, tried before "
                                                   "the network [default: $RNNLM_DATA_MIRROR].", show_default=False)]
CorpusArg = Annotated[str, typer.Argument(help="A corpus (shakespeare, names, linux, text, ...) or a YAML config.",
                                          show_default=False, metavar="CORPUS")]
DataOverrides = Annotated[Optional[list[str]], typer.Argument(
    help="Overrides as section.key=value, e.g. data.subdirs=[kernel] data.path=notes.txt.", show_default=False,
    metavar="KEY=VALUE")]


@data_app.command("list")
def data_list(data_dir: DataDirOpt = None, mirror: MirrorOpt = None) -> None:
    """Each corpus: whether it is here (or where it will come from) and its size."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import format_listing, list_corpora

    root = DataRoot.resolve(data_dir, mirror)  # a URL given as a mirror is refused there
    if mirror is not None and not mirror.is_dir():  # given here to be listed from: a typo, not a mirror away
        raise RnnlmError(f"--mirror {mirror}: no such folder; give a folder laid out like the data root")
    _end_with_the_reader()
    typer.echo(format_listing(list_corpora(root)))


@data_app.command("clean")
def data_clean(
    every: Annotated[bool, typer.Option("--all", help="Every prepared store, not only those whose text is gone (each "
                                        "is prepared again when a run next uses it).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would be removed; remove nothing.")] \
        = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove the prepared stores no run can use again (their text is gone), and what stopped builds left."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import size_text
    from rnnlm.data.cleanup import clean_stores

    if data_dir is not None and not data_dir.is_dir():  # a typo: there is nothing of it to clean
        raise RnnlmError(f"--data-dir {data_dir}: no such folder; give the data root the stores were prepared in")
    root = DataRoot.resolve(data_dir, None).path
    removed = clean_stores(root, every, dry_run)
    verb = ("would remove", "would free") if dry_run else ("removed", "freed")
    total = sum(r.bytes for r in removed)
    for r in removed:
        typer.echo(f"{verb[0]} {r.path.relative_to(root)} ({size_text(r.bytes)}): {r.why}")
    typer.echo(f"{verb[1]} {size_text(total)} in {root}" if removed
               else f"nothing to remove in {root}" + ("" if every else " (--all removes every prepared store)"))


@data_app.command("fetch")
def data_fetch(name: CorpusArg, overrides: DataOverrides = None, data_dir: DataDirOpt = None,
               mirror: MirrorOpt = None) -> None:
    """Put a corpus in the data root: copied from the mirror or downloaded, and checked against its sha256."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import config_for, fetch_corpus

    cfg = config_for(name, overrides or [])
    with _termination_unwinds():  # a kill removes the partial download, as Ctrl-C does
        where, how = fetch_corpus(cfg.data, DataRoot.resolve(data_dir, mirror))
    typer.echo(f"{cfg.data.dataset}: {where} ({how})" if where else f"{cfg.data.dataset}: {how}")


@data_app.command("info")
def data_info(name: CorpusArg, overrides: DataOverrides = None, data_dir: DataDirOpt = None,
              mirror: MirrorOpt = None) -> None:
    """Characters, vocabulary with counts, split sizes and records of a corpus (fetching it if needed)."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import config_for, corpus_info, format_info

    cfg = config_for(name, overrides or [])
    with _termination_unwinds():  # a kill while the store is prepared removes what it wrote, as Ctrl-C does
        info = corpus_info(cfg.data, cfg.train.seed, DataRoot.resolve(data_dir, mirror))
    typer.echo(format_info(info))


def run_data(point: Any, data_dir: Optional[Path]) -> Any:
    """Where a run's corpus is read from by sample and eval: --data-dir, else the data root the run trained from
    (recorded in its checkpoint), else the default; nothing is downloaded."""
    from rnnlm.data import DataRoot

    if data_dir is not None and not data_dir.is_dir():  # a typo would otherwise get a new data root made for it
        raise RnnlmError(f"--data-dir {data_dir}: no such folder; give the data root the corpus was prepared in")
    return DataRoot.resolve(data_dir or recorded_root(point), offline=True)


def recorded_root(point: Any) -> str | None:
    """The data root a run trained from, as its checkpoint records it, while it is still there."""
    return point.data_root if point is not None and point.data_root and Path(point.data_root).is_dir() else None


def device_for(name: str, threads: int | None = None) -> torch.device:
    """A command's --device as a torch.device, refused with a message before anything is loaded or written; on a
    CPU, the command computes with `threads` threads (None: one per core other processes leave free)."""
    from rnnlm.device import resolve_device
    from rnnlm.runtime import use_threads

    device = resolve_device(name, option="--device")
    if device.type == "cpu":
        use_threads(threads)
    return device


def _end_with_the_reader() -> None:
    """A command that only prints ends when its reader stops early (`rnnlm sample RUN | head`) as cat and grep do: by
    SIGPIPE (status 141 in the shell), quietly. Python ignores the signal, and click turned the write error into
    status 1, silently. Not for commands that train (they go on unseen: `console.outliving_the_reader`) or download."""
    if threading.current_thread() is threading.main_thread():  # signal handlers are the main thread's to set
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


@contextlib.contextmanager
def output(path: Optional[Path], reads: tuple[Optional[Path], ...] = (), trained_on: tuple[Path, ...] = (),
           corpus: Optional[str] = None) -> Iterator[TextIO]:
    """stdout, or a text file for --out (not one of the files the command `reads` or the run's corpus is made of,
    see `out_path`) that appears only when the block completes: an existing file is replaced then, and left as it
    was if anything fails on the way (a refused option, Ctrl-C, a full disk)."""
    if path is None:
        try:
            yield sys.stdout
        except UnicodeEncodeError as e:  # PYTHONIOENCODING=ascii, or a terminal of a narrower encoding
            if e.encoding != getattr(sys.stdout, "encoding", None):
                raise
            raise RnnlmError(f"standard output's encoding ({e.encoding}) cannot show {e.object[e.start:e.end]!r}; "
                             "set PYTHONIOENCODING=utf-8, or write to a file with --out FILE") from None
        return
    from rnnlm.atomic import atomic_file

    path = out_path(path, reads, trained_on, corpus)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_termination_unwinds())
        try:
            stream = stack.enter_context(atomic_file(path, encoding="utf-8"))
        except OSError as e:
            raise RnnlmError(f"--out {path}: cannot write ({e.strerror})") from None
        existed = path.exists()
        try:
            yield _Checked(stream, path)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM / SIGHUP made an exit: say what became of it
            typer.echo(f"stopped: --out {path} was {'left as it was' if existed else 'not written'}", err=True)
            raise
        try:
            stack.close()  # flush, close and rename now, so that a full disk is a message, not a traceback
        except OSError as e:
            raise _write_failed(path, e) from None


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`) and SIGHUP (a closed terminal) as an exit that unwinds, so that temporary files (an --out
    file's, a download's, a store's) are removed as on Ctrl-C; by default each ends the process where it stands."""
    from rnnlm.runtime import termination_handled

    def exit_now(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    with termination_handled(exit_now):
        yield


def out_path(path: Path, reads: tuple[Optional[Path], ...] = (), trained_on: tuple[Path, ...] = (),
             corpus: Optional[str] = None) -> Path:
    """Where an --out file goes: the path itself, or for a symlink the file it points to (written through, the link
    kept); refused when that is a folder, a device, a FIFO or a socket, its folder does not exist, or it is one of
    the files the command `reads` (its checkpoint, its text) or the run's corpus is made of (`trained_on`), or a new
    file the run's `corpus` (its data.path) would read."""
    import stat

    if str(path) == "-":
        raise RnnlmError("--out -: give the path of a file to write (this command writes a file, not to standard "
                         "output)")
    target = path.resolve() if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as e:
        raise RnnlmError(f"--out {path}: cannot use it ({e.strerror})") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise RnnlmError(f"--out {path} is {kind}, not a file; give the path of a file to write")
    if not target.parent.is_dir():
        raise RnnlmError(f"--out {path}: the folder {target.parent} does not exist")
    if mode is not None and not mode & 0o222:  # as root, the permission alone would not stop the replacement
        raise RnnlmError(f"--out {path} is read-only (mode {stat.S_IMODE(mode):04o}); make it writable (chmod u+w) "
                         "to replace it, or write elsewhere")
    if _run_file(target):
        raise RnnlmError(f"--out {path}: a file of the run in {target.parent}, which rnnlm keeps; write elsewhere")
    from rnnlm.data.store import is_store_file

    if mode is not None and is_store_file(target):
        raise RnnlmError(f"--out {path}: a file of the prepared corpus in {target.parent}, which training, sample "
                         "and eval read; write elsewhere")
    for files, what in ((reads, "which this command reads"),
                        (trained_on, "part of the text the run trained on (its resume and --novel read it)")):
        same = next((f for f in files if f is not None and mode is not None and f.exists() and target.samefile(f)),
                    None)
        if same is not None:
            raise RnnlmError(f"--out {path} is {same}, {what}; write elsewhere")
    from rnnlm.data.text import would_read

    if corpus is not None and would_read(corpus, target):
        raise RnnlmError(f"--out {path} {'is' if mode is not None else 'would become'} part of the text the run "
                         f"trained on (data.path={corpus} reads it), which its resume would find changed; write "
                         "elsewhere")
    return target


def _trained_on(point: Any, out: Path, data_dir: Optional[Path], moved_to: Optional[Path]) -> tuple[Path, ...]:
    """The files of the run's corpus that `out` could replace: the downloaded file of a published corpus (and the
    data mirror's copy it came from; for linux, the kernel tarballs installed on the machine too), or your own files
    (`data.path`, or --data-path where they moved). Listed only when `out` exists: a folder's walk is not made for a
    new file."""
    from rnnlm.data.catalog import DOWNLOADS
    from rnnlm.data.linux import KERNEL_RELEASE, system_tarballs
    from rnnlm.data.text import text_files

    if not out.exists():
        return ()
    data = point.data_config()
    spec = str(moved_to) if moved_to is not None else data.path
    if not spec:
        linux = data.dataset == "linux"
        remote, root = DOWNLOADS.get(data.dataset, KERNEL_RELEASE if linux else None), run_data(point, data_dir)
        installed = tuple(system_tarballs()) if linux else ()
        if remote is None:
            return installed
        mirrored = (root.mirror / remote.relpath,) if root.mirror is not None else ()
        return (root.path / remote.relpath, *mirrored, *installed)
    try:
        return tuple(text_files(spec))
    except (RnnlmError, OSError):  # gone, moved or unreadable: nothing there that --out could replace
        return ()


def _corpus_path(point: Any, moved_to: Optional[Path]) -> Optional[str]:
    """The data.path of the run's own text (--data-path where it moved), which a new file may join (`_own_text`)."""
    data = point.data_config()
    return _own_text(data.dataset, str(moved_to) if moved_to is not None else data.path)


def _own_text(dataset: Any, path: Any) -> Optional[str]:
    """The data.path a new file may join: a text corpus's folder or glob; None for a published corpus, and for one
    that reads a single file (names) or a kernel tree's C sources alone (linux)."""
    return path if dataset == "text" and isinstance(path, str) else None


def _run_file(path: Path) -> bool:
    """One of the files a run keeps (its config, metrics, checkpoints ...), there or not yet, in a run's folder."""
    from rnnlm.metrics import METRICS
    from rnnlm.rundir import LOCK, RESUME_LOG, STATUS, is_run

    kept = path.suffix == ".pt" or path.name in ("config.yaml", METRICS, STATUS, RESUME_LOG, LOCK)
    return kept and is_run(path.parent)


def _write_failed(path: Path, e: OSError) -> RnnlmError:
    return RnnlmError(f"--out {path}: could not write ({e.strerror}); nothing was replaced")


class _Checked:
    """A text file whose failed writes (a full disk, a file size limit) are a message, not a traceback."""

    def __init__(self, stream: TextIO, path: Path) -> None:
        self.stream, self.path = stream, path

    def write(self, text: str) -> int:
        return self._do(self.stream.write, text)

    def flush(self) -> None:
        self._do(self.stream.flush)

    def _do(self, call, *args):  # type: ignore[no-untyped-def]
        try:
            return call(*args)
        except OSError as e:
            raise _write_failed(self.path, e) from None


def _named_command() -> tuple[Any, list[str]]:
    """The command the command line names (`rnnlm data info ...`: data's info), and its names from `rnnlm` on."""
    command, names = typer.main.get_command(app), ["rnnlm"]
    for word in (w for w in sys.argv[1:] if not w.startswith("-")):
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, names = sub, [*names, word]
    return command, names


def _command_path(e: UsageError) -> str:
    """The command whose help answers a usage error: its context's, or the commands named on the command line when
    that is longer (an option missing its value is reported from the group's context)."""
    names = _named_command()[1]
    path = e.ctx.command_path if e.ctx else "rnnlm"
    return " ".join(names) if len(names) > len(path.split()) else path


def _typed_with_value(name: str) -> str | None:
    """The word `name` (an option) as typed, with the value after it joined on: `--max_steps 100`: --max_steps=100."""
    words = sys.argv[1:]
    at = next((i for i, w in enumerate(words) if w == name or w.startswith(f"{name}=")), None)
    if at is None:
        return None
    if words[at] == name and at + 1 < len(words) and not words[at + 1].startswith("-"):
        return f"{name}={words[at + 1]}"
    return words[at]


def _override_meant(e: UsageError) -> str:
    """For an unknown option that is a config key in nanoGPT's spelling (`--max_steps=100`), the override meant."""
    name = getattr(e, "option_name", None)  # click's NoSuchOption
    word = _typed_with_value(name) if name else None
    return _setting_hint(word, e.ctx.command) if word and e.ctx else ""


def _setting_hint(word: str, command: Any) -> str:
    """What an option word that names a setting (`--max_iters=5`) is given as to `command`: the override, for the
    commands that take overrides; sample's own option for a sample setting; else nothing."""
    from rnnlm.config import as_override, key_meant

    flag = word.lstrip("-").split("=")[0].replace("-", "_")
    own = f"--{flag.replace('_', '-')}"
    # --data_dir is rnnlm's own --data-dir misspelt; char-rnn's -data_dir (one dash) is its data.path
    if word.startswith("--") and any(own in getattr(p, "opts", ()) for p in command.params):
        value = word.partition("=")[2]
        return f"; the option is {own}" + (f" here: {own} {shell_word(value)}" if value else "")
    meant = key_meant(word)
    if meant is None:
        if flag == "checkpoint" and command.name == "train":
            return "; torch-rnn's -checkpoint is --resume RUN here (or --init-from RUN for its weights in a new run)"
        return f"; {OTHER_FLAGS[flag].format(command=command.name)}" if flag in OTHER_FLAGS else ""
    if any(p.name == "overrides" for p in command.params):  # train, config, data fetch and info
        return f"; config keys are given without dashes: {as_override(word)}"
    option = SAMPLE_OPTIONS.get(meant.key)
    if command.name == "sample" and option is not None:
        return f"; the option is {option} here: {option} {shell_word(meant.value or 'VALUE')}"
    return ""


def _one_dash() -> str | None:
    """char-rnn's and torch-rnn's `-primetext ROMEO` (Lua's one dash), which would be read as -p with the value
    `rimetext`, and sample with it: the refusal, when the word names a setting."""
    for word in sys.argv[1:]:
        if word == "--":
            break
        if re.fullmatch(r"-[a-z][a-z_]{2,}(=.*)?", word):  # rare: the commands are looked up only then
            name = word.split("=")[0]
            hint = _setting_hint(_typed_with_value(name) or word, _named_command()[0])
            if hint:
                return f"{name}: options take two dashes here{hint}"
    return None


SAMPLE_OPTIONS = {"sample.temperature": "--temp", "sample.length": "--length", "sample.prime": "--prime",
                  "sample.top_k": "--top-k", "sample.top_p": "--top-p", "train.seed": "--seed",
                  "train.device": "--device"}
"""The option of `rnnlm sample` that overrides each of the run's sample.* settings (and the seed and device)."""
OTHER_FLAGS = {"checkpoint": "torch-rnn's -checkpoint is the first argument here: rnnlm {command} RUN",
               "checkpoint_dir": "char-rnn's -checkpoint_dir is --out here: rnnlm train CONFIG --out FOLDER",
               "work_dir": "makemore's --work-dir is --out here (train), and the run is sample's first argument",
               "sample_only": "makemore's --sample-only is rnnlm sample RUN here"}
"""Other projects' flags that are no setting here, and what does their job."""


class _WarningLine(logging.Handler):
    """rnnlm's logged warnings (files a corpus leaves out) as the CLI's other warnings: one `warning: ...` line."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"warning: {record.getMessage()}", err=True)  # sys.stderr as it is now, not at creation


def main() -> None:
    """Entry point: run the app; known errors become one line on stderr and exit status 2, warnings one line
    `warning: ...` (not Python's file, line and source)."""
    log = logging.getLogger("rnnlm")
    if not any(isinstance(h, _WarningLine) for h in log.handlers):
        log.addHandler(_WarningLine(logging.WARNING))
    one_dash = _one_dash()
    if one_dash is not None:
        typer.echo(f"error: {one_dash}", err=True)
        sys.exit(2)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_, **__: typer.echo(f"warning: {message}", err=True)
            status = app(prog_name="rnnlm", standalone_mode=False)  # click's usage errors raise: one line below
        if isinstance(status, int) and status:  # a typer.Exit(code); typer returns 130 for a Ctrl-C it caught
            sys.exit(status)
    except NoArgsIsHelpError as e:  # `rnnlm` or `rnnlm data` alone: the help
        e.show()
        sys.exit(e.exit_code)
    except UsageError as e:  # an unknown option or command, a value of the wrong type, a missing argument
        message = " ".join(e.format_message().split()).rstrip(".") + _override_meant(e)
        typer.echo(f"error: {message[:1].lower()}{message[1:]} (see '{_command_path(e)} -h')", err=True)
        sys.exit(2)
    except ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:  # an EOFError, as typer reports it
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except RnnlmError as e:
        if os.environ.get("RNNLM_DEBUG"):
            raise
        if isinstance(e, AlreadySaid):
            e.wait()
        else:
            typer.echo(f"error: {e}", err=True)
        sys.exit(2)
