"""The `rnnlm` command: parse, build a config, call one library function, report.

Mistakes the user can fix arrive as `RnnlmError` and leave as one short message on stderr with exit
status 2; anything else is a bug and keeps its traceback. RNNLM_DEBUG=1 (or --debug) shows the traceback
behind a user mistake's message too.

torch is imported inside the commands, so `rnnlm --help` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, TextIO

import typer

from rnnlm.errors import RnnlmError

if TYPE_CHECKING:
    import torch

app = typer.Typer(
    name="rnnlm",
    help="Train character-level recurrent language models, sample from them and measure them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts say "[default: ...]", which rich markup would swallow as a tag
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunArg = Annotated[Path, typer.Argument(help="A run directory (its best checkpoint is used) or a checkpoint file.",
                                        show_default=False)]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks of unexpected errors.")] = False) -> None:
    if debug:
        os.environ["RNNLM_DEBUG"] = "1"


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config, e.g. configs/tiny.yaml. Optional with --resume.",
                                                     show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Config overrides as section.key=value, e.g. train.lr=0.001 model.hidden_size=256.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder that holds run directories.")] = Path("checkpoints"),
    name: Annotated[Optional[str], typer.Option("--name", help="Run directory name [default: config name + time].",
                                                show_default=False)] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run directory from its last checkpoint.",
                                                   show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept [default: data/ or $RNNLM_DATA_DIR].",
                                                     show_default=False)] = None,
    mirror: Annotated[Optional[Path], typer.Option("--mirror", help="A folder laid out like the data root, tried before "
                                                   "the network [default: $RNNLM_DATA_MIRROR].", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a model; writes config.yaml, metrics.jsonl, best.pt and last.pt into a run directory.

    Ctrl-C (or SIGTERM) saves last.pt and prints the command that resumes. Under
    `torchrun --nproc_per_node=N -m rnnlm train ...` the N processes train one model data-parallel."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.config import from_dict, load_config, merge_overrides, read_yaml
    from rnnlm.data import DataRoot
    from rnnlm.distributed import setup
    from rnnlm.runs import new_run_dir, resume_point
    from rnnlm.runtime import keep_freed_memory
    from rnnlm.train import train as run_training

    args = list(overrides or [])
    if config is not None and "=" in config.name and not config.exists():
        args.insert(0, str(config))  # `rnnlm train --resume RUN train.max_steps=2000`: no config, just overrides
        config = None
    root = DataRoot.resolve(data_dir, mirror)
    previous = None
    if resume is not None:
        previous = resume_point(resume)  # None: stopped before its first checkpoint, so it starts over
        base = previous.config.to_dict() if previous is not None else read_yaml(resume / "config.yaml")
        cfg = load_config(config, args) if config is not None else from_dict(merge_overrides(base, args))
    elif config is None:
        raise RnnlmError("give a config file (e.g. rnnlm train configs/tiny.yaml) or --resume RUN_DIR")
    else:
        cfg = load_config(config, args)
    with setup(cfg.train.device) as dist:
        if dist.device.type == "cpu":
            keep_freed_memory()
        run_dir = resume if resume is not None else new_run_dir(out, config.stem, name, dist)  # type: ignore[union-attr]
        result = run_training(cfg, run_dir, resume=previous, root=root, progress=not quiet, dist=dist)
    summary = f"step {result.step}: val loss {result.last_val:.4f} nats/char (best {result.best_val:.4f})"
    if result.stopped == "interrupted":
        launcher = f"torchrun --nproc_per_node={dist.world_size} -m rnnlm" if dist.enabled else "rnnlm"
        where = f" --data-dir {data_dir}" if data_dir is not None else ""
        if dist.is_main:
            typer.echo(f"stopped at {summary}; saved {run_dir / ckpt.LAST}\n"
                       f"resume with: {launcher} train --resume {run_dir}{where}", err=True)
        raise typer.Exit(128 + int(result.signal or 2))
    if dist.is_main:
        typer.echo(f"done at {summary} ({result.stopped.replace('_', ' ')} reached)", err=True)
        typer.echo(f"sample with: rnnlm sample {run_dir}", err=True)


@app.command()
def sample(
    run: RunArg,
    temp: Annotated[Optional[float], typer.Option("--temp", "-t", help="Temperature; 0 always takes the most likely character "
                                                  "[default: the run's sample.temperature].", show_default=False)] = None,
    length: Annotated[Optional[int], typer.Option("--length", "-n", help="Characters to generate per sample (for records: "
                                                  "the most a record may have) [default: sample.length].",
                                                  show_default=False)] = None,
    prime: Annotated[Optional[str], typer.Option("--prime", "-p", help="Text the model reads before it writes; may be empty "
                                                 "[default: sample.prime].", show_default=False)] = None,
    prime_file: Annotated[Optional[Path], typer.Option("--prime-file", help="Read the prime from this UTF-8 file.",
                                                       show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Prime characters the model never saw are an error, "
                                         "not a warning.")] = False,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Draw only among the k most likely characters.",
                                                 show_default=False)] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Draw only from the smallest set of characters whose "
                                                   "probability reaches p.", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-N", help="Samples generated together, as one batch.")] = 1,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed, same text (sample i uses seed + i).",
                                                show_default=False)] = None,
    unique: Annotated[bool, typer.Option("--unique", help="Records: drop repeated records.")] = False,
    novel: Annotated[bool, typer.Option("--novel", help="Records: keep only records the training split does not hold.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the samples to this file instead of stdout; "
                                                "it appears (or replaces one) when sampling ends.",
                                                show_default=False)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept, to count novel records "
                                                     "[default: data/ or $RNNLM_DATA_DIR].", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """Generate text from a trained model, streaming it to stdout; records corpora print one record per line."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.data import DataRoot
    from rnnlm.sample import SampleOptions, read_prime, sample_checkpoint

    target = device_for(device)
    point = ckpt.load(run)
    defaults = point.config.sample
    opts = SampleOptions(length=length if length is not None else defaults.length,
                         temperature=temp if temp is not None else defaults.temperature,
                         top_k=top_k if top_k is not None else defaults.top_k, top_p=top_p,
                         num_samples=num_samples, seed=seed)
    primed = read_prime(point.vocab, prime, prime_file, strict, default=defaults.prime)
    if primed.warning():
        typer.echo(f"warning: {primed.warning()}", err=True)
    with output(out) as stream:
        report = sample_checkpoint(point, opts, primed.text, stream, unique=unique, novel=novel,
                                   root=DataRoot.resolve(data_dir), device=target)
    if report.summary():
        typer.echo(report.summary(), err=True)


@app.command("eval")
def evaluate(
    run: RunArg,
    perplexity: Annotated[bool, typer.Option("--perplexity", help="Lead the report with perplexity (nll and bits "
                                             "per character follow; every measure is always reported).")] = False,
    split: Annotated[Optional[str], typer.Option("--split", help="train, val or test split of the run's corpus "
                                                 "[default: val].", show_default=False)] = None,
    file: Annotated[Optional[list[Path]], typer.Option("--file", help="Score this UTF-8 file instead of a split; repeat "
                                                       "for several (one record per line for a records model).",
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
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "auto",
) -> None:
    """Measure how well a model predicts held-out text: nats and bits per character, perplexity."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.data import DataRoot
    from rnnlm.evaluate import evaluate_sources, file_source, split_source

    if file and split is not None:
        raise RnnlmError("give --split or --file, not both")
    target = device_for(device)
    point = ckpt.load(run)
    sources = ([file_source(f, point) for f in file] if file
               else [split_source(point, split or "val", DataRoot.resolve(data_dir), progress=True)])
    result = evaluate_sources(point, sources, context=context, compressors=compare_compressors, device=target,
                              streams=streams, progress=True)
    for warning in result.warnings():
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(result.as_dict()) if as_json else "\n".join(result.lines(perplexity_first=perplexity)))


@app.command()
def viz(
    run: RunArg,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="UTF-8 text for the model to read.",
                                                 show_default=False)] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="The text itself, instead of --file.",
                                                show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("viz.html"),
    neuron: Annotated[Optional[str], typer.Option("--neuron", help="The neuron shown first: LAYER:INDEX (hidden state) "
                                                  "or LAYER:INDEX:c (LSTM cell state), counted from 0; by default "
                                                  "the top of the ranked list.", show_default=False)] = None,
    chars: Annotated[int, typer.Option("--chars", help="Read at most this many characters of the text.")] = 3000,
) -> None:
    """Write a web page showing how each neuron fires at each character of a text, and what the model predicts next."""
    from rnnlm import checkpoint as ckpt
    from rnnlm.data.text import read_utf8
    from rnnlm.viz import page_for_checkpoint

    if (file is None) == (text is None):
        raise RnnlmError("give the text to read with --file FILE or --text TEXT (one of the two)")
    source = read_utf8(file) if file is not None else text
    page = page_for_checkpoint(ckpt.load(run), source, neuron=neuron, chars=chars)
    if page.trace.unknown:
        typer.echo(f"warning: characters the model never saw, read as <unk>: {''.join(page.trace.unknown)!r}", err=True)
    with output(out) as stream:
        stream.write(page.html)
    cut = f" (the first {chars:,}; --chars for more)" if page.truncated else ""
    typer.echo(f"wrote {out}: {len(page.trace.text):,} characters{cut}, showing neuron {page.neuron}", err=True)
    for line in page.best_matches():
        typer.echo(f"  {line}", err=True)


@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or their metrics.jsonl files).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write; the suffix picks the format (.png, .svg, .pdf).")]
    = Path("curves.png"),
) -> None:
    """Draw training and validation loss (nats and bits per character) against steps and time, all runs on one figure."""
    from rnnlm.plot import plot_runs

    typer.echo(f"wrote {plot_runs(runs, out)}", err=True)


data_app = typer.Typer(help="List, fetch and describe the corpora.", no_args_is_help=True, rich_markup_mode=None,
                       context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(data_app, name="data")

DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Where corpora are kept "
                                                    "[default: data/ or $RNNLM_DATA_DIR].", show_default=False)]
MirrorOpt = Annotated[Optional[Path], typer.Option("--mirror", help="A folder laid out like the data root, tried before "
                                                   "the network [default: $RNNLM_DATA_MIRROR].", show_default=False)]
CorpusArg = Annotated[str, typer.Argument(help="A corpus (shakespeare, names, linux, text, ...) or a YAML config.",
                                          show_default=False)]
DataOverrides = Annotated[Optional[list[str]], typer.Argument(
    help="Overrides as section.key=value, e.g. data.subdirs=[kernel] data.path=notes.txt.", show_default=False)]


@data_app.command("list")
def data_list(data_dir: DataDirOpt = None, mirror: MirrorOpt = None) -> None:
    """Each corpus: whether it is here (or where it will come from) and its size."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import format_listing, list_corpora

    typer.echo(format_listing(list_corpora(DataRoot.resolve(data_dir, mirror))))


@data_app.command("fetch")
def data_fetch(name: CorpusArg, overrides: DataOverrides = None, data_dir: DataDirOpt = None,
               mirror: MirrorOpt = None) -> None:
    """Put a corpus in the data root: copied from the mirror or downloaded, and checked against its sha256."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import config_for, fetch_corpus

    cfg = config_for(name, overrides or [])
    where = fetch_corpus(cfg.data, DataRoot.resolve(data_dir, mirror))
    typer.echo(f"{cfg.data.dataset}: {where}" if where else f"{cfg.data.dataset}: nothing to fetch (built in, or your own files)")


@data_app.command("info")
def data_info(name: CorpusArg, overrides: DataOverrides = None, data_dir: DataDirOpt = None,
              mirror: MirrorOpt = None) -> None:
    """Characters, vocabulary with counts, split sizes and records of a corpus (fetching it if needed)."""
    from rnnlm.data import DataRoot
    from rnnlm.data.catalog import config_for, corpus_info, format_info

    cfg = config_for(name, overrides or [])
    typer.echo(format_info(corpus_info(cfg.data, cfg.train.seed, DataRoot.resolve(data_dir, mirror))))


def device_for(name: str) -> torch.device:
    """A command's --device as a torch.device, refused with a message before anything is loaded or written."""
    from rnnlm.device import resolve_device

    return resolve_device(name, option="--device")


@contextlib.contextmanager
def output(path: Optional[Path]) -> Iterator[TextIO]:
    """stdout, or a text file for --out that appears only when the block completes: an existing file is
    replaced then, and left as it was if anything fails on the way (a refused option, Ctrl-C, a full disk)."""
    if path is None:
        yield sys.stdout
        return
    from rnnlm.atomic import atomic_file

    if path.is_dir():
        raise RnnlmError(f"--out {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise RnnlmError(f"--out {path}: the folder {path.parent} does not exist")
    with contextlib.ExitStack() as stack:
        try:
            stream = stack.enter_context(atomic_file(path, encoding="utf-8"))
        except OSError as e:
            raise RnnlmError(f"--out {path}: cannot write ({e.strerror})") from None
        yield _Checked(stream, path)
        try:
            stack.close()  # flush, close and rename now, so that a full disk is a message, not a traceback
        except OSError as e:
            raise _write_failed(path, e) from None


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


def main() -> None:
    """Entry point: run the app; known errors become one line on stderr and exit status 2."""
    try:
        app()
    except RnnlmError as e:
        if os.environ.get("RNNLM_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
