"""The real command line, run as a user would run it."""

import json

from helpers import REPO, assert_user_error, cli, run_cli


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "eval"):
        assert command in result.stdout


def test_train_sample_eval_end_to_end(tmp_path):
    trained = run_cli("train", str(REPO / "configs" / "tiny.yaml"), "train.max_steps=60", "train.eval_every=30",
                      "--out", str(tmp_path), "--name", "run", "-q")
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "run"
    assert (run / "best.pt").is_file() and (run / "config.yaml").is_file()

    sampled = run_cli("sample", str(run), "--num-samples", "3", "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    lines = sampled.stdout.splitlines()
    assert len(lines) == 3 and all(set(line) <= {"a", "b"} for line in lines)
    assert run_cli("sample", str(run), "--num-samples", "3", "--seed", "1").stdout == sampled.stdout

    evaluated = run_cli("eval", str(run), "--perplexity", "--split", "test", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    score = json.loads(evaluated.stdout)
    assert set(score) >= {"nll", "bpc", "perplexity", "chars", "unk"}
    assert 0 < score["perplexity"] < 2 and score["unk"] == 0  # 4 is a guess among <eos>, <unk>, a, b; one step 3.6


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    """The file is named when the mistake is in it, not when it is on the command line."""
    typo = ("unknown config key model.cel (did you mean 'cell'?); model keys are: cell, nonlinearity, hidden_size, "
            "num_layers, dropout, encoding, embed_dim, forget_bias")
    result = run_cli("train", str(REPO / "configs" / "tiny.yaml"), "model.cel=gru", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {typo}"]
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  cel: gru\n")
    result = run_cli("train", str(config), "model.hidden_size=8", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {config}: {typo}"]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo.yaml"]  # nothing written


def test_a_mistyped_command_line_is_one_line_naming_the_help_to_read():
    """What click itself refuses (an option's value, an unknown option or command, a missing argument) is said as
    rnnlm's own mistakes are: one `error:` line, exit status 2, and where the help is."""
    cases = [(("sample", "run", "--temp", "abc"), "invalid value for '--temp'", "(see 'rnnlm sample -h')"),
             (("sampel",), "no such command 'sampel'. Did you mean 'sample'?", "(see 'rnnlm -h')"),
             (("train", "--bogus"), "no such option: --bogus", "(see 'rnnlm train -h')"),
             (("eval",), "missing argument 'RUN' (see 'rnnlm eval -h')"),
             (("data", "info"), "missing argument", "(see 'rnnlm data info -h')"),
             (("sample", "run", "--temp"), "option '--temp' requires an argument (see 'rnnlm sample -h')")]
    for args, *needles in cases:
        assert_user_error(cli(*args), *needles)
    assert cli("--version")[:2] == (0, "rnnlm 0.1.0\n")
    status, _, err = cli("data")  # a group alone: its help, as before
    assert status == 2 and "Usage: rnnlm data" in err and "fetch" in err


def test_existing_run_is_never_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    result = run_cli("train", str(REPO / "configs" / "tiny.yaml"), "--out", str(tmp_path), "--name", "run")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["keep.txt"]


def test_help_shows_defaults_and_examples_written_in_brackets():
    # rich markup would read "[default: ...]" as a style tag and drop it from the help text
    wide = {"COLUMNS": "200"}  # one help line per option, so no phrase is wrapped
    train = run_cli("train", "--help", env=wide)
    assert "[default: config name + time]" in train.stdout and "[default: $RNNLM_DATA_MIRROR]" in train.stdout
    fetch = run_cli("data", "fetch", "--help", env=wide)
    assert "data.subdirs=[kernel]" in fetch.stdout


def test_python_dash_m_works():
    result = run_cli("train", "--help")
    assert result.returncode == 0 and "--resume" in result.stdout


def test_the_demo_config_trains_on_genesis_and_writes_verses(tmp_path):
    """`make demo`'s two commands, with a smaller model and budget: the built-in corpus needs no download."""
    trained = run_cli("train", str(REPO / "configs" / "demo.yaml"), "model.hidden_size=32", "model.embed_dim=8",
                      "train.max_time=3", "--out", str(tmp_path), "--name", "demo", "-q", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    sampled = run_cli("sample", str(tmp_path / "demo"), "--seed", "1", cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    text = sampled.stdout
    assert text.startswith("1:1 ") and len(text) == len("1:1 ") + 400 + 1  # the demo's prime and sample.length
    genesis = (REPO / "rnnlm" / "data" / "genesis.txt").read_text(encoding="utf-8")
    assert set(text) <= set(genesis)


def test_config_prints_paths_as_a_run_records_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = cli("config", "data.dataset=text", "data.path=notes/a.txt", "train.init_from=runs/r")
    assert status == 0, err
    assert f"path: {tmp_path / 'notes' / 'a.txt'}\n" in out and f"init_from: {tmp_path / 'runs' / 'r'}\n" in out


def test_config_of_a_run_directory_is_the_config_it_trains_with(tmp_path):
    """It was "cannot be read (it is a directory)"."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model:\n  hidden_size: 24\n", encoding="utf-8")
    status, out, err = cli("config", tmp_path / "run", "train.lr=0.5")
    assert status == 0 and "  hidden_size: 24\n" in out and "  lr: 0.5\n" in out, err


def test_train_given_a_run_folder_says_how_to_go_on(tmp_path):
    """It was "config file ... cannot be read (it is a directory)": a run folder is given either for its config or
    to be continued."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model:\n  hidden_size: 24\n", encoding="utf-8")
    (tmp_path / "run" / ".lock").write_text("", encoding="utf-8")
    assert_user_error(cli("train", tmp_path / "run"), f"error: {tmp_path / 'run'} is a folder: for a new run from its "
                      f"config, give {tmp_path / 'run' / 'config.yaml'}; to continue the run in it: rnnlm train "
                      f"--resume {tmp_path / 'run'}")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "config.yaml"]


def test_train_given_a_checkpoint_an_init_from_alone_or_overrides_first_says_the_command_meant(tmp_path, monkeypatch):
    """A user trial: `rnnlm train RUN/best.pt` said "not UTF-8 text (bad byte at offset 64)", `rnnlm train
    --init-from RUN train.lr=0.002` and `rnnlm train train.max_steps=10 configs/tiny.yaml` "give a config file"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  hidden_size: 24\n", encoding="utf-8")
    (run / ".lock").write_text("", encoding="utf-8")
    (run / "best.pt").write_bytes(b"PK\x03\x04 a checkpoint")
    new_run = f"rnnlm train {run / 'config.yaml'} --init-from {run / 'best.pt'} train.lr=0.002"
    assert_user_error(cli("train", run / "best.pt", "train.lr=0.002"),
                      f"error: {run / 'best.pt'} is a checkpoint, not a config: to start a new run from its weights, "
                      f"{new_run} --out {tmp_path}; to continue its run: rnnlm train --resume {run}")
    assert_user_error(cli("train", "--init-from", run / "best.pt", "train.lr=0.002"),
                      f"error: --init-from takes its model from a config too; the run's own: rnnlm train "
                      f"{run / 'config.yaml'} --init-from {run / 'best.pt'} train.lr=0.002 --out {tmp_path}")
    # the command keeps every option given (--out, --name), and never puts the new run inside the old one
    assert_user_error(cli("train", run / "best.pt", "train.lr=0.002", "--out", tmp_path / "b", "--name", "x"),
                      f"{new_run} --out {tmp_path / 'b'} --name x;")
    monkeypatch.chdir(run)
    assert_user_error(cli("train", "best.pt"), f"rnnlm train config.yaml --init-from best.pt --out {tmp_path};")
    tiny = REPO / "configs" / "tiny.yaml"
    assert_user_error(cli("train", "train.max_steps=10", tiny, "train.lr=0.1", "--init-from", run),
                      f"error: the config goes before the overrides: rnnlm train {tiny} train.max_steps=10 "
                      f"train.lr=0.1 --init-from {run}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_config_refuses_a_corpus_that_is_none_as_train_does():
    assert_user_error(cli("config", REPO / "configs" / "tiny.yaml", "data.dataset=shakespear"),
                      "data.dataset='shakespear' is not a corpus (did you mean 'shakespeare'?)")


def test_resume_with_out_or_name_is_refused(tmp_path):
    """--resume continues a run in place: an --out or --name given with it was silently ignored (nanoGPT users expect
    a copy in out_dir); the message points at --init-from, which starts a new run from the weights."""
    elsewhere = tmp_path / "elsewhere"
    for extra, out in ((["--name", "copy"], tmp_path), (["--out", str(elsewhere)], elsewhere)):
        status, _, err = cli("train", "--resume", tmp_path / "run", *extra)  # the new run goes where --out said
        assert status == 2 and "--out and --name name a new run" in err and err.rstrip().endswith(
            f"rnnlm train {tmp_path / 'run' / 'config.yaml'} --init-from {tmp_path / 'run'} --out {out}"), err
    assert not (tmp_path / "elsewhere").exists()


def test_training_goes_on_when_the_reader_of_its_output_stops_early(tmp_path):
    """`rnnlm train ... 2>&1 | head -3`: the first progress line after head left killed the run (status 1, silently),
    losing its work since the last checkpoint, and a run without one vanished."""
    import os
    import subprocess
    import sys

    args = ["train", REPO / "configs" / "tiny.yaml", "train.max_steps=60", "train.eval_every=60", "train.log_every=1",
            "--out", tmp_path, "--name", "run"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "rnnlm", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().startswith(b"run directory: ")
        proc.stdout.close()  # as head does once it has what it wants
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    assert json.loads((tmp_path / "run" / "status.json").read_text()) == {"stopped": "max_steps", "step": 60}


def test_training_with_its_output_closed_trains(tmp_path):
    """Started with stdout and stderr closed (`>&- 2>&-`, as some daemons start jobs), a run failed with status 1
    at its first line of progress."""
    import os
    import shlex
    import subprocess
    import sys

    args = [sys.executable, "-m", "rnnlm", "train", REPO / "configs" / "tiny.yaml", "train.max_steps=20", "--out",
            tmp_path, "--name", "run"]
    done = subprocess.run(["sh", "-c", " ".join(shlex.quote(str(a)) for a in args) + " >&- 2>&-"], timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0
    assert json.loads((tmp_path / "run" / "status.json").read_text()) == {"stopped": "max_steps", "step": 20}


def test_the_commands_printed_to_paste_work_for_a_run_whose_path_has_a_space(tmp_path):
    """`sample with: rnnlm sample checkpoints/has space` split into two words when pasted."""
    import shlex

    runs = tmp_path / "my runs"
    status, _, err = cli("train", REPO / "configs" / "tiny.yaml", "train.max_steps=4", "train.batch_size=2",
                         "model.hidden_size=8", "--out", runs, "--name", "has space", "-q")
    assert status == 0, err
    sample = next(line for line in err.splitlines() if line.startswith("sample with: "))
    words = shlex.split(sample.removeprefix("sample with: "))
    assert words == ["rnnlm", "sample", str(runs / "has space")]
    assert cli(*words[1:], "-n", "3")[0] == 0
    status, _, err = cli("train", "--resume", runs / "has space")  # its max_steps spent: says how to give it more
    more = shlex.split(err.split("give it more with: ")[1])
    assert more == ["rnnlm", "train", "--resume", str(runs / "has space"), "train.max_steps=8"], err
    from rnnlm.runs import new_run_from
    assert shlex.split(new_run_from(runs / "has space"))[2:] == [str(runs / "has space" / "config.yaml"),
                                                                "--init-from", str(runs / "has space"), "--out", str(runs)]


def test_config_keys_in_nanogpt_spelling_are_answered_with_the_override_meant(tmp_path):
    """nanoGPT takes `--max_iters=100` and `max_iters=100`; rnnlm said "no such option" or "malformed" alone."""
    tiny = REPO / "configs" / "tiny.yaml"
    for args, meant in [((tiny, "--max_steps=100"), "train.max_steps=100"),
                        ((tiny, "--train.max_steps=100"), "train.max_steps=100"),
                        ((tiny, "--hidden_size", "64"), "model.hidden_size=64"),
                        ((tiny, "lr=0.1"), "train.lr=0.1")]:
        assert_user_error(cli("train", *args, "--out", tmp_path), meant)
    assert_user_error(cli("train", "max_steps=100", "--out", tmp_path),
                      "max_steps=100: write a config key with its section: train.max_steps=100")
    assert "config keys" not in cli("train", tiny, "--bogus=1")[2]  # no key of that name: nothing suggested
    assert not any(tmp_path.iterdir())


def test_settings_in_nanogpt_char_rnn_and_torch_rnn_names_are_answered_with_rnnlms(tmp_path):
    """A user trial: train.block_size was asked "did you mean 'batch_size'?" (nanoGPT's block_size is the window,
    train.seq_len), train.learning_rate "'decay_rate'?", model.n_embd nothing; `rnnlm sample --temperature 0.5` was
    told to give sample.temperature=0.5, which sample refuses; train.init_from=resume was "no such checkpoint"."""
    tiny = REPO / "configs" / "tiny.yaml"
    for args, said in [((tiny, "train.block_size=64"), "unknown config key train.block_size (nanoGPT's block_size is "
                                                       "train.seq_len here); train keys are: "),
                       ((tiny, "train.learning_rate=1e-3"), "(nanoGPT's learning_rate is train.lr here)"),
                       ((tiny, "model.n_embd=64"), "(nanoGPT's n_embd is model.hidden_size here)"),
                       ((tiny, "--max_iters=5"), "config keys are given without dashes: train.max_steps=5 (nanoGPT's "
                                                 "max_iters)"),
                       ((tiny, "max_iters=5"), "e.g. train.max_steps=5 (nanoGPT's max_iters)"),
                       ((tiny, "--rnn_size", "64"), "model.hidden_size=64 (char-rnn's rnn_size)"),
                       ((tiny, "--decay_lr=False"), "train.schedule=VALUE (nanoGPT's decay_lr)"),
                       ((tiny, "train.init_from=resume"), "train.init_from=resume: no such checkpoint or run "
                                                          "directory; nanoGPT's init_from=resume is rnnlm train "
                                                          "--resume RUN here")]:
        assert_user_error(cli("train", *args, "--out", tmp_path), said)
        assert "did you mean" not in cli("train", *args, "--out", tmp_path)[2]
    assert "nanoGPT" not in cli("train", tiny, "train.init_from=ckpts/resume", "--out", tmp_path)[2]  # a path given
    assert not any(tmp_path.iterdir())
    run = str(tmp_path / "missing-run")  # the option is refused before the run is read
    for args, said in [(("--temperature", "0.5"), "no such option: --temperature (Possible options: --temp); the "
                                                  "option is --temp here: --temp 0.5"),
                       (("--max_new_tokens", "100"), "the option is --length here: --length 100"),
                       (("--start=ROMEO",), "the option is --prime here: --prime ROMEO"),
                       (("--start=a (b",), "the option is --prime here: --prime 'a (b' ")]:  # as a shell reads it
        assert_user_error(cli("sample", run, *args), said)
    assert_user_error(cli("data", "info", "text", "--data.path=x.txt"),  # data's commands take overrides too
                      "config keys are given without dashes: data.path=x.txt")
    # char-rnn's one dash: `-primetext --length 40` sampled with the prime "rimetext" (-p), exit 0
    assert_user_error(cli("sample", run, "-primetext", "--length", "40"),
                      "error: -primetext: options take two dashes here; the option is --prime here: --prime VALUE")
    assert_user_error(cli("train", tiny, "-rnn_size", "512", "--out", tmp_path),
                      "model.hidden_size=512 (char-rnn's rnn_size)")
    assert_user_error(cli("train", tiny, "model.model=gru", "--out", tmp_path), "(char-rnn's model is model.cell here)")
    # sample.lua's and train.lua's other flags: `-seed 1` was "no such option: -s", `-gpuid -1` "-g", `--gpu` "did
    # you mean --out", `-checkpoint x` "-c", and train.lr_decay_every "did you mean 'eval_every'?"
    for args, said in [(("-seed", "1"), "the option is --seed here: --seed 1"),
                       (("-gpuid", "-1"), "the option is --device here: --device VALUE"),
                       (("--gpu", "0"), "the option is --device here: --device VALUE"),
                       (("-sample", "0"), "the option is --temp here: --temp VALUE"),
                       (("-checkpoint", "cv/lm.t7"), "torch-rnn's -checkpoint is the first argument here: rnnlm sample "
                                                     "RUN"),
                       (("--sample-only",), "makemore's --sample-only is rnnlm sample RUN here")]:
        assert_user_error(cli("sample", run, *args), said)
    for args, said in [(("-checkpoint_dir", "cv"), "char-rnn's -checkpoint_dir is --out here"),
                       (("-data_dir", "data/tinyshakespeare"), "data.path=data/tinyshakespeare (char-rnn's data_dir)"),
                       (("train.lr_decay_every=5",), "(torch-rnn's lr_decay_every is train.schedule here)"),
                       # makemore's flags (hyphens), which said "no such option" alone
                       (("--type", "gru"), "config keys are given without dashes: model.cell=gru (makemore's type)"),
                       (("--max-steps", "10"), "config keys are given without dashes: train.max_steps=10"),
                       (("--n-embd2", "64"), "model.hidden_size=64 (makemore's n_embd2)"),
                       (("--work-dir", "out"), "makemore's --work-dir is --out here"),
                       (("-checkpoint", "cv/lm.t7"), "torch-rnn's -checkpoint is --resume RUN here (or --init-from"),
                       # rnnlm's own option misspelt wins over char-rnn's data_dir (it said both)
                       (("--data_dir", "d"), "(Possible options: --data-dir); the option is --data-dir")]:
        assert_user_error(cli("train", tiny, *args, "--out", tmp_path), said)
        assert "did you mean" not in cli("train", tiny, *args, "--out", tmp_path)[2]
    assert "sample.temperature" not in cli("eval", run, "--temperature", "0.5")[2]  # eval draws nothing


def test_a_relative_data_path_found_only_beside_its_config_names_both_fixes(tmp_path, monkeypatch):
    """A relative data.path is read from the working folder: one that is only beside the config said no more than
    `/elsewhere/notes.txt: no such file or directory` (a user trial)."""
    (tmp_path / "project" / "configs").mkdir(parents=True)
    (tmp_path / "project" / "notes.txt").write_text("some text\n" * 50, encoding="utf-8")
    config = tmp_path / "project" / "configs" / "my.yaml"
    config.write_text("data:\n  dataset: text\n  path: ../notes.txt\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    status, _, err = cli("train", config, "--out", tmp_path / "runs")
    assert status == 2 and err.strip() == (
        f"error: data.path=../notes.txt: no such file or directory in {tmp_path}; a relative path is taken from the "
        f"folder the command runs in, not the config's: run it from {config.parent}, or give "
        f"data.path={tmp_path / 'project' / 'notes.txt'}"), err
    assert not (tmp_path / "runs").exists()
