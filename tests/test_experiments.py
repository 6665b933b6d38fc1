"""The main experiment's sizes are valid configs that are fair by construction."""

from __future__ import annotations

import pytest

from longctx.config import parse_overrides, validate
from tests.conftest import load_script


def _experiment():
    return load_script("dialogue_comparison")


@pytest.mark.parametrize("size", ["readme", "cpu", "gpu", "gpu-quick"])
def test_every_size_matches_span_tokens_per_step_and_parameters(size):
    exp = _experiment()
    spec = exp.SIZES[size]
    configs = {}
    for arch in exp.ARCHS:
        overrides = [*spec["overrides"], f"model.arch={arch}"]
        overrides += exp.batch_overrides(arch, spec["tokens_per_step"], spec["overrides"])
        cfg = parse_overrides(exp.get_config(), overrides)
        validate(cfg)
        configs[arch] = cfg
    assert len({c.model.span for c in configs.values()}) == 1
    assert configs["xl"].model.tgt_len <= configs["xl"].model.mem_len  # XL sees >= W keys
    assert {c.train.batch_size * c.model.row_len for c in configs.values()} == {
        spec["tokens_per_step"]}
    assert len({c.train.train_tokens for c in configs.values()}) == 1
    shapes = {(c.model.n_layer, c.model.d_model, c.model.n_head, c.model.d_inner)
              for c in configs.values()}
    assert len(shapes) == 1  # one module tree: identical parameter counts


@pytest.mark.parametrize("size", ["tiny", "cpu"])
def test_real_study_sizes_match_span_and_tokens_per_step(size):
    exp = load_script("real_dialogue_study")
    spec = exp.SIZES[size]
    configs = {}
    for arch in exp.ARCHS:
        overrides = [*spec["overrides"], f"model.arch={arch}"]
        overrides += exp.batch_overrides(arch, spec["tokens_per_step"], spec["overrides"])
        cfg = parse_overrides(exp.get_config(), overrides)
        validate(cfg)
        configs[arch] = cfg
    assert {c.data.name for c in configs.values()} == {"msc"}  # trained on MSC
    assert len({c.model.span for c in configs.values()}) == 1
    assert configs["xl"].model.tgt_len <= configs["xl"].model.mem_len
    assert {c.train.batch_size * c.model.row_len for c in configs.values()} == {
        spec["tokens_per_step"]}
    assert len({(c.model.n_layer, c.model.d_model, c.train.train_tokens)
                for c in configs.values()}) == 1
