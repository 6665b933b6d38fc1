"""The config schema: overrides, validation errors that name the key, experiment files."""

import dataclasses
import json
import math
import typing

import pytest

from longctx.config import (
    Config,
    ConfigError,
    UnknownKeyError,
    from_dict,
    load_experiment,
    parse_overrides,
)
from longctx.config_rules import INT_MAX, RANGES
from longctx.models.archs import check_run
from tests.conftest import REPO


def test_overrides_are_typed():
    cfg = parse_overrides(Config(), ["model.xl.mem_len=128", "model.xl.same_length=true",
                                     "optim.learning_rate=1e-4", "eval.context_lengths=16,32"])
    assert cfg.model.xl.mem_len == 128 and cfg.model.xl.same_length is True
    assert cfg.optim.learning_rate == pytest.approx(1e-4)
    assert cfg.eval.context_lengths == (16, 32)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.xl.mem_len=-1", "model.xl.mem_len"),
        ("model.arch=lstm", "model.arch"),
        ("train.batch_size=3", "train.batch_size"),
        ("model.xl.same_length=true", "model.xl.same_length"),
    ],
)
def test_impossible_values_name_the_key(override, key):
    cfg = parse_overrides(Config(), [override])
    if override.startswith("model.xl.same_length"):
        cfg.model = cfg.model.replace(xl=dict(mem_len=0))
    with pytest.raises(ConfigError) as err:
        check_run(cfg, num_devices=2)
    assert f"'{key}'" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override, needle",
    [("model.nope=1", "unknown key"), ("nosection.x=1", "unknown section"),
     ("model.n_layer=two", "expected an integer"), ("model.n_layer", "section.key=value"),
     ("model.pre_lnorm=maybe", "true/false")],
)
def test_bad_overrides(override, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_overrides(Config(), [override])


def test_round_trip_through_json():
    cfg = parse_overrides(Config(), ["model.arch=window", "eval.context_lengths=8,16"])
    again = from_dict(json.loads(cfg.to_json()))
    assert again == cfg


def test_the_model_section_is_a_hashable_value():
    """Equal model settings are one key (the model and its compiled functions hash by them);
    they change only by replacement, and a misspelt name is refused."""
    a = parse_overrides(Config(), ["model.n_layer=3"]).model
    b = Config().model.replace(n_layer=3)
    assert a == b and hash(a) == hash(b) and len({a, b, Config().model}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.n_layer = 4
    with pytest.raises(UnknownKeyError, match="unknown key 'model.n_layers'"):
        a.replace(n_layers=4)


def test_experiment_files_load_and_validate():
    for path in sorted((REPO / "experiments").glob("*.py")):
        text = path.read_text()
        if "def get_config" not in text:
            continue
        check_run(load_experiment(path))


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.py")


def _numeric_fields():
    """(dotted key, annotated type, range) of every numeric field of every section, the
    architectures' own sections (`model.<arch>.<knob>`, ranges in their `Knobs.ranges`)
    included."""
    sections = [(s, getattr(Config(), s), RANGES) for s in ("model", "data", "optim", "train",
                                                            "checkpoint", "eval")]
    model = Config().model
    sections += [(f"model.{a}", model.sections[a], model.sections[a].ranges)
                 for a in model.sections]
    for section, sub, ranges in sections:
        for f in dataclasses.fields(sub):
            tp = typing.get_type_hints(type(sub))[f.name]
            if tp in (int, float) or typing.get_origin(tp) is tuple:
                key = f"{section}.{f.name}"
                yield key, tp, ranges.get(key if ranges is RANGES else f.name)


def _set(cfg, key, value):
    *section, name = key.split(".")
    if len(section) == 2:  # model.<arch>.<knob>
        cfg.model = cfg.model.replace(**{section[1]: {name: value}})
        return cfg
    setattr(cfg, section[0], getattr(cfg, section[0]).replace(**{name: value}))
    return cfg


@pytest.mark.parametrize("key, tp, interval", list(_numeric_fields()))
def test_every_numeric_field_has_a_range_that_is_enforced(key, tp, interval):
    assert interval, f"{key} has no range (longctx.config_rules.RANGES or its Knobs.ranges)"
    lo = float(interval[1:].split(",")[0])
    below = lo if interval[0] == "(" else lo - 1
    bad = {int: [int(below), INT_MAX + 1], float: [below, math.nan, math.inf, -math.inf]}
    for value in bad.get(tp, [(int(below),), (8, INT_MAX + 1)]):
        if key == "train.train_tokens" and value == INT_MAX + 1:
            continue  # a token count, not int32: its own upper bound
        cfg = _set(Config(), key, value)
        with pytest.raises(ConfigError) as err:
            check_run(cfg)
        assert f"'{key}'" in str(err.value) and "\n" not in str(err.value), (key, value)


@pytest.mark.parametrize("overrides, key", [
    (["model.arch=window", "model.window.window=128", "model.window.seq_len=64"], "model.window.window"),
    (["optim.end_learning_rate=nan"], "optim.end_learning_rate"),
    (["optim.learning_rate=inf"], "optim.learning_rate"),
    (["optim.b1=1.5"], "optim.b1"),
    (["optim.b2=1"], "optim.b2"),
    (["optim.weight_decay=-1"], "optim.weight_decay"),
    (["optim.eps=0"], "optim.eps"),
    (["optim.learning_rate=1e-4", "optim.end_learning_rate=1e-3"], "optim.end_learning_rate"),
    (["optim.grad_accum=8", "train.num_steps=4"], "optim.grad_accum"),
    (["eval.max_conversations=-3"], "eval.max_conversations"),
    (["eval.context_lengths=256,32"], "eval.context_lengths"),
    (["eval.context_lengths=32,32"], "eval.context_lengths"),
    (["eval.context_lengths=0,32"], "eval.context_lengths"),
    (["model.d_model=65"], "model.d_model"),
    (["model.xl.mem_len=1000000000000"], "model.xl.mem_len"),
    (["train.train_tokens=1e15"], "train.train_tokens"),  # more steps than int32 holds
    (["model.n_layer=inf"], "model.n_layer"),
    (["data.data_dir= "], "data.data_dir"),
])
def test_impossible_combinations_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        check_run(parse_overrides(Config(), overrides))
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_rules_follow_the_architecture():
    """window <= seq_len binds the window model only; same_length needs memory only in XL."""
    check_run(parse_overrides(Config(), ["model.arch=xl", "model.window.window=512",
                                         "model.window.seq_len=64"]))
    check_run(parse_overrides(Config(), ["model.arch=window", "model.xl.same_length=true",
                                        "model.xl.mem_len=0"]))


EXPERIMENT = """from longctx.config import Config


def get_config():
    c = Config(name="t")
    c.model = c.model.replace(xl=dict(tgt_len=16, mem_len=32))
{line}
    return c
"""


@pytest.mark.parametrize("line, words", [
    ("    c.model = c.model.replace(n_layers=4)", ["line 7", "unknown key 'model.n_layers'",
                                                    "n_layer"]),
    ("    c.train.num_step = 4", ["line 7", "unknown key 'train.num_step'", "num_steps"]),
    ("    c.modle = 4", ["line 7", "unknown key", "modle"]),
    ('    c.model = c.model.replace(n_layer="2")', ["line 7", "'model.n_layer'",
                                                   "expected an integer", "'2'"]),
    ("    c.optim.b1 = None", ["line 7", "'optim.b1'", "expected a number"]),
    ("    c.model = c.model.replace(xl=dict(tgt_len=8, same_length=1))",
     ["line 7", "'model.xl.same_length'"]),
    ("    c.model = c.model.replace(mem_len=8)",  # a flat key of before the sections
     ["line 7", "'model.mem_len' is now 'model.xl.mem_len'"]),
    ("    c.model = c.model.replace(xl=dict(mem_lenn=8))",
     ["line 7", "unknown key 'model.xl.mem_lenn'", "mem_len"]),
    ("    c.model = {}", ["line 7", "'model'", "expected a ModelConfig"]),
    ("    c.model.n_layer = 4", ["line 7", "field 'n_layer'", "frozen",
                               "c.model = c.model.replace(n_layer=4)"]),
    ("    raise ValueError('no such size')", ["line 7", "get_config() raised ValueError: "
                                               "no such size"]),
    ("    c.model = c.model.replace(d_inner=1 / 0)", ["line 7", "ZeroDivisionError"]),
    ("    c.model.d_inner = = 3", ["line 7", "syntax error"]),
])
def test_experiment_file_problems_are_one_line_with_file_and_line(tmp_path, line, words):
    path = tmp_path / "bad.py"
    path.write_text(EXPERIMENT.format(line=line))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"config file '{path}'"), msg
    for w in words:
        assert w in msg, msg


def test_experiment_file_values_get_the_same_range_checks(tmp_path):
    path = tmp_path / "ok.py"
    path.write_text(EXPERIMENT.format(line="    c.optim.b1 = 1  # an int for a float: fine"))
    cfg = load_experiment(path)
    assert cfg.optim.b1 == 1.0 and isinstance(cfg.optim.b1, float)
    with pytest.raises(ConfigError, match="'optim.b1': must be in"):
        check_run(cfg)


def test_parse_overrides_leaves_its_input_unchanged():
    """One base config serves several runs: overrides apply to a copy."""
    base = Config()
    out = parse_overrides(base, ["model.n_layer=5", "train.seed=3"])
    assert (out.model.n_layer, out.train.seed) == (5, 3)
    assert (base.model.n_layer, base.train.seed) == (Config().model.n_layer, Config().train.seed)
