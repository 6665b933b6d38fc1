"""The config schema: overrides, validation errors that name the key, experiment files."""

import json

import pytest

from longctx.config import (
    Config,
    ConfigError,
    from_dict,
    load_experiment,
    parse_overrides,
    validate,
)
from tests.conftest import REPO


def test_overrides_are_typed():
    cfg = parse_overrides(Config(), ["model.mem_len=128", "model.same_length=true",
                                     "optim.learning_rate=1e-4", "eval.context_lengths=16,32"])
    assert cfg.model.mem_len == 128 and cfg.model.same_length is True
    assert cfg.optim.learning_rate == pytest.approx(1e-4)
    assert cfg.eval.context_lengths == (16, 32)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.mem_len=-1", "model.mem_len"),
        ("model.arch=lstm", "model.arch"),
        ("train.batch_size=3", "train.batch_size"),
        ("model.same_length=true", "model.same_length"),
    ],
)
def test_impossible_values_name_the_key(override, key):
    cfg = parse_overrides(Config(), [override])
    if override.startswith("model.same_length"):
        cfg.model.mem_len = 0
    with pytest.raises(ConfigError) as err:
        validate(cfg, num_devices=2)
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


def test_experiment_files_load_and_validate():
    for path in sorted((REPO / "experiments").glob("*.py")):
        text = path.read_text()
        if "def get_config" not in text:
            continue
        validate(load_experiment(path))


def test_missing_experiment_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.py")
