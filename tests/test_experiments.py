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


@pytest.mark.parametrize("size", ["tiny", "cpu", "cpu-memory"])
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


def test_real_study_memory_size_trains_rmt_through_4w_and_derives_retrieval_from_xl():
    """cpu-memory: the cpu size's model and budget; RMT's gradient through its memory spans
    K = 4 segments of W at 2 rows a step; XL+retrieval is the trained XL, not retrained."""
    from longctx.config import parse_overrides
    from longctx.models.archs import check_run

    exp = load_script("real_dialogue_study")
    spec, cpu = exp.SIZES["cpu-memory"], exp.SIZES["cpu"]
    configs = size_configs(exp, spec)
    assert set(configs) == {"xl", "window", "rmt"}
    def recipe(c):
        return (c.model.n_layer, c.model.d_model, c.model.d_inner, c.model.dropout,
                c.model.xl, c.train.train_tokens, c.train.batch_size, c.optim, c.data)

    assert recipe(configs["xl"]) == recipe(size_configs(exp, cpu)["xl"])  # the cpu size's
    rmt = configs["rmt"]
    assert (rmt.model.rmt.seg_len, rmt.model.rmt.bptt_segments, rmt.model.rmt.n_mem_tokens,
            rmt.train.batch_size) == (64, 4, 16, 2)
    (derived,) = spec.derived
    cfg = parse_overrides(exp.get_config(), [
        *spec.overrides(), f"model.arch={derived.arch}", *derived.overrides("/runs/xl"),
        *exp.batch_overrides(derived.arch, spec.tokens_per_step, spec.overrides())])
    check_run(cfg)
    assert (derived.source, cfg.train.init_from, cfg.train.num_steps) == ("xl", "/runs/xl", 0)
    assert archs.span(cfg.model) == 64


def test_real_study_tiny_runs_every_model_on_msc_only(tmp_path):
    """--no-qmsum: the tiny size end to end on the MSC sample, every model it names (the
    derived XL+retrieval started from the same seed's XL) in every study table, no QMSum
    evaluation."""
    import json

    exp = load_script("real_dialogue_study")
    root = tmp_path / "study"
    assert exp.main(["--size", "tiny", "--no-qmsum", "--root", str(root),
                     "--qmsum", str(tmp_path / "absent.jsonl"),  # not read with --no-qmsum
                     "train.train_tokens=1024", "eval.max_conversations=1"]) == 0
    names = ("xl", "window", "rmt", "xl_retrieval")
    for arch in names:
        ev = json.loads((root / f"seed-0_arch-{arch}" / "eval.json").read_text())
        assert ev["run"]["arch"] == arch
        assert not (root / f"seed-0_arch-{arch}" / "eval_qmsum.json").exists()
    summary = json.loads((root / "seed-0_arch-xl_retrieval" / "summary.json").read_text())
    xl = json.loads((root / "seed-0_arch-xl" / "summary.json").read_text())
    assert summary["step"] == 0 and summary["init_from"]["path"] == str(root / "seed-0_arch-xl")
    assert summary["params_sha256"] == xl["params_sha256"]  # the XL's parameters as they are
    study = (root / "results" / "study.md").read_text()
    assert "QMSum" not in study.split("\n", 3)[3]  # no QMSum tables
    tables = study.split("### ")[1:]
    assert [t.split("\n")[0].split(":")[0] for t in tables] == ["MSC validation"] * len(tables)
    for table in tables:  # each model a row (paired tables: each against the window)
        rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[4:] if line]
        paired = "paired" in table.split("\n")[0]
        want = [f"{a} − window" for a in names if a != "window"] if paired else list(names)
        assert rows == want, table
    timings = json.loads((root / "timings.json").read_text())
    assert all(any(k.startswith(f"train {a}") for k in timings) for a in names)
    assert {f"evaluate seed-0_arch-{a}" for a in names} <= set(timings)


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
    segments of 128, 16 memory tokens and 4 segments a row, XL and XL+retrieval (top 32 of
    2,048) with 4 (not in smoke)."""
    rows = dict(load_script("bench_mechanisms").configs(smoke))
    assert {c.train.batch_size * archs.tokens_per_step(c.model)
            for c in rows.values()} == {64 if smoke else 512}
    assert len({(c.model.n_layer, c.model.d_model, c.model.n_token) for c in rows.values()}) == 1
    assert [c.model.arch for c in rows.values()] == ["xl", "window", "vanilla", "rmt", "xl",
                                                     "xl_retrieval", "xl_retrieval"]
    assert list(rows)[3:] == (["rmt seg 16, m 4, K 2", "xl, gradient through memory K 2",
                               "xl_retrieval k 8, store 64",
                               "xl_retrieval k 8, store 64, gradient through memory K 2"]
                              if smoke else ["rmt seg 128, m 16, K 4",
                                             "xl, gradient through memory K 4",
                                             "xl_retrieval k 32, store 2048",
                                             "xl_retrieval k 32, store 2048, gradient through "
                                             "memory K 4"])
    if not smoke:
        readme = size_configs(_experiment(), _experiment().SIZES["readme"])
        assert rows["window"].model == readme["window"].model.replace(n_token=2048)
        rmt = rows["rmt seg 128, m 16, K 4"].model
        assert (rmt.rmt.seg_len, rmt.rmt.n_mem_tokens, rmt.rmt.bptt_segments) == (128, 16, 4)
        assert rows["xl, gradient through memory K 4"].model.xl.bptt_segments == 4
        assert rows["xl, gradient through memory K 4"].train.batch_size == 2
        grad = rows["xl_retrieval k 32, store 2048, gradient through memory K 4"]
        assert (grad.model.xl.bptt_segments, grad.train.batch_size) == (4, 2)
        assert rows["xl_retrieval k 32, store 2048"].model.xl == rows["xl"].model.xl
