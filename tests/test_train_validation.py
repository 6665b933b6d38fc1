"""Validation and profiling while training: validation rows in metrics.jsonl and
TensorBoard, the evaluation suite's numbers, a bounded cost; a jax.profiler trace of the
chosen steps. (Exact resume with validation on: test_train_resume.)"""

import json

import pytest

from longctx.config_rules import check
from longctx.models import archs
from longctx.models.archs import check_run
from longctx.train import validation
from tests.conftest import SMOKE, smoke_config
from tests.tb_events import scalars


def _rows(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, data_dir):
    """A smoke XL run validating every 5 steps on the whole validation split, with a
    profile of steps 3-4."""
    from longctx import log
    from longctx.train.loop import train

    workdir = tmp_path_factory.mktemp("validated") / "run"
    log.configure()
    train(smoke_config(data_dir, "train.eval_every_steps=5", "train.eval_tokens=10000000",
                       "train.profile_steps=3,4"), workdir)
    return workdir


def test_validation_rows_every_n_steps_and_at_the_end(validated_run):
    rows = _rows(validated_run)
    val = [r for r in rows if r.get("kind") == "validation"]
    assert [r["step"] for r in val] == [5, 10, 12]
    train_steps = [r["step"] for r in rows if "kind" not in r]
    assert train_steps == list(range(2, 13, 2)), "training rows are unchanged"
    for r in val:
        assert r["dataset"] == "synthetic" and r["conversations"] == 10
        assert r["loss"] > 0 and r["perplexity"] == pytest.approx(2.718281828 ** r["loss"])
        assert set(r["recall"]) == {"inside", "1-2x", "2-4x", ">4x", "all"}
        assert r["probes"]["all"] > 0
    assert val[0]["loss"] != val[-1]["loss"], "each pass scores the parameters of its step"


def test_validation_scalars_reach_tensorboard(validated_run):
    tags = scalars(validated_run / "tb")
    rows = {r["step"]: r for r in _rows(validated_run) if r.get("kind") == "validation"}
    assert sorted(tags["validation/loss"]) == [5, 10, 12]
    assert tags["validation/loss"][12] == pytest.approx(rows[12]["loss"], rel=1e-6)
    assert tags["validation/recall_over4x"][12] == pytest.approx(rows[12]["recall"][">4x"])
    assert "train/loss" in tags


def test_last_validation_equals_evaluate(validated_run):
    """The whole split at the last step: eval.json's perplexity and recall, same numbers."""
    from longctx.eval.evaluate import evaluate
    from longctx.rundir import load_run

    last = [r for r in _rows(validated_run) if r.get("kind") == "validation"][-1]
    ev = evaluate(load_run(validated_run), with_speed=False)
    assert last["loss"] == pytest.approx(ev["perplexity"]["overall"]["nll"], rel=1e-9)
    assert last["tokens"] == ev["perplexity"]["overall"]["tokens"]
    for bucket, cell in ev["recall"]["buckets"].items():
        assert last["probes"][bucket] == cell["count"]
        assert last["recall"][bucket] == pytest.approx(cell["accuracy"], abs=1e-12)


@pytest.mark.parametrize("arch", ["xl", "window", "vanilla"])
def test_default_budget_is_a_tenth_of_the_training_compute(arch, data_dir):
    """Without train.eval_tokens a pass costs at most a tenth of the training compute
    between passes (at least one conversation), taking the split's first conversations."""
    from longctx.data import prepare_dataset
    from longctx.eval.corpus import load_corpus
    from longctx.rundir import Run

    cfg = smoke_config(data_dir, f"model.arch={arch}", "train.eval_tokens=1000000000")
    cfg = cfg.replace(model=cfg.model.replace(n_token=prepare_dataset(cfg.data).vocab_size))
    corpus = load_corpus(Run(None, cfg, None, 0, None))
    whole = validation.select(cfg, corpus)
    assert len(whole.convs) == len(corpus.convs)
    per_step = 3 * cfg.train.batch_size * archs.tokens_per_step(cfg.model)  # forward tokens a step trains
    every = -(-whole.cost // (2 * 0.1 * per_step))  # the budget: about half the split
    cfg = cfg.replace(train=cfg.train.replace(eval_tokens=0, eval_every_steps=int(every)))
    half = validation.select(cfg, corpus)
    assert 1 <= len(half.convs) < len(corpus.convs)
    assert half.cost <= 0.1 * every * per_step < whole.cost
    assert [c.conv_id for c in half.convs] == [c.conv_id for c in whole.convs[: len(half.convs)]]
    tiny = validation.select(cfg.replace(train=cfg.train.replace(eval_every_steps=1)), corpus)
    assert len(tiny.convs) == 1, "at least one conversation, whatever the budget"


def test_vanilla_stride_sets_the_cost(data_dir):
    """Vanilla recomputes a ctx_len window per scored token at stride 1, per 8 at stride 8."""
    from longctx.data import prepare_dataset

    cfg = smoke_config(data_dir, "model.arch=vanilla")
    convs = prepare_dataset(cfg.data).conversations("validation")[:4]
    dense = validation.pass_cost(cfg, convs, [])
    strided = validation.pass_cost(cfg.replace(eval=cfg.eval.replace(vanilla_stride=8)), convs, [])
    predicted = sum(c.ids.size - 1 for c in convs)
    assert predicted * cfg.model.vanilla.ctx_len <= dense < (predicted + 256) * cfg.model.vanilla.ctx_len
    assert 7 < dense / strided < 9


@pytest.mark.parametrize("override", ["train.eval_every_steps=-1", "train.eval_tokens=-5",
                                      "train.profile_steps=12,10", "train.profile_steps=1,2,3",
                                      "train.profile_steps=0"])
def test_bad_validation_or_profile_settings_are_one_line(override, data_dir):
    from longctx.config import ConfigError

    with pytest.raises(ConfigError) as err:
        check(smoke_config(data_dir, override))
    key = override.split("=")[0]
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


def test_validation_settings_are_free_on_resume(data_dir):
    from longctx.rundir.settings import config_differences

    a = check_run(smoke_config(data_dir))
    b = check_run(smoke_config(data_dir, "train.eval_every_steps=3", "train.profile_steps=2,3"))
    assert config_differences(a, b) == []


def test_profile_steps_write_a_trace_into_the_run(validated_run):
    traces = list((validated_run / "tb" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    assert b"train" in traces[0].read_bytes(), "the traced steps are marked as train steps"


def test_profile_past_the_last_step_is_refused_before_anything_is_written(data_dir, tmp_path,
                                                                          capsys):
    from longctx.cli import main

    workdir = tmp_path / "refused"
    code = main(["train", "--config", str(SMOKE), "--workdir", str(workdir),
                 f"data.data_dir={data_dir}", "train.num_steps=6", "train.profile_steps=5,9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "train.profile_steps" in err and len(err.splitlines()) == 1
    assert not workdir.exists()
