"""`evaluate` on a tiny trained run, a uniform model's known answers, and `import-txl`."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from longctx.cli import main
from longctx.eval import evaluate
from longctx.eval.metrics import BUCKET_NAMES
from longctx.eval.scoring import Scorer
from longctx.rundir import load_run, save_params_run
from tests.conftest import FIXTURES
from tests.data_fixtures import real_config

SMALL_EVAL = {"max_conversations": 4, "speed_tokens": 64, "context_lengths": (16, 32, 64)}


def _small(run):
    for key, value in SMALL_EVAL.items():
        setattr(run.cfg.eval, key, value)
    return run


def _reproducible(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("speed", "seconds")}


@pytest.fixture(scope="module")
def small_run(tiny_run, tmp_path_factory):
    """A copy of the shared tiny run with small eval settings in its config."""
    workdir = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(tiny_run, workdir)
    cfg = json.loads((workdir / "config.json").read_text())
    cfg["eval"].update({k: list(v) if isinstance(v, tuple) else v
                        for k, v in SMALL_EVAL.items()})
    (workdir / "config.json").write_text(json.dumps(cfg))
    return workdir


@pytest.fixture(scope="module")
def evaluated(small_run):
    """The CLI's eval.json of the tiny run."""
    assert main(["evaluate", "--workdir", str(small_run)]) == 0
    return json.loads((small_run / "eval.json").read_text())


def test_eval_json_has_every_metric_and_count(evaluated):
    ev = evaluated
    assert ev["schema_version"] == evaluate.SCHEMA_VERSION
    assert ev["run"]["arch"] == "xl" and ev["run"]["num_params"] > 0
    assert ev["run"]["flops_per_token"]["train"] > ev["run"]["flops_per_token"]["eval"] > 0
    assert ev["dataset"]["conversations"] == 4 and ev["dataset"]["probes"] > 0
    ppl = ev["perplexity"]
    assert ppl["overall"]["tokens"] > 0 and ppl["overall"]["ppl"] > 1
    assert sum(v["tokens"] for v in ppl["by_turn"].values()) == ppl["overall"]["tokens"]
    assert sum(v["tokens"] for v in ppl["by_session"].values()) == ppl["overall"]["tokens"]
    buckets = ev["recall"]["buckets"]
    assert set(buckets) == {*BUCKET_NAMES, "all"}
    assert sum(buckets[b]["count"] for b in BUCKET_NAMES) == buckets["all"]["count"] > 0
    assert ev["recall"]["num_candidates"] == 8
    for key in ("shuffle", "hits_at_1"):
        assert ev[key]["count"] > 0 and 0 <= ev[key]["accuracy"] <= 1
    cc = ev["context_curve"]
    assert cc["context_lengths"] == [16, 32, 64] and cc["num_targets"] > 0
    assert np.array(cc["nll"]).shape == (3, cc["num_targets"])
    assert ev["speed"]["stream"]["tokens_per_s"] > 0
    assert ev["speed"]["vanilla_recompute"]["tokens_per_s"] > 0


def test_docs_schema_table_lists_every_key_eval_json_has(evaluated):
    """docs/eval_json.md is the schema: each top-level key written has a row there."""
    doc = (Path(__file__).parents[1] / "docs" / "eval_json.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in doc.splitlines()
            if line.startswith("| `")}
    assert set(evaluated) <= rows, sorted(set(evaluated) - rows)


def test_evaluating_twice_gives_identical_numbers(small_run, evaluated):
    again = evaluate.evaluate(load_run(small_run), with_speed=False)
    assert _reproducible(json.loads(json.dumps(again))) == _reproducible(evaluated)


def test_uniform_model_gets_exactly_chance(tiny_run, tmp_path):
    run = load_run(tiny_run)
    zeros = jax.tree.map(np.zeros_like, run.params)  # logits 0: uniform, blind to order
    workdir = save_params_run(tmp_path / "uniform", run.cfg, zeros,
                              tokenizer_dir=tiny_run / "tokenizer")
    ev = evaluate.evaluate(_small(load_run(workdir)), with_speed=False)
    n = ev["recall"]["num_candidates"]
    for b in (*BUCKET_NAMES, "all"):
        if ev["recall"]["buckets"][b]["count"]:
            assert ev["recall"]["buckets"][b]["accuracy"] == 1.0 / n
    assert ev["shuffle"]["accuracy"] == 0.5
    assert ev["hits_at_1"]["accuracy"] == 1.0 / n
    vocab = run.cfg.model.n_token
    assert ev["perplexity"]["overall"]["ppl"] == pytest.approx(vocab, rel=1e-5)


def test_import_txl_makes_a_run_that_scores_like_the_original(tmp_path):
    ref = np.load(FIXTURES / "reference_postln.npz")
    workdir = tmp_path / "txl"
    assert main(["import-txl", str(FIXTURES / "reference_postln.npz"),
                 "--workdir", str(workdir)]) == 0
    run = load_run(workdir)
    assert run.cfg.model.arch == "xl" and run.tokenizer is None
    stream = ref["stream"]
    lps, _ = Scorer(run.cfg.model, run.params).stream_logprobs(list(stream))
    n_seg = stream.shape[1] // run.cfg.model.xl.tgt_len
    want = np.concatenate([ref[f"seg{s}/nll"] for s in range(n_seg)], axis=1)
    np.testing.assert_allclose(-np.stack(lps), want, atol=1e-4)
    # a second import into the same directory is refused with one line
    assert main(["import-txl", str(FIXTURES / "reference_postln.npz"),
                 "--workdir", str(workdir)]) == 2


def test_real_dataset_without_probes(small_run, data_dir):
    run = load_run(small_run)
    run.cfg.data = real_config("msc", data_dir)
    run.cfg.eval.max_conversations = 3
    ev = evaluate.evaluate(run, split="train", with_speed=False)  # (validation: 1 sample)
    assert ev["dataset"]["name"] == "msc" and ev["recall"] is None
    assert ev["perplexity"]["overall"]["tokens"] > 0
    assert ev["shuffle"]["count"] > 0 and ev["hits_at_1"]["count"] > 0


def test_evaluate_missing_run_is_a_user_error(tmp_path, capsys):
    assert main(["evaluate", "--workdir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert f"--workdir {tmp_path / 'nothing'}: no such directory" in err and err.count("\n") == 1
