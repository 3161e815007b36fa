"""Training curves: the loss of one or more runs against steps and against training time, from their
`metrics.jsonl` files, drawn with matplotlib (the optional `plot` extra: `pip install 'rnnlm[plot]'`).

    +--------------------------------+--------------------------------+
    | loss vs step                   | loss vs training time          |
    |  one colour per run;           |  (evaluation excluded: the     |
    |  training solid, validation    |   records' `train_time`; runs  |
    |  dashed with dots              |   older than it: `elapsed`)    |
    +--------------------------------+--------------------------------+
      shared y axis: nats per character on the left, the same in bits per character on the right

The first steps' loss is far above the rest, which flattens the curve people want to see: `Axes` takes a log scale,
a moving average of the training loss and a range for the loss axis. The image is written like every file rnnlm
replaces (`rnnlm.atomic`): completely, or not at all.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlm.atomic import atomic_file
from rnnlm.errors import RnnlmError, shell_word
from rnnlm.metrics import METRICS, read_metrics
from rnnlm.rundir import LOCK, is_run


LEGEND_COLUMNS = 6
"""Entries a row of the legend holds (one per run, two for the line styles)."""


@dataclass
class Axes:
    log_y: bool = False
    smooth: int = 1
    """Training records averaged together (a trailing moving average)."""
    low: float | None = None
    high: float | None = None


@dataclass
class Curves:
    name: str
    train: list[dict[str, Any]]
    """Training records: step, train_loss, elapsed, ..."""
    val: list[dict[str, Any]]
    """Evaluation records: step, val_loss, bpc, elapsed, ..."""


def _runs_in(path: Path) -> list[Path]:
    """A run as it is; a folder of runs (`rnnlm plot checkpoints`, as `rnnlm runs checkpoints`) as the runs in it
    that logged something, by name."""
    if not path.is_dir() or (path / METRICS).exists() or _unlogged_run(path):
        return [path]
    return sorted((d for d in path.iterdir() if (d / METRICS).is_file()), key=lambda d: d.name) or [path]


def _unlogged_run(path: Path) -> bool:
    """A run that has not logged a step yet (a project folder holding a config.yaml is none)."""
    return is_run(path)


class NothingLogged(RnnlmError):
    """A run that has logged no loss yet: among several, left out of the figure with a warning."""


def read_curves(run_dir: Path) -> Curves:
    path = (run_dir / METRICS if run_dir.is_dir() else run_dir).resolve()  # `rnnlm plot .`: named after the folder
    if not run_dir.exists():
        raise RnnlmError(f"{run_dir}: no such folder; give a run directory made by `rnnlm train`")
    if not path.is_file():
        if _unlogged_run(run_dir):
            raise NothingLogged(f"{run_dir}: no {METRICS} yet (the run stopped before it logged a step); continue it "
                                f"with `rnnlm train --resume {shell_word(run_dir)}`")
        if (run_dir / LOCK).exists():  # a start killed while its corpus was prepared
            raise NothingLogged(f"{run_dir}: a start that never began training (it holds its lock file alone)")
        raise RnnlmError(f"{run_dir}: no {METRICS} here; give a run directory made by `rnnlm train`")
    if path.suffix != ".jsonl":
        raise RnnlmError(f"{run_dir}: not a run's {METRICS}; give the run directory (a checkpoint's is its folder)")
    records = read_metrics(path)
    train = [r for r in records if _finite(r.get("train_loss"))]
    val = [r for r in records if _finite(r.get("val_loss"))]
    if not train and not val:
        raise NothingLogged(f"{path}: no loss records yet")
    name = path.parent.name if path.name == METRICS else path.stem
    return Curves(name, train, val)


def _check_range(look: Axes, losses: list[float]) -> None:
    """A loss axis with one end given must still hold some of the curves (with the other end drawn from them, the
    axis would come out upside down and empty)."""
    least, most = min(losses), max(losses)
    if look.low is not None and look.high is None and look.low >= most:
        raise RnnlmError(f"--ylim {look.low:g},: above every loss plotted ({least:.4g}-{most:.4g} nats/char); give "
                         f"a LOW below {most:.4g}")
    if look.high is not None and look.low is None and look.high <= least:
        raise RnnlmError(f"--ylim ,{look.high:g}: below every loss plotted ({least:.4g}-{most:.4g} nats/char); give "
                         f"a HIGH above {least:.4g}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RnnlmError("rnnlm plot needs matplotlib: pip install 'rnnlm[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_runs(run_dirs: list[Path], out: Path, look: Axes | None = None) -> Path:
    """Draw the curves of every run on one figure and save it to `out` (format from its suffix)."""
    if not run_dirs:
        raise RnnlmError("give at least one run directory")
    look = look or Axes()
    found = [d for given in run_dirs for d in _runs_in(Path(given))]
    runs = []
    for d in found:
        try:
            runs.append(read_curves(d))
        except NothingLogged as e:  # `rnnlm plot checkpoints/*` beside a start that never logged
            if len(found) == 1:
                raise
            warnings.warn(f"left out {e}")
    if not runs:
        raise RnnlmError("none of the runs given has logged a loss yet")
    _check_range(look, [v for run in runs for v in _smoothed([r["train_loss"] for r in run.train], look.smooth)]
                 + [r["val_loss"] for run in runs for r in run.val])
    plt = _pyplot()
    fig = draw(plt, runs, look)
    try:
        with atomic_file(out) as f:
            fig.savefig(f, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    except ValueError as e:
        raise RnnlmError(f"--out {out}: cannot write the figure ({e})") from None
    except OSError as e:
        raise RnnlmError(f"--out {out}: could not write ({e.strerror or e}); nothing was replaced") from None
    finally:
        plt.close(fig)
    return out


def draw(plt: Any, runs: list[Curves], look: Axes) -> Any:
    """The figure: the two panels, and below them a legend of one entry per run (its colour) and two for the line
    styles, which stays off the curves however many runs there are."""
    rows = math.ceil((len(runs) + 2) / LEGEND_COLUMNS)  # an entry per run, and two for the line styles
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5 + 0.25 * rows), sharey=True, layout="constrained")
    colours = _colours(plt, len(runs))
    for run, colour in zip(runs, colours):
        for ax, x in zip(axes, ("step", "time")):
            if run.train:
                ax.plot([_x(r, x) for r in run.train], _smoothed([r["train_loss"] for r in run.train], look.smooth),
                        color=colour, lw=1.2, marker="o" if len(run.train) == 1 else None, ms=3)  # one record: a dot
            if run.val:
                ax.plot([_x(r, x) for r in run.val], [r["val_loss"] for r in run.val], color=colour, lw=1.2, ls="--",
                        marker="o", ms=3)
    for ax, xlabel in zip(axes, ("step", "training time (s), evaluation excluded")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if look.log_y:
            ax.set_yscale("log")
        ax.set_ylim(look.low, look.high)
    axes[0].set_ylabel("loss (nats per character)")
    bits = axes[1].secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits per character")
    axes[0].set_title("against steps")
    axes[1].set_title("against training time")
    from matplotlib.lines import Line2D

    styles = [Line2D([], [], color="grey", lw=1.2, label="training"),
              Line2D([], [], color="grey", lw=1.2, ls="--", marker="o", ms=3, label="validation")]
    runs_drawn = [Line2D([], [], color=c, lw=3, label=run.name) for run, c in zip(runs, colours)]
    fig.legend(handles=styles + runs_drawn, loc="outside lower center", fontsize=8, frameon=False,
               ncols=min(LEGEND_COLUMNS, len(runs) + 2))
    return fig


def _colours(plt: Any, count: int) -> list[Any]:
    """One colour per run, no two alike: matplotlib's own ten while they last, then tab20's twenty, then colours
    spread evenly over a continuous map."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if count <= len(cycle):
        return cycle[:count]
    if count <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(count)]
    return [plt.get_cmap("turbo")(0.05 + 0.9 * i / (count - 1)) for i in range(count)]


def _x(record: dict[str, Any], axis: str) -> float:
    """A record's place on an axis: its step, or the training seconds before it (evaluation excluded)."""
    if axis == "step":
        return record["step"]
    return record.get("train_time", record.get("elapsed", 0.0))


def _smoothed(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for k, v in enumerate(values):
        total += v - (values[k - window] if k >= window else 0.0)
        out.append(total / min(k + 1, window))
    return out
