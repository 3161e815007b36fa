"""Training curves: the loss of one or more runs against steps and against training time, from their
`metrics.jsonl` files, drawn with matplotlib (the optional `plot` extra: `pip install 'rnnlm[plot]'`).

    +--------------------------------+--------------------------------+
    | loss vs step                   | loss vs training time          |
    |  one colour per run;           |  (evaluation time excluded,    |
    |  training solid, validation    |   as `elapsed` in the records) |
    |  dashed with dots              |                                |
    +--------------------------------+--------------------------------+
      shared y axis: nats per character on the left, the same in bits per character on the right
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlm.errors import RnnlmError
from rnnlm.metrics import METRICS, read_metrics


@dataclass
class Curves:
    name: str
    train: list[dict[str, Any]]
    """Training records: step, train_loss, elapsed, ..."""
    val: list[dict[str, Any]]
    """Evaluation records: step, val_loss, bpc, elapsed, ..."""


def read_curves(run_dir: Path) -> Curves:
    path = run_dir / METRICS if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise RnnlmError(f"{run_dir}: no {METRICS} here; give a run directory made by `rnnlm train`")
    records = read_metrics(path)
    train = [r for r in records if _finite(r.get("train_loss"))]
    val = [r for r in records if _finite(r.get("val_loss"))]
    if not train and not val:
        raise RnnlmError(f"{path}: no loss records yet")
    name = path.parent.name if path.name == METRICS else path.stem
    return Curves(name, train, val)


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


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Draw the curves of every run on one figure and save it to `out` (format from its suffix)."""
    if not run_dirs:
        raise RnnlmError("give at least one run directory")
    runs = [read_curves(Path(d)) for d in run_dirs]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        for ax, x in zip(axes, ("step", "elapsed")):
            if run.train:
                ax.plot([r[x] for r in run.train], [r["train_loss"] for r in run.train], color=colour, lw=1.2,
                        label=f"{run.name} train")
            if run.val:
                ax.plot([r[x] for r in run.val], [r["val_loss"] for r in run.val], color=colour, lw=1.2, ls="--",
                        marker="o", ms=3, label=f"{run.name} validation")
    for ax, xlabel in zip(axes, ("step", "training time (s)")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (nats per character)")
    bits = axes[1].secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    bits.set_ylabel("bits per character")
    axes[0].set_title("against steps")
    axes[1].set_title("against training time")
    axes[1].legend(fontsize=8, loc="upper right")
    try:
        fig.savefig(out, dpi=110)
    except (ValueError, OSError) as e:
        raise RnnlmError(f"--out {out}: cannot write the figure ({e})") from None
    finally:
        plt.close(fig)
    return out
