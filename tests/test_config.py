import re
from pathlib import Path

import pytest
import yaml

from rnnlm.config import Config, ConfigError, from_dict, load_config, parse_override

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs, "configs/ is empty"
    for path in configs:
        cfg = load_config(path)
        assert isinstance(cfg, Config)


def test_overrides_change_values_with_types():
    cfg = load_config(None, ["train.lr=3e-4", "model.hidden_size=256", "data.splits=[0.8, 0.1, 0.1]",
                             "train.grad_clip=null", "data.path=my notes.txt"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.hidden_size == 256
    assert cfg.data.splits == (0.8, 0.1, 0.1)
    assert cfg.train.grad_clip is None
    assert cfg.data.path == "my notes.txt"


def test_null_for_a_text_key_is_refused_as_in_a_config_file():
    """sample.prime=null became the prime "null" (samples began with the word), where the file said it is no text."""
    with pytest.raises(ConfigError, match="sample.prime=null is not allowed: sample.prime takes text; give "
                                          "sample.prime= for none"):
        load_config(None, ["sample.prime=null"])
    assert load_config(None, ["sample.prime="]).sample.prime == ""
    assert load_config(None, ["data.path=null"]).data.path is None and load_config(None, ["data.path=~"]).data.path is None
    with pytest.raises(ConfigError, match="train.device=Null is not allowed: train.device takes text$"):
        load_config(None, ["train.device=Null"])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_betas_reach_the_optimizer(optimizer):
    import torch
    from rnnlm.optim import make_optimizer
    cfg = load_config(None, [f"train.optimizer={optimizer}", "train.betas=[0.8, 0.95]", "train.weight_decay=0.1"])
    opt = make_optimizer(cfg, torch.nn.Linear(2, 2))
    assert opt.defaults["betas"] == (0.8, 0.95) and opt.defaults["weight_decay"] == 0.1
    default = make_optimizer(load_config(None, [f"train.optimizer={optimizer}"]), torch.nn.Linear(2, 2))
    assert default.defaults["betas"] == (0.9, 0.999)  # torch's: configs without the key train as before


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(None, ["model.cell=gru", "train.max_time=12.5", "train.betas=[0.8, 0.95]"])
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "unknown config key train.lrr (did you mean 'lr'?)"),
    ("modle.cell=gru", "unknown section 'modle' (did you mean 'model'?)"),
    ("model.cell=lstn", "model.cell='lstn' is not allowed: choose one of rnn, lstm, gru (did you mean 'lstm'?)"),
    ("model.hidden_size=0", "model.hidden_size=0 is not allowed"),
    ("model.hidden_size=big", "model.hidden_size='big' has the wrong type: expected an integer"),
    ("train.lr=-1", "train.lr=-1.0 is not allowed"),
    ("model.dropout=1", "model.dropout=1.0 is not allowed"),
    ("train.optimizer=adamax", "train.optimizer='adamax' is not allowed"),
    ("train.betas=[0.9, 1]", "train.betas=[0.9, 1.0] is not allowed: two numbers in [0, 1)"),
    ("train.betas=[0.9]", "train.betas=[0.9] has the wrong length: expected 2 items"),
    ("train.betas=[-0.1, 0.99]", "train.betas=[-0.1, 0.99] is not allowed: two numbers in [0, 1)"),
    ("train.schedule=linear", "train.schedule='linear' is not allowed"),
    ("train.device=tpu", "train.device='tpu' is not allowed"),
    ("trainlr", "override 'trainlr' is malformed"),
    ("model.forget_bias=.nan", "model.forget_bias=nan is not allowed: a finite number"),
    ("train.lr=1e400", "train.lr=inf is not allowed: a finite learning rate > 0"),
    ("train.lr=1" + "0" * 400, "train.lr=inf is not allowed: a finite learning rate > 0"),
    ("train.weight_decay=.inf", "train.weight_decay=inf is not allowed: a finite number >= 0"),
    ("data.path=", "data.path='' is not allowed: a file, a folder or a glob (an unset shell variable?), or null"),
    ("train.init_from=", "train.init_from='' is not allowed: a run directory or checkpoint"),
    ("train.batch_size=1:00", "train.batch_size='1:00' has the wrong type: expected an integer"),
    ("train.batch_size=2.5", "train.batch_size=2.5 has the wrong type: expected an integer"),
    ("train.max_steps=.inf", "train.max_steps=inf has the wrong type: expected an integer"),
    ("train.optimizer=SGD", "choose one of adam, adamw, sgd, rmsprop (did you mean 'sgd'?)"),
])
def test_bad_values_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_whole_number_written_as_a_float_is_an_integer_and_text_keys_say_to_quote_a_number(tmp_path):
    """nanoGPT's configs write max_iters = 5e3: `train.max_steps=1e4` was refused. In a file, `prime: 2024` is a
    number to YAML (and `09` would be 9): refused, saying to quote it."""
    cfg = load_config(None, ["train.max_steps=1e4", "model.hidden_size=256.0", "train.eval_every=2E2"])
    assert (cfg.train.max_steps, cfg.model.hidden_size, cfg.train.eval_every) == (10000, 256, 200)
    assert type(cfg.train.max_steps) is int
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 5.0e+3\nsample:\n  prime: 2024\n")
    with pytest.raises(ConfigError, match=r"sample.prime=2024 has the wrong type: expected text; in a config file, "
                                          r"put it in quotes"):
        load_config(path)
    path.write_text("train:\n  max_steps: 5.0e+3\nsample:\n  prime: '2024'\n")
    cfg = load_config(path)
    assert (cfg.train.max_steps, cfg.sample.prime) == (5000, "2024")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  cell: lstm\n  hidden_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: YAML syntax error"):
        load_config(path)


@pytest.mark.parametrize(("text", "quoted"), [("data:\n  dataset: text\n  path: *.md\n", 'path: "*.md"'),
                                              ("sample:\n  prime: *ROMEO\n", 'prime: "*ROMEO"'),
                                              ("data:\n  path: *.md   # notes\n", 'path: "*.md"')])  # not the comment
def test_a_value_yaml_reads_as_an_alias_is_answered_with_it_quoted(tmp_path, text, quoted):
    """`path: *.md` said "expected alphabetic or numeric character, but found '.'", and nothing of quoting (a `*`
    after the first character, `notes/*.md`, is plain text to YAML)."""
    path = tmp_path / "glob.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).endswith(f"; quote a value that starts with *: {quoted}"), e.value


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_parse_override_reads_yaml_values():
    assert parse_override("train.max_time=90") == ("train", "max_time", 90)
    assert parse_override("sample.prime=ROMEO:") == ("sample", "prime", "ROMEO:")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OVERRIDES = {
    "model.hidden_size": st.integers(1, 4096),
    "model.num_layers": st.integers(1, 8),
    "model.dropout": st.floats(0, 0.99, allow_nan=False),
    "model.cell": st.sampled_from(["rnn", "lstm", "gru"]),
    "train.lr": st.floats(1e-6, 10, allow_nan=False),
    "train.seq_len": st.integers(1, 1000),
    "train.grad_clip": st.one_of(st.none(), st.floats(0.01, 100, allow_nan=False)),
    "train.batching": st.sampled_from(["random", "sequential"]),
    "sample.prime": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
    "data.path": st.from_regex(r"[a-zA-Z0-9_./-]{1,20}", fullmatch=True),
}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_OVERRIDES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: _OVERRIDES[k] for k in keys})))
def test_overrides_round_trip(values):
    """Whatever is written on the command line is what the config holds, and survives config.yaml."""
    def text(v):
        return "null" if v is None else repr(v) if isinstance(v, float) else str(v)

    cfg = load_config(None, [f"{k}={text(v)}" for k, v in values.items()])
    for key, value in values.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_integers_are_decimal_as_written_not_yaml_1_1_octal(tmp_path):
    """PyYAML's YAML 1.1 reads 0100 as octal 64: a seed or budget typed with a leading zero means what it says."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  max_steps: 0100\n  seed: 010\n  batch_size: 0x10\n  lr: 1e-3\n  eval_chars: 250_000\n"
                    "  log_every: !!int 0b11\n  keep_last: +0x2\n")
    cfg = load_config(path)
    assert (cfg.train.max_steps, cfg.train.seed, cfg.train.batch_size, cfg.train.lr) == (100, 10, 16, 0.001)
    assert (cfg.train.eval_chars, cfg.train.log_every, cfg.train.keep_last) == (250_000, 3, 2)
    path.write_text("train:\n  seed: !!int abc\n")
    with pytest.raises(ConfigError, match="c.yaml: line 2, column 9: YAML syntax error: 'abc' is not an integer"):
        load_config(path)
    assert load_config(None, ["train.max_steps=0100", "train.seed=07"]).train.max_steps == 100
    assert parse_override("train.seed=010") == ("train", "seed", 10)


def test_a_section_that_is_not_a_mapping_is_named_even_when_empty(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: []\nmodel:\n")  # `model:` with nothing under it is the defaults
    with pytest.raises(ConfigError, match=r"c.yaml: config section 'train' must be a mapping of keys to values, not \[\]$"):
        load_config(path)


def test_a_run_config_written_out_reads_back_the_same(tmp_path):
    """config.yaml as a run writes it: a text value that looks like a YAML 1.2 integer stays text; an infinite time
    budget is none, and a run still needs one."""
    cfg = load_config(None, ["sample.prime=09", "train.max_time=.inf"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    assert load_config(path) == cfg and cfg.sample.prime == "09" and cfg.train.max_time is None
    with pytest.raises(ConfigError, match="a run needs a budget"):
        load_config(None, ["train.max_steps=null", "train.max_time=.inf"])


def test_a_refused_value_is_shown_as_yaml_writes_it():
    """`train.seq_len=null` is named as typed, not as Python's None (nor true as True)."""
    for override in ("train.seq_len=null", "model.hidden_size=true"):
        with pytest.raises(ConfigError, match=f"^{re.escape(override)} "):
            load_config(None, [override])
