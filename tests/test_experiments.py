"""The main experiment's sizes are valid configs that are fair by construction."""

from __future__ import annotations

import pytest

from longctx.errors import UserError
from longctx.models import archs
from tests.conftest import REPO, load_script, size_configs


def _experiment():
    return load_script("dialogue_comparison")



@pytest.mark.parametrize("size", ["readme", "cpu", "gpu", "gpu-quick"])
def test_every_size_matches_span_tokens_per_step_and_parameters(size):
    exp = _experiment()
    spec = exp.SIZES[size]
    configs = size_configs(exp, spec)
    assert len({archs.span(c.model) for c in configs.values()}) == 1
    assert configs["xl"].model.xl.tgt_len <= configs["xl"].model.xl.mem_len  # XL sees >= W keys
    assert {c.train.batch_size * archs.tokens_per_step(c.model) for c in configs.values()} == {
        spec.tokens_per_step}
    assert len({c.train.train_tokens for c in configs.values()}) == 1
    shapes = {(c.model.n_layer, c.model.d_model, c.model.n_head, c.model.d_inner)
              for c in configs.values()}
    assert len(shapes) == 1  # one module tree: identical parameter counts


@pytest.mark.parametrize("size", ["tiny", "cpu"])
def test_real_study_sizes_match_span_and_tokens_per_step(size):
    exp = load_script("real_dialogue_study")
    spec = exp.SIZES[size]
    configs = size_configs(exp, spec)
    assert {c.data.name for c in configs.values()} == {"msc"}  # trained on MSC
    assert len({archs.span(c.model) for c in configs.values()}) == 1
    assert configs["xl"].model.xl.tgt_len <= configs["xl"].model.xl.mem_len
    assert {c.train.batch_size * archs.tokens_per_step(c.model) for c in configs.values()} == {
        spec.tokens_per_step}
    assert len({(c.model.n_layer, c.model.d_model, c.train.train_tokens)
                for c in configs.values()}) == 1


def _recurrence_eval(nll: dict[str, float], count: int = 10) -> dict:
    return {"recurrence": {"buckets": {b: {"nll": v, "count": count} for b, v in nll.items()}}}


def test_real_study_memory_effect_separates_memory_from_overall_quality():
    exp = load_script("real_dialogue_study")
    base = {"new": 9.0, "inside": 8.0, "1-2x": 7.5, "2-4x": 7.4, ">4x": 7.3}
    window = _recurrence_eval(base)
    better_everywhere = _recurrence_eval({b: v - 0.2 for b, v in base.items()})
    better_beyond_w = _recurrence_eval({b: v - (0.3 if b in ("1-2x", "2-4x", ">4x") else 0.0)
                                        for b, v in base.items()})
    assert abs(exp.memory_effect(better_everywhere, window)) < 1e-9  # quality cancels
    assert exp.memory_effect(better_beyond_w, window) == pytest.approx(-0.3)
    rows = exp.paired_differences({"xl": [better_beyond_w, better_everywhere],
                                   "window": [window, window]})
    assert rows[0][0] == "xl − window" and rows[0][1] == "2"
    assert rows[0][-1].startswith("-0.150 ± ")


def test_sizes_are_typed_presets_the_scripts_share():
    """The scripts read one definition (longctx.train.presets); the README size resolves to
    the model and budget the README describes."""
    from longctx.train import presets

    assert load_script("dialogue_comparison").SIZES is presets.COMPARISON
    assert load_script("real_dialogue_study").SIZES is presets.REAL_DIALOGUE
    cfg = _experiment().get_config()  # the README size's XL
    m = cfg.model
    assert (m.n_layer, m.d_model, m.xl.mem_len, m.xl.tgt_len, m.dropout) == (2, 128, 64, 64, 0.0)
    assert (cfg.train.train_tokens, cfg.data.train_ack, cfg.eval.vanilla_stride) == (
        1_200_000, 1.0, 16)
    for path in ("dialogue_comparison", "real_dialogue_study", "reach_study"):
        text = (REPO / "experiments" / f"{path}.py").read_text()
        assert "sys.path" not in text and "model.d_model=" not in text, path


def test_a_size_names_its_architectures_from_the_registry():
    """A size trains the architectures it names (the studied ones when it names none),
    each checked against the registry."""
    import dataclasses

    from longctx.config import ConfigError
    from longctx.models import archs
    from longctx.train import presets

    readme = presets.COMPARISON["readme"]
    assert readme.arch_names() == ("xl", "window", "vanilla")
    assert dataclasses.replace(readme, archs=("window",), derived=()).arch_names() == ("window",)
    with pytest.raises(UserError, match="starts from xl"):  # a derived model needs its source
        dataclasses.replace(readme, archs=("window",)).arch_names()
    assert readme.archs is None and readme.arch_names() == archs.studied()
    with pytest.raises(ConfigError, match="'model.arch'"):
        dataclasses.replace(readme, archs=("xl", "nope")).arch_names()


@pytest.mark.parametrize("smoke", [False, True])
def test_mechanism_bench_rows_share_the_readme_size_and_tokens_per_step(smoke):
    """bench_mechanisms.py: every row the README decoder at equal tokens per step; rmt with
    segments of 128, 16 memory tokens and 4 segments a row, XL with 4 (not in smoke)."""
    rows = dict(load_script("bench_mechanisms").configs(smoke))
    assert {c.train.batch_size * archs.tokens_per_step(c.model)
            for c in rows.values()} == {64 if smoke else 512}
    assert len({(c.model.n_layer, c.model.d_model, c.model.n_token) for c in rows.values()}) == 1
    assert [c.model.arch for c in rows.values()] == ["xl", "window", "vanilla", "rmt", "xl"]
    assert list(rows)[3:] == (["rmt seg 16, m 4, K 2", "xl, gradient through memory K 2"]
                              if smoke else ["rmt seg 128, m 16, K 4",
                                             "xl, gradient through memory K 4"])
    if not smoke:
        readme = size_configs(_experiment(), _experiment().SIZES["readme"])
        assert rows["window"].model == readme["window"].model.replace(n_token=2048)
        rmt = rows["rmt seg 128, m 16, K 4"].model
        assert (rmt.rmt.seg_len, rmt.rmt.n_mem_tokens, rmt.rmt.bptt_segments) == (128, 16, 4)
        assert rows["xl, gradient through memory K 4"].model.xl.bptt_segments == 4
        assert rows["xl, gradient through memory K 4"].train.batch_size == 2
