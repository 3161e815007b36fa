"""How rnnlm's prepared corpus store scales with the corpus: generated text of 10 MB, 100 MB and 1 GB, and the
Linux kernel's .c and .h files from Debian's linux-source tarball when it is installed (/usr/src).

    python bench/scale.py                    # every size, and the kernel if installed (about 10 minutes)
    python bench/scale.py --sizes 10 100     # some sizes only (MB); --no-kernel to leave the kernel out

For each corpus, each in a fresh process, as a user runs them:
- prepare: `rnnlm data info` on a fresh data root, which prepares the store; its wall time and peak anonymous
  memory (RssAnon: the process's own pages, not the page cache the files pass through);
- open: the same command again, the store prepared: its wall time, and the time `open_corpus` itself takes;
- first step: `rnnlm train` of a 2x512 LSTM (batch 32, 64 steps of BPTT) from its start to its first training
  record (`train.log_every=1`, so the first step included), and the peak anonymous memory of 10 steps and the
  final evaluation;
- on disk: the store's size.
For the kernel tarball it also times `xz -dc` alone, the floor for reading it at all.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from machine import machine  # bench/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
TARBALLS = sorted(Path("/usr/src").glob("linux-source-*.tar.xz"))


@dataclass
class Row:
    corpus: str
    characters: int = 0
    prepare_s: float = 0.0
    prepare_mb: float = 0.0
    open_s: float = 0.0
    open_inside_s: float = 0.0
    first_step_s: float = 0.0
    train_mb: float = 0.0
    disk_mb: float = 0.0
    note: str = ""


def generate(path: Path, megabytes: int) -> None:
    """Text of `megabytes` MB: lines of words drawn from a fixed list of 4,000 (about 1% of them with an accented
    letter), written 16 MB at a time."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(4000)]
    words[::100] = [w + "é" for w in words[::100]]
    vocab = np.array(words + ["\n"] * 400)
    with path.open("w", encoding="utf-8") as f:
        written = 0
        while written < megabytes * 10**6:
            text = " ".join(vocab[rng.integers(0, len(vocab), 3_000_000)].tolist())
            text = text[: megabytes * 10**6 - written]
            f.write(text)
            written += len(text.encode("utf-8"))


def measure(command: list[str], until: Path | None = None) -> tuple[float, float, float | None]:
    """Run `command`: (wall seconds, peak RssAnon MB, seconds until `until` holds a line, if given)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # stderr to a file, not a pipe: nobody reads a pipe while polling, and a full one blocks the child
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        peak, reached = 0, None
        while proc.poll() is None:
            peak = max(peak, _rss_anon(proc.pid))
            if until is not None and reached is None and until.exists() and until.stat().st_size > 0:
                reached = time.perf_counter() - start
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{errors.read()[-2000:]}")
    return wall, peak / 1024, reached


def _rss_anon(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_inside(args: list[str], data: Path) -> float:
    """Seconds `open_corpus` takes in a process that has already imported rnnlm (the store prepared)."""
    script = ("import sys, time; from rnnlm.data.catalog import config_for; from rnnlm.data import DataRoot, "
              "open_corpus; cfg = config_for(sys.argv[1], sys.argv[2:]); t = time.perf_counter(); "
              f"from pathlib import Path; open_corpus(cfg.data, cfg.train.seed, DataRoot(Path({str(data)!r})), progress=False); "
              "print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", script, *args], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def run_corpus(name: str, corpus_args: list[str], train_args: list[str], work: Path) -> Row:
    data, runs = work / "data", work / "runs"
    shutil.rmtree(data, ignore_errors=True)
    row = Row(name)
    info = [sys.executable, "-m", "rnnlm", "data", "info", *corpus_args, "--data-dir", str(data)]
    row.prepare_s, row.prepare_mb, _ = measure(info)
    row.open_s, _, _ = measure(info)
    row.open_inside_s = open_inside(corpus_args, data)
    (store,) = [p for p in data.rglob("store-*") if p.is_dir()]
    manifest = json.loads((store / "manifest.json").read_text())
    row.characters = sum(s["characters"] for s in manifest["splits"].values())
    row.disk_mb = sum(f.stat().st_size for f in store.iterdir()) / 1e6
    metrics = runs / name / "metrics.jsonl"
    shutil.rmtree(runs / name, ignore_errors=True)
    train = [sys.executable, "-m", "rnnlm", "train", *train_args, "model.cell=lstm", "model.hidden_size=512",
             "model.num_layers=2", "train.batch_size=32", "train.seq_len=64", "train.max_steps=10",
             "train.max_time=null", "train.log_every=1", "train.eval_every=1000", "train.precision=fp32",
             "--data-dir", str(data), "--out", str(runs), "--name", name, "-q"]
    _, row.train_mb, first = measure(train, until=metrics)
    row.first_step_s = first or float("nan")
    return row


def table(rows: list[Row]) -> str:
    out = ["| corpus | characters | prepare | prepare peak RssAnon | open (command / open_corpus) | to first step "
           "| training peak RssAnon (2x512 LSTM) | store on disk |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.corpus} | {r.characters:,} | {r.prepare_s:.1f} s | {r.prepare_mb:,.0f} MB | "
                   f"{r.open_s:.1f} s / {r.open_inside_s * 1000:.0f} ms | {r.first_step_s:.1f} s | "
                   f"{r.train_mb:,.0f} MB | {r.disk_mb:,.0f} MB |" + (f" {r.note}" if r.note else ""))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000], help="generated corpora, in MB")
    parser.add_argument("--no-kernel", action="store_true", help="leave out the installed kernel tarball")
    parser.add_argument("--work", type=Path, help="folder for the corpora, stores and runs [default: a temporary one]")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        for size in args.sizes:
            text = work / f"gen-{size}mb.txt"
            generate(text, size)
            rows.append(run_corpus(f"generated {size} MB", ["text", f"data.path={text}"],
                                   [str(REPO / "configs" / "text_lstm.yaml"), f"data.path={text}"], work))
            text.unlink()
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if TARBALLS and not args.no_kernel:
            tarball = TARBALLS[-1]
            start = time.perf_counter()
            subprocess.run(f"xz -dc {tarball} > /dev/null", shell=True, check=True)
            xz = time.perf_counter() - start
            corpus = ["linux", f"data.path={tarball}", "data.subdirs=[]"]
            row = run_corpus(f"{tarball.name} (.c and .h)", corpus,
                             [str(REPO / "configs" / "linux_lstm.yaml"), *corpus[1:]], work)
            row.note = f"(xz -dc alone: {xz:.1f} s; prepare / xz = {row.prepare_s / xz:.1f}x)"
            rows.append(row)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
