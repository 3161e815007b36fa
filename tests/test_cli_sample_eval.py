"""`rnnlm sample` and `rnnlm eval` run as a user runs them, on checkpoints written directly (no training).

The main flows run the real command in a subprocess (`run_cli`); the many small variations and the
error cases call the same entry point, `rnnlm.cli.main`, in this process, which saves importing torch
two dozen times.
"""

import json
import math
import random
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from helpers import REPO, assert_user_error, cli, constant_logits, make_checkpoint, measured, run_cli, uniform
from rnnlm import checkpoint as ckpt


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "hello": make_checkpoint(folder / "hello.pt", dataset="hello", chars="helo", seed=1),
        # after any prefix: b or <eos>, one half each, so the records after the prime "aab" are aab b^k
        "coin": make_checkpoint(folder / "coin.pt", dataset="anbn", chars="ab", setup=constant_logits(b=0.0, eos=0.0)),
        "uniform": make_checkpoint(folder / "uniform.pt", dataset="hello", chars="abcdefghij", setup=uniform),
    }


def run_all(*commands):
    """Several real CLI runs at once (each mostly waits on importing torch)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: run_cli(*map(str, args)), commands))


# ---------------------------------------------------------------------------------------------------
# The real command, in a subprocess


def test_sample_and_eval_as_a_user_runs_them(models, tmp_path):
    rng = random.Random(0)
    (tmp_path / "t.txt").write_text("".join(rng.choice("abcdefghij") for _ in range(3000)), encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    seeded = ["sample", models["hello"], "--seed", "5", "--length", "40", "--prime", "he", "--temp", "1"]
    stdout, to_file, records, warned, strict, uniform_eval, split, empty = run_all(
        seeded, [*seeded, "--out", tmp_path / "s.txt"],
        ["sample", models["coin"], "-N", "20", "--prime", "aab", "--seed", "1"],
        ["sample", models["hello"], "--prime", "hé!", "--length", "5", "--seed", "0"],
        ["sample", models["hello"], "--prime", "hé!", "--strict"],
        ["eval", models["uniform"], "--file", tmp_path / "t.txt", "--json", "--context", "4", "--compare-compressors"],
        ["eval", models["hello"], "--split", "test"],
        ["eval", models["hello"], "--file", tmp_path / "empty.txt"])

    # same seed, same text, in another process and into --out
    assert stdout.returncode == 0, stdout.stderr
    assert len(stdout.stdout) == 2 + 40 + 1 and stdout.stdout.startswith("he") and stdout.stderr == ""
    assert to_file.stdout == "" and (tmp_path / "s.txt").read_text(encoding="utf-8") == stdout.stdout

    # records: one per line, and the novelty summary on stderr
    lines = records.stdout.splitlines()
    assert len(lines) == 20 and all(r.startswith("aab") and set(r[3:]) <= {"b"} for r in lines)
    novel = sum(r != "aabb" for r in lines)  # the anbn training split holds a^n b^n only
    assert records.stderr.strip() == (f"20 records generated, {len(set(lines))} distinct, {novel} novel "
                                      "(not in the anbn training split)")

    # a prime with characters the model never saw: a warning naming them, or with --strict an error
    assert warned.returncode == 0 and warned.stdout.startswith("hé!") and len(warned.stdout) == 3 + 5 + 1
    assert warned.stderr.strip() == "warning: the prime has 2 character(s) the model never saw, read as <unk>: 'é', '!'"
    assert_user_error((strict.returncode, strict.stdout, strict.stderr), "--strict", "'é', '!'")

    # a uniform model on uniform random text: perplexity = vocabulary size (10 characters + <eos> + <unk>)
    assert uniform_eval.returncode == 0, uniform_eval.stderr
    score = json.loads(uniform_eval.stdout)
    assert (score["chars"], score["unk"], score["context"]) == (3000, 0, 4)
    assert score["perplexity"] == pytest.approx(12, rel=1e-5) and score["bpc"] == pytest.approx(math.log2(12), rel=1e-5)
    assert set(score["compressors"]) == {"gzip", "bz2", "xz"}
    assert all(math.log2(10) - 0.2 < bpc < 5 for bpc in score["compressors"].values())

    assert split.returncode == 0, split.stderr
    assert split.stdout.splitlines()[0] == ("hello test split: 499 characters (0 unknown), state carried over the "
                                            "whole text, exactly as one stream")
    assert split.stdout.splitlines()[1].startswith("  nll ")
    assert_user_error((empty.returncode, empty.stdout, empty.stderr), "empty.txt: no characters to score")


# ---------------------------------------------------------------------------------------------------
# Variations, through the same entry point in this process


def test_out_dash_is_standard_output(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["sample", models["hello"], "--length", "20", "--seed", "3"]
    assert cli(*args, "--out", "-") == cli(*args) and list(tmp_path.iterdir()) == []  # no file named '-'


def test_a_different_seed_gives_different_text(models):
    args = ["sample", models["hello"], "--length", "40", "--temp", "1"]
    assert cli(*args, "--seed", "5")[1] != cli(*args, "--seed", "6")[1]
    assert cli(*args, "--seed", "5")[1] == cli(*args, "--seed", "5")[1]


def test_a_sample_drawn_without_a_seed_names_the_seed_that_draws_it_again(models, tmp_path):
    for model, extra in (("hello", []), ("coin", ["-N", "5"])):
        args = ["sample", models[model], "--length", "40", "--temp", "1", *extra]
        status, out, err = cli(*args)
        seed = err.splitlines()[0].split()[1]  # named before the first character
        assert status == 0 and err.splitlines()[0] == f"seed {seed} (the same samples again: --seed {seed})"
        again = cli(*args, "--seed", seed)
        assert again[1] == out and "seed" not in again[2]
        status, _, err = cli(*args, "--out", tmp_path / "s.txt")  # a file: named once it is in place
        seed = err.splitlines()[-1].split()[1]
        assert status == 0 and err.splitlines()[-1] == f"seed {seed} (the same samples again: --seed {seed})"
        assert cli(*args, "--seed", seed)[1] == (tmp_path / "s.txt").read_text(encoding="utf-8")
    status, _, err = cli("sample", models["hello"], "--length", "40", "--temp", "0")  # draws nothing at random
    assert status == 0 and "seed" not in err, err


def test_a_reader_that_stops_early_ends_a_printing_command_as_it_ends_cat(models, tmp_path):
    """`rnnlm sample RUN | head`: killed by SIGPIPE (status 141 in the shell), nothing on stderr but the seed that
    draws the sample again; it was status 1, and the seed came only after the whole sample."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (tmp_path / "t.txt").write_text("hello " * 50, encoding="utf-8")
    for args in (["sample", models["hello"], "--length", "1000000"], ["sample", models["coin"], "-N", "1000000"],
                 ["eval", models["hello"], "--file", tmp_path / "t.txt"], ["config"], ["data", "list"]):
        proc = subprocess.Popen([sys.executable, "-m", "rnnlm", *map(str, args)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.close()  # as head does once it has what it wants
        try:
            assert proc.wait(timeout=120) == -signal.SIGPIPE, args
        finally:
            proc.kill()
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and all(line.startswith(("seed ", "warning: ")) for line in err.splitlines())
        assert (err.startswith("seed ")) == (args[0] == "sample")


def test_a_record_that_ends_at_the_length_limit_is_not_counted_as_cut(models):
    """The coin model ends a record or adds a b, one half each: of the records that reach --length 2 past the prime
    (one in four), half end right there, whole; they were all counted as cut."""
    status, out, err = cli("sample", models["coin"], "-N", "2000", "--prime", "aab", "--length", "2", "--seed", "7")
    cut = int(err.split("; ")[1].split()[0])
    assert status == 0 and 170 < cut < 330, err  # about 2000 / 8 (and 500 counted so)
    assert max(len(line) for line in out.splitlines()) == len("aab") + 2


def test_sampling_and_evaluating_import_no_compiler(tmp_path):
    """torch._dynamo takes seconds to import: a checkpoint's check that built the model on the meta device imported
    it for every `rnnlm sample` and `rnnlm eval` (its initialisers run through torch._refs there)."""
    import os
    import subprocess
    import sys

    script = ("import sys; from rnnlm.cli import main; sys.argv = ['rnnlm', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch._dynamo' in sys.modules, file=sys.stderr)")
    for encoding in ("onehot", "embedding"):
        made = make_checkpoint(tmp_path / f"{encoding}.pt", dataset="hello", chars="helo", encoding=encoding)
        for args in (["sample", made, "--length", "5", "--seed", "1"], ["eval", made]):
            done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
            assert done.stderr.strip().splitlines()[-1] == "False", done.stderr


def test_unique_and_novel_filter_the_records(models):
    args = ["sample", models["coin"], "-N", "30", "--prime", "aab", "--seed", "2"]
    status, out, err = cli(*args)
    records = out.splitlines()
    for flags, first in ((["--unique", "--novel"], list(dict.fromkeys(r for r in records if r != "aabb"))),
                         (["--unique"], list(dict.fromkeys(records)))):
        status, out, err = cli(*args, *flags)
        kept = out.splitlines()
        # The first 30 draws are the unfiltered run's; more are drawn until 30 pass (or 300 were drawn).
        assert status == 0 and kept[:len(first)] == first and len(set(kept)) == len(kept)
        assert len(first) < 30 and "aabb" not in kept[len(first):]
        assert len(kept) == 30 or "fewer than the 30 asked for" in err
        assert f"; wrote {len(kept)}" in err


def test_many_samples_are_drawn_a_batch_at_a_time_and_come_out_the_same(models, monkeypatch):
    """-N of any size is drawn a few thousand rows at a time (each row has its own generator and state: a million
    names in one batch took gigabytes first); sample i is still seed + i's, whatever the batches."""
    from rnnlm import sample

    args = ["sample", models["coin"], "-N", "7", "--seed", "3", "--length", "8"]
    whole = cli(*args)
    batches, generate = [], sample.generate
    monkeypatch.setattr(sample, "generate", lambda *a, **k: (batches.append((a[3].num_samples,
                                                                             a[3].seed + k.get("first", 0))),
                                                             generate(*a, **k))[1])
    monkeypatch.setattr(sample, "DRAW_IDS", 16)  # two rows a batch at --length 8
    assert cli(*args) == whole and len(whole[1].splitlines()) == 7
    assert batches == [(2, 3), (2, 5), (2, 7), (1, 9)]  # sample i drawn from seed 3 + i
    first = list(dict.fromkeys(whole[1].splitlines()))  # --unique: the same draws, repeats dropped, then more
    batches.clear()
    kept = cli(*args, "--unique")[1].splitlines()
    assert kept[:len(first)] == first and len(set(kept)) == len(kept)
    assert all(n <= 2 for n, _ in batches) and sum(n for n, _ in batches) <= sample.MAX_DRAWS * 7


def test_a_hundred_thousand_samples_cost_their_text_not_a_generator_each(models, tmp_path):
    """-N 100000 drew all rows as one batch, a generator and a state each: 620 MB at peak for this two-letter model
    (a makemore user asking for a million names needed gigabytes); in batches it stays near the process's own size."""
    (status, _, err), peak = measured("sample", models["coin"], "-N", "100000", "--length", "10", "--seed", "1",
                                      "-o", tmp_path / "out.txt", timeout=300)
    assert status == 0 and "100000 records generated" in err, err
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 100000 and peak < 400, peak


def test_eval_file_reads_a_folder_or_a_glob_as_data_path_does(models, tmp_path):
    """`--file notes` said "is a directory", `--file 'notes/*.md'` "no such file": data.path takes both."""
    import json

    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("hello ", encoding="utf-8")
    (notes / "sub" / "b.md").write_text("hole hello", encoding="utf-8")
    (notes / "c.png").write_bytes(b"\x89PNG\0\0")  # binary: left out, as data.path leaves it out
    (tmp_path / "joined.txt").write_text("hello hole hello", encoding="utf-8")
    joined = json.loads(cli("eval", models["hello"], "--file", tmp_path / "joined.txt", "--json")[1])
    for given in (notes, f"{notes}/**/*.md"):
        status, out, err = cli("eval", models["hello"], "--file", given, "--json")
        assert status == 0 and err.count("warning: skipped 1 binary file(s)") == (given == notes), err  # once
        assert json.loads(out)["chars"] == joined["chars"] == 16  # a.md, then sub/b.md, as one stream
        assert json.loads(out)["nll"] == pytest.approx(joined["nll"], abs=1e-6)
    assert_user_error(cli("eval", models["hello"], "--file", f"{notes}/*.txt"), f"--file {notes}/*.txt matches no file")
    status, _, err = cli("eval", models["hello"], "--file", f"{notes}/*.png")  # it was said of data.path
    assert status == 2 and f"{notes}/*.png: no text to read (1 file(s), none with text); give --file a folder" in err
    assert_user_error(cli("eval", models["coin"], "--file", notes),
                      f"--file {notes}: a folder or pattern; this model reads one record per line of one file")


def test_eval_file_dash_reads_standard_input(models, tmp_path, monkeypatch):
    """`--file -` is standard input, as `--prime-file -` is (it was "-: no such file")."""
    import io
    import json
    import sys

    (tmp_path / "a.txt").write_text("hello hello", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"hello hello")))
    piped = cli("eval", models["hello"], "--file", "-", "--json")
    assert piped[0] == 0, piped[2]
    given = json.loads(cli("eval", models["hello"], "--file", tmp_path / "a.txt", "--json")[1])
    assert json.loads(piped[1])["nll"] == given["nll"] and json.loads(piped[1])["chars"] == 11
    # the three commands that read `-` name it alike (eval said "-:", sample "standard input (--prime-file -):")
    for args in (["eval", models["hello"], "--file", "-"], ["sample", models["hello"], "--prime-file", "-"],
                 ["viz", models["hello"], "--file", "-", "--out", tmp_path / "v.html"]):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"he\xffllo")))
        assert_user_error(cli(*args), "error: standard input: not UTF-8 text (byte offset 2")


def test_a_file_of_a_byte_order_mark_alone_has_nothing_to_score(models, tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    for flags in ([], ["--compare-compressors"]):
        assert_user_error(cli("eval", models["hello"], "--file", tmp_path / "bom.txt", *flags),
                          f"{tmp_path / 'bom.txt'}: no characters to score (the file holds a byte-order mark alone)")
    assert_user_error(cli("eval", models["coin"], "--file", tmp_path / "bom.txt"),  # a records model
                      f"{tmp_path / 'bom.txt'}: no records (the file holds a byte-order mark alone)")


def test_how_a_text_up_to_the_exact_limit_is_read_and_counted(models, tmp_path, monkeypatch):
    """Up to EXACT_MAX scored characters are read exactly as one stream (README, --help); the start id before them
    is not one of them."""
    from rnnlm import evaluate

    monkeypatch.setattr(evaluate, "EXACT_MAX", 40)
    (tmp_path / "one.txt").write_text("h", encoding="utf-8")
    assert cli("eval", models["hello"], "--file", tmp_path / "one.txt")[1].startswith(
        f"{tmp_path / 'one.txt'}: 1 character (0 unknown), state carried over the whole text")
    for n, how in ((40, "exactly as one stream"), (41, "state carried in 41 streams")):
        (tmp_path / "t.txt").write_text("hello " * 6 + "hello"[:n - 36], encoding="utf-8")
        status, out, err = cli("eval", models["hello"], "--file", tmp_path / "t.txt")
        assert status == 0 and out.startswith(f"{tmp_path / 't.txt'}: {n} characters") and how in out.splitlines()[0]


def test_eval_reports_unknown_characters_and_several_files(models, tmp_path):
    (tmp_path / "a.txt").write_text("hello hello", encoding="utf-8")
    (tmp_path / "b.txt").write_text("hellö", encoding="utf-8")
    files = ["--file", tmp_path / "a.txt", "--file", tmp_path / "b.txt"]
    status, out, err = cli("eval", models["hello"], *files)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 'a.txt'}: 11 characters (1 unknown), state carried over the whole text, exactly as one stream"
    assert lines[2].startswith(f"{tmp_path / 'b.txt'}: 5 characters (1 unknown), ")
    assert lines[4] == "total: 16 characters (2 unknown)"
    assert "a.txt: 1 character(s) the model never saw, each scored as <unk>: ' '" in err and "'ö'" in err
    score = json.loads(cli("eval", models["hello"], *files, "--json")[1])
    assert (score["chars"], score["unk"], score["unknown_chars"]) == (16, 2, [" ", "ö"])
    assert [p["chars"] for p in score["parts"]] == [11, 5]


def test_a_split_whose_first_character_alone_is_unknown_warns_of_nothing(tmp_path):
    """A stream split's first character is context, never scored: it was named as a character scored as <unk>
    ("0 character(s) the model never saw ... 'Z'")."""
    (tmp_path / "z.txt").write_text("ab" * 25 + "Z" + "ba" * 24 + "b", encoding="utf-8")  # val starts at the Z
    assert cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={tmp_path / 'z.txt'}",
               "data.splits=[0.5, 0.5, 0.0]", "train.max_steps=1", "train.seq_len=8", "train.batch_size=2",
               "model.hidden_size=8", "--out", tmp_path, "--name", "z", "--data-dir", tmp_path / "data", "-q")[0] == 0
    status, out, err = cli("eval", tmp_path / "z", "--split", "val", "--data-dir", tmp_path / "data")
    assert status == 0 and out.startswith("text val split: 49 characters (0 unknown)") and err == "", err


def test_a_split_of_one_character_has_nothing_to_score(tmp_path):
    """A stream split's first character is context: one of a single character is not empty, and scores nothing."""
    (tmp_path / "t.txt").write_text("ab" * 50, encoding="utf-8")
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={tmp_path / 't.txt'}",
                         "data.splits=[0.99, 0.01, 0.0]", "train.max_steps=1", "train.seq_len=8", "train.batch_size=2",
                         "model.hidden_size=8", "--out", tmp_path, "--name", "r", "--data-dir", tmp_path / "data", "-q")
    assert status == 0 and "warning: the validation split has nothing to score" in err, err
    assert_user_error(cli("eval", tmp_path / "r", "--split", "val", "--data-dir", tmp_path / "data"),
                      "the val split of text has nothing to score")


def test_uniform_model_with_the_state_carried(models, tmp_path):
    rng = random.Random(1)
    (tmp_path / "t.txt").write_text("".join(rng.choice("abcdefghij") for _ in range(2000)), encoding="utf-8")
    score = json.loads(cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--json")[1])
    assert score["perplexity"] == pytest.approx(12, rel=1e-5) and score["context"] is None
    plain = cli("eval", models["uniform"], "--file", tmp_path / "t.txt")[1].splitlines()
    led = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--perplexity")[1].splitlines()
    assert plain[1].split()[0] == "nll" and led[1].split()[:2] == ["perplexity", "12.000"]  # --perplexity leads with it
    assert sorted(plain[1].split()) == sorted(led[1].split())  # and reports the same measures
    status, out, err = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "4")
    assert status == 0 and out.splitlines()[0].endswith("state carried in 4 streams, each from the 500 characters "
                                                         "before it")  # rows of 500: a warm-up no longer than a row
    assert "perplexity 12.000" in out
    # more streams than a text fills: said as read (2,000 targets, every character after the newline read first, in
    # 2,000 rows of 1, each after 1 character)
    status, out, err = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "5000")
    assert status == 0 and out.splitlines()[0].endswith("state carried in 2,000 streams, each from the 1 character "
                                                         "before it")
    assert json.loads(cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "700",
                          "--json")[1])["parts"][0]["streams"] == 667  # rows of 3: ceil(2000 / 3)
    assert_user_error(cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "0"), "--streams 0")
    padded = make_checkpoint(tmp_path / "pad.pt", dataset="anbn", chars="ab", records_mode="pad")
    (tmp_path / "r.txt").write_text("ab\naabb\n", encoding="utf-8")  # each record alone: --streams was dropped unsaid
    assert_user_error(cli("eval", padded, "--file", tmp_path / "r.txt", "--streams", "4"),
                      "--streams 4: this model reads each record on its own")


@pytest.mark.parametrize("args, fragments", [
    (["sample", "{hello}", "--length", "0"], ["--length 0"]),
    (["sample", "{hello}", "--temp", "-0.5"], ["--temp -0.5"]),
    (["sample", "{hello}", "--top-p", "0"], ["--top-p 0.0"]),
    (["sample", "{hello}", "--top-p", "1.5"], ["--top-p 1.5"]),
    (["sample", "{hello}", "--top-k", "-1"], ["--top-k -1: must be an integer >= 1, or off (null in a config, "
                                              "0 as --top-k)"]),
    (["sample", "{hello}", "--prime-file", "{tmp}/none.txt"], ["none.txt: no such file"]),
    (["sample", "{hello}", "--prime", "x", "--prime-file", "{tmp}/none.txt"], ["not both"]),
    (["sample", "{hello}", "--novel"], ["line-per-record"]),
    (["sample", "{hello}", "--data-path", "{tmp}"], ["--data-path gives a moved records corpus", "stream corpus"]),
    (["sample", "{coin}", "--prime", "ab\nab"], ["line break", "echo -n or printf writes none", "one record per line"]),
    (["sample", "{coin}", "--prime", "ab\r"], ["line break", "one record per line"]),  # printed as a record holding it
    (["sample", "{hello}", "--out", "{tmp}"], ["--out", "is a folder"]),
    (["viz", "{hello}", "--text", "he", "--out", "-"], ["--out -: give the path of a file to write"]),
    (["sample", "{hello}", "--device", "gpu"], ["--device=gpu", "auto, cpu, cuda, cuda:N"]),
    (["eval", "{hello}", "--device", "gpu"], ["--device=gpu", "auto, cpu, cuda, cuda:N"]),
    (["eval", "{hello}", "--context", "0"], ["--context 0"]),
    (["eval", "{hello}", "--split", "val", "--file", "{tmp}/none.txt"], ["--split or --file"]),
    (["eval", "{hello}", "--split", "dev"], ["choose train, val or test"]),
    (["eval", "{hello}", "--file", "{tmp}/none.txt"], ["none.txt: no such file"]),
])
def test_errors_are_one_line_and_exit_2(models, tmp_path, args, fragments):
    status, out, err = cli(*[a.format(hello=models["hello"], coin=models["coin"], tmp=tmp_path) for a in args])
    assert_user_error((status, out, err), *fragments)


def test_sample_out_writes_what_stdout_would_show(models, tmp_path):
    args = ["sample", models["hello"], "--length", "60", "--seed", "3", "-N", "2"]
    status, shown, err = cli(*args)
    target = tmp_path / "samples.txt"
    status, out, err = cli(*args, "--out", target)
    assert status == 0 and out == "" and target.read_text(encoding="utf-8") == shown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.txt"]


class FailingFile:
    """A file that takes `writes` writes, then raises `error` (a disk that fills up part way)."""

    def __init__(self, file, writes, error):
        self.file, self.writes, self.error = file, writes, error

    def write(self, text):
        self.writes -= 1
        if self.writes < 0:
            raise self.error
        return self.file.write(text)

    def flush(self):
        self.file.flush()


@pytest.mark.parametrize("how", ["refused inside the sampler", "disk full part way", "ctrl-c part way",
                                 "sigterm part way"])
def test_a_sample_that_fails_part_way_leaves_an_existing_out_file_as_it_was(models, tmp_path, monkeypatch, how):
    import contextlib
    import errno

    from rnnlm import atomic
    from rnnlm.sample import _Printer

    if how == "disk full part way":
        real = atomic.atomic_file

        @contextlib.contextmanager
        def filling(target, encoding=None):
            with real(target, encoding) as f:
                yield FailingFile(f, 10, OSError(errno.ENOSPC, "No space left on device"))
        monkeypatch.setattr(atomic, "atomic_file", filling)
    if how in ("ctrl-c part way", "sigterm part way"):
        real_write = _Printer._write
        count = iter(range(10**6))

        def interrupted(self, text):
            if next(count) == 10:
                if how == "ctrl-c part way":
                    raise KeyboardInterrupt
                # `kill`: with Python's default disposition it would end this test process where it stands
                assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, "SIGTERM would not unwind"
                signal.raise_signal(signal.SIGTERM)
            real_write(self, text)
        monkeypatch.setattr(_Printer, "_write", interrupted)
    target = tmp_path / "samples.txt"
    target.write_text("yesterday's samples\n", encoding="utf-8")
    extra = ["--novel"] if how == "refused inside the sampler" else []
    status, out, err = cli("sample", models["hello"], "--length", "50", "--out", target, *extra)
    if how in ("ctrl-c part way", "sigterm part way"):  # typer's quiet exit for Ctrl-C; it said nothing of the file
        assert status == (130 if how == "ctrl-c part way" else 143) and "Traceback" not in err
        assert err.splitlines()[-1] == f"stopped: --out {target} was left as it was", err
    else:
        assert_user_error((status, out, err), "line-per-record" if extra else "could not write (No space left on device); "
                                                                  "nothing was replaced")
    assert target.read_text(encoding="utf-8") == "yesterday's samples\n"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.txt"]  # no temporary file left behind


def test_out_in_a_missing_folder_is_refused_and_creates_nothing(models, tmp_path):
    status, out, err = cli("sample", models["hello"], "--out", tmp_path / "new" / "s.txt")
    assert_user_error((status, out, err), "--out", "does not exist")
    assert not any(tmp_path.iterdir())


def test_out_never_replaces_a_file_the_run_keeps(tmp_path):
    """`--out` names any file to write, but not a run's own config, metrics or checkpoints: replacing config.yaml
    with samples made the run vanish from `rnnlm runs`."""
    assert cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=2", "model.hidden_size=8", "--out", tmp_path,
               "--name", "run", "-q")[0] == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for name in ("config.yaml", "metrics.jsonl", "best.pt"):
        assert_user_error(cli("sample", run, "-n", "2", "--out", run / name), f"--out {run / name}: a file of the run")
        assert_user_error(cli("viz", run, "--text", "ab", "--out", run / name), "a file of the run")
    for name in ("step-000010.pt", "status.json"):  # not there yet: creating one would change the run as much
        assert (run / name).exists() is (name == "status.json")
        assert_user_error(cli("sample", run, "-n", "2", "--out", run / name), "a file of the run")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert cli("sample", run, "-n", "2", "--out", run / "samples.txt")[0] == 0  # a new file beside them is fine


def test_out_never_replaces_what_the_command_reads(models, tmp_path):
    """A checkpoint outside a run folder, a viz page's text file and a sample's prime file were overwritten by the
    command reading them (`rnnlm viz model.pt --file notes.txt --out notes.txt`)."""
    import shutil

    model = tmp_path / "model.pt"
    shutil.copy(models["hello"], model)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(notes)
    before = {p.name: p.read_bytes() for p in (model, notes)}
    assert_user_error(cli("sample", model, "-n", "2", "--out", model), f"--out {model} is {model}, which this "
                      "command reads; write elsewhere")
    assert_user_error(cli("sample", model, "-n", "2", "--prime-file", notes, "--out", link), "which this command reads")
    assert_user_error(cli("viz", model, "--file", notes, "--out", notes), "which this command reads")
    assert_user_error(cli("viz", model, "--text", "he", "--out", model), "which this command reads")
    assert {p.name: p.read_bytes() for p in (model, notes)} == before


def test_a_full_disk_while_writing_out_is_a_message_and_keeps_the_old_file(models, tmp_path, monkeypatch):
    import errno
    import os

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "samples.txt"
    target.write_text("yesterday's samples\n", encoding="utf-8")
    monkeypatch.setattr(os, "replace", full)  # the rename that would put the finished file in place
    status, out, err = cli("sample", models["hello"], "--length", "20", "--out", target)
    assert_user_error((status, out, err), "No space left on device", "nothing was replaced")
    assert target.read_text(encoding="utf-8") == "yesterday's samples\n"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.txt"]


def test_sampling_a_few_samples_uses_one_thread_unless_told(models):
    """One step at batch 1 is too small to share: a second thread gains little on a quiet machine and loses much on a
    busy one (README "Sampling and evaluation"). --threads overrides."""
    import torch

    try:
        torch.set_num_threads(2)
        assert cli("sample", models["hello"], "--length", "5", "--device", "cpu")[0] == 0
        assert torch.get_num_threads() == 1
        assert cli("sample", models["hello"], "--length", "5", "--device", "cpu", "--threads", "2")[0] == 0
        assert torch.get_num_threads() == 2
        assert_user_error(cli("sample", models["hello"], "--threads", "0"), "invalid value for '--threads'")
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_data_dir_that_does_not_exist_is_refused_not_made(models, tmp_path, command):
    missing = tmp_path / "no" / "such"
    assert_user_error(cli(command, models["coin"], "--data-dir", missing), f"--data-dir {missing}: no such folder")
    assert not (tmp_path / "no").exists()


def test_a_stdout_that_cannot_show_the_text_is_one_line(tmp_path):
    """PYTHONIOENCODING=ascii (or a narrow terminal) and a model that writes é: say so and how to get the text."""
    model = make_checkpoint(tmp_path / "e.pt", dataset="hello", chars="é", setup=constant_logits(é=0.0))
    result = run_cli("sample", str(model), "--length", "5", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 2, result.stderr
    seed, *error = result.stderr.strip().splitlines()  # the seed is named before the first character is written
    assert seed.startswith("seed ") and error == [
        "error: standard output's encoding (ascii) cannot show 'é'; set PYTHONIOENCODING=utf-8, or write to a file "
        "with --out FILE"]


def test_a_config_override_with_a_slash_in_its_value_is_not_taken_for_a_file():
    status, out, err = cli("config", "sample.prime=a//b/")
    assert status == 0, err
    assert "  prime: a//b/\n" in out  # as typed, not as a path would be normalised


def test_a_long_prime_costs_no_more_memory_than_a_short_one(tmp_path):
    """A whole book as --prime-file: read as evaluation reads a text (no logits kept, once for all -N rows); a
    200,000-character prime took 6 GB into a 1x256 LSTM for 4 samples when it was read in one call."""
    model = make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="ab", hidden_size=256, seed=2)
    prime = tmp_path / "prime.txt"
    prime.write_text("ab" * 100_000, encoding="utf-8")
    (status, out, err), peak = measured("sample", model, "--prime-file", prime, "--length", "5", "-N", "4",
                                        "--seed", "1")
    assert status == 0, err
    assert peak < 700, peak  # MB: torch and the model; the prime's 200,000 steps of gates would be GBs
    assert out.count("ab" * 100_000) == 4


def test_novel_reads_a_moved_records_corpus_from_data_path_and_warns_of_a_changed_one(tmp_path):
    """--novel needs the training split: a moved file is given with --data-path, as eval takes it (the advice was
    --data-dir, which cannot help); one changed since training is counted against as it is now, with a warning."""
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{n}\n" for n in ["emma", "olivia", "ava", "mia", "zoe", "lily", "anna", "ella",
                                                 "mila", "nora", "luna", "leah"]), encoding="utf-8")
    assert cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=names", f"data.path={names}",
               "train.max_steps=2", "train.batch_size=2", "train.seq_len=8", "model.hidden_size=8", "--out", tmp_path,
               "--name", "r", "--data-dir", tmp_path / "data", "-q")[0] == 0
    run, moved = tmp_path / "r", tmp_path / "moved.txt"
    names.rename(moved)
    args = ["sample", run, "-N", "3", "--novel", "--seed", "1"]
    assert_user_error(cli(*args), f"data.path={names}: no such file or directory",
                      f"rnnlm sample {run / 'best.pt'} --data-path WHERE_IT_IS")
    status, out, err = cli(*args, "--data-path", moved)
    assert status == 0 and len(out.splitlines()) == 3 and "novel (not in the names training split)" in err, err
    assert_user_error(cli("sample", run, "-N", "1", "--data-path", tmp_path / "nope"),  # asked for: --novel or not
                      f"--data-path {tmp_path / 'nope'}: no such file or directory")
    play = tmp_path / "play.txt"  # the wrong file: not a names list (told to delete its empty lines in place, it was)
    play.write_text("ROMEO:\nBut soft!\n\nJULIET:\nAy me.\n", encoding="utf-8")
    for command in (["sample", run, "-N", "1"], ["eval", run, "--split", "val"]):
        status, _, err = cli(*command, "--data-path", play)
        assert status == 2 and err.startswith(f"error: --data-path {play} does not hold the text the run trained on "
                                              "(as the run's names corpus: line 3 is empty)") and "sed" not in err, err
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "names").write_text("")  # where the store would go: a data root problem, said as one
    assert_user_error(cli("sample", run, "-N", "1", "--data-path", moved, "--data-dir", tmp_path / "blocked"),
                      "error: cannot write the corpus store in", "--data-dir")
    moved.rename(names)
    with names.open("a", encoding="utf-8") as f:
        f.write("xyz\n")
    status, out, err = cli(*args)
    assert status == 0 and "warning: the names corpus has changed since this checkpoint was written" in err, err


def test_eval_with_one_character_of_context_says_so_in_the_singular(models, tmp_path):
    (tmp_path / "t.txt").write_text("abcabc", encoding="utf-8")
    status, out, err = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--context", "1")
    assert status == 0, err
    assert out.splitlines()[0].endswith(", at most 1 character of context")


def test_top_k_0_turns_off_the_runs_top_k(tmp_path):
    """A run trained with sample.top_k had no way back to the whole distribution: --top-k 0 was refused."""
    path = make_checkpoint(tmp_path / "k.pt", dataset="hello", chars="abcd",
                           setup=constant_logits(a=1.0, b=0.0, c=0.0, d=0.0))
    point = ckpt.load(path)
    point.config.sample.top_k = 1
    ckpt.save([path], point)
    narrowed = cli("sample", path, "--prime", "a", "--length", "60", "--seed", "3", "--temp", "1")
    opened = cli("sample", path, "--prime", "a", "--length", "60", "--seed", "3", "--temp", "1", "--top-k", "0")
    assert narrowed[0] == opened[0] == 0, narrowed[2] + opened[2]
    assert set(narrowed[1].strip()) == {"a"} and set(opened[1].strip()) == set("abcd")


def test_eval_refuses_context_with_streams_and_warns_of_streams_too_many_for_the_text(models, tmp_path):
    """--streams was dropped without a word when --context was given; 10,000 streams over a 10,000-character text
    each read from one character before it, and the score (far worse than exact) came without a warning."""
    (tmp_path / "t.txt").write_text("abcdefghij" * 1000, encoding="utf-8")
    assert_user_error(cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--context", "8", "--streams", "4"),
                      "--context", "--streams", "give one of them")
    status, out, err = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "10000")
    assert status == 0, err
    assert "state carried in 10,000 streams, each from the 1 character before it" in out
    assert err.strip() == (f"warning: {tmp_path / 't.txt'}: each of the 10,000 streams reads from only 1 character(s) "
                           "before it (the text is short for so many), which scores it worse than reading it exactly; "
                           "give fewer --streams, or --streams 1")
    status, out, err = cli("eval", models["uniform"], "--file", tmp_path / "t.txt", "--streams", "4")
    assert status == 0 and err == "", err


def test_out_never_replaces_the_text_the_run_trained_on(tmp_path):
    """`rnnlm sample RUN --novel --out names.txt` replaced the corpus it had just compared the samples with, and
    with it what the run's resume reads; a file in a corpus folder, or where --data-path says the text moved, too."""
    names, notes = tmp_path / "names.txt", tmp_path / "notes"
    names.write_text("".join(f"{n}\n" for n in ["emma", "olivia", "ava", "mia", "zoe", "lily", "anna", "ella"]),
                     encoding="utf-8")
    notes.mkdir()
    (notes / "a.txt").write_text("abcab " * 40, encoding="utf-8")
    common = ["train.max_steps=2", "train.batch_size=2", "train.seq_len=8", "model.hidden_size=8", "--out", tmp_path,
              "--data-dir", tmp_path / "data", "-q"]
    for name, data in (("r", ["data.dataset=names", f"data.path={names}"]),
                       ("s", ["data.dataset=text", f"data.path={notes}"])):
        assert cli("train", REPO / "configs" / "tiny.yaml", *data, *common, "--name", name)[0] == 0
    before = {p: p.read_bytes() for p in (names, notes / "a.txt")}
    assert_user_error(cli("sample", tmp_path / "r", "-N", "3", "--novel", "--out", names),
                      f"--out {names} is {names}, part of the text the run trained on")
    assert_user_error(cli("sample", tmp_path / "s", "-n", "5", "--out", notes / "a.txt"), "the text the run trained on")
    assert_user_error(cli("viz", tmp_path / "s", "--text", "ab", "--out", notes / "a.txt"), "the text the run trained on")
    moved = tmp_path / "moved.txt"
    names.rename(moved)
    assert_user_error(cli("sample", tmp_path / "r", "-N", "3", "--data-path", moved, "--out", moved),
                      "the text the run trained on")
    moved.rename(names)
    assert {p: p.read_bytes() for p in (names, notes / "a.txt")} == before
    # a new file the corpus's folder or glob would read changes the text: `viz` wrote viz.html into a project read
    # as data.path=., and the run's resume refused the corpus it found changed
    assert_user_error(cli("sample", tmp_path / "s", "-n", "5", "--out", notes / "new.txt"),
                      f"--out {notes / 'new.txt'} would become part of the text the run trained on (data.path={notes}")
    assert_user_error(cli("viz", tmp_path / "s", "--text", "ab", "--out", notes / "page.html"), "would become part")
    assert sorted(p.name for p in notes.iterdir()) == ["a.txt"]
    assert cli("sample", tmp_path / "s", "-n", "5", "--out", notes / ".seen.txt")[0] == 0  # hidden: not read
    store_file = next((tmp_path / "data" / "names").glob("store-*/manifest.json"))  # what every command reads
    kept = store_file.read_bytes()
    assert_user_error(cli("sample", tmp_path / "r", "-N", "1", "--out", store_file),
                      f"--out {store_file}: a file of the prepared corpus in {store_file.parent}")
    assert store_file.read_bytes() == kept


def test_out_never_replaces_the_kernel_tarball_a_linux_run_read(tmp_path, monkeypatch):
    """A trial wrote `rnnlm sample RUN --out /usr/src/linux-source-6.1.tar.xz`: the installed tarball the linux run
    had trained from became 32 bytes of sample, and the run's resume, eval and sample broke with it."""
    from rnnlm.data import linux

    installed = tmp_path / "usr" / "src" / "linux-source-6.1.tar.xz"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"the tarball")
    monkeypatch.setattr(linux, "SYSTEM_TARBALLS", str(tmp_path / "usr" / "src" / "linux-source-*.tar.xz"))
    run = make_checkpoint(tmp_path / "run.pt", dataset="linux", chars="int x;")
    (tmp_path / "data").mkdir()
    assert_user_error(cli("sample", run, "-n", "5", "--out", installed, "--data-dir", tmp_path / "data"),
                      f"--out {installed} is {installed}, part of the text the run trained on")
    assert installed.read_bytes() == b"the tarball"


def test_a_carried_state_of_nan_is_read_as_the_zero_state_with_a_warning(tmp_path):
    """A sequential model starts sampling from the state training carried; one that overflowed (NaN) made every
    sample the last character of the vocabulary over and over, exit 0 and no word."""
    import dataclasses

    from rnnlm.state import map_state

    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    assert cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={tmp_path / 't.txt'}",
               "train.max_steps=3", "train.batch_size=2", "train.seq_len=8", "model.hidden_size=8", "--out", tmp_path,
               "--name", "r", "--data-dir", tmp_path / "data", "-q")[0] == 0
    point = ckpt.load(tmp_path / "r" / "last.pt")
    assert point.config.train.batching == "sequential" and point.train.state is not None
    nan = map_state(lambda t: torch.full_like(t, float("nan")), point.train.state)
    for name, state in (("nan.pt", nan), ("zero.pt", None)):
        ckpt.save([tmp_path / name], dataclasses.replace(point, train=dataclasses.replace(point.train, state=state)))
    (_, zero, _), (status, out, err) = (cli("sample", tmp_path / name, "-n", "30", "--seed", "1", "--prime", "the")
                                        for name in ("zero.pt", "nan.pt"))
    assert status == 0 and out == zero, (out, zero)
    assert err.startswith(f"warning: {tmp_path / 'nan.pt'}: the state training carried holds NaN"), err


def test_zero_state_reads_the_prime_from_zero_as_char_rnn_does(tmp_path):
    """A sequential model reads its prime from the state training reached, mid-sentence: on a small corpus it knew
    by heart, `--prime "The"` wrote "The dog." (the end of the sentence training was in), with no way to start from
    zero as char-rnn does."""
    import dataclasses

    from rnnlm.state import map_state

    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    assert cli("train", REPO / "configs" / "tiny.yaml", "data.dataset=text", f"data.path={tmp_path / 't.txt'}",
               "train.max_steps=3", "train.batch_size=2", "train.seq_len=8", "model.hidden_size=8", "--out", tmp_path,
               "--name", "r", "--data-dir", tmp_path / "data", "-q")[0] == 0
    point = ckpt.load(tmp_path / "r" / "last.pt")
    far = map_state(lambda t: torch.full_like(t, 0.9), point.train.state)  # a state far from zero
    ckpt.save([tmp_path / "far.pt"], dataclasses.replace(point, train=dataclasses.replace(point.train, state=far)))
    ckpt.save([tmp_path / "zero.pt"], dataclasses.replace(point, train=dataclasses.replace(point.train, state=None)))
    args = ("-n", "40", "--seed", "1", "--temp", "1", "--prime", "the")
    (_, zero, _), (_, warm, _), (status, out, err) = (cli("sample", tmp_path / name, *args, *more) for name, more in
                                                     (("zero.pt", ()), ("far.pt", ()), ("far.pt", ("--zero-state",))))
    assert status == 0 and out == zero != warm, (out, zero, warm)


def test_out_keeps_a_replaced_files_permissions_and_refuses_a_read_only_one(models, tmp_path):
    """A private (0600) file came back world-readable (0644), and a read-only one was replaced: as root, which
    the permission alone does not stop (the data mirror's copy of a corpus was)."""
    import os

    private, frozen = tmp_path / "private.txt", tmp_path / "frozen.txt"
    for path, mode in ((private, 0o600), (frozen, 0o444)):
        path.write_text("mine\n", encoding="utf-8")
        path.chmod(mode)
    assert cli("sample", models["hello"], "-n", "5", "--out", private)[0] == 0
    assert private.read_text(encoding="utf-8") != "mine\n" and os.stat(private).st_mode & 0o777 == 0o600
    assert_user_error(cli("sample", models["hello"], "-n", "5", "--out", frozen),
                      f"--out {frozen} is read-only (mode 0444); make it writable (chmod u+w)")
    assert frozen.read_text(encoding="utf-8") == "mine\n"
