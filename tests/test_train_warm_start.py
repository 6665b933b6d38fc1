"""`train.init_from`: an rmt run warm-started from a trained XL run takes the shared
parameters as they are at step 0 and trains on; sources that do not fit are refused in one
line with nothing written; a warm-started run resumes bit-exact without its source."""

from __future__ import annotations

import json
import shutil
import signal

import jax
import numpy as np
import pytest

from longctx.errors import UserError
from longctx.rundir import load_run
from longctx.train.loop import params_sha256, train
from tests.conftest import SMOKE, run_cli, run_info, run_main, smoke_config, subprocess_env, warm_started_run

RMT = ["model.arch=rmt", "model.rmt.n_mem_tokens=4", "model.rmt.bptt_segments=2", "train.num_steps=8",
       "train.log_every=1"]


def _flat(params) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.fixture(scope="module")
def warm_rmt(tmp_path_factory, data_dir, tiny_run):
    """An rmt run trained 8 steps from the tiny XL run (in this process)."""
    return warm_started_run(tmp_path_factory, data_dir, tiny_run, "warm_rmt", *RMT)


def test_shared_parameters_come_from_the_source_at_step_0(data_dir, tiny_run, tmp_path):
    """The first step's learning rate is 0 (warm-up from 0), so step 1's checkpoint holds
    the parameters as they started: the XL run's shared ones, and rmt's own memory_init as
    a from-scratch rmt run draws it."""
    frozen = ["optim.warmup_steps=1", "train.num_steps=2", "checkpoint.every_steps=1"]
    train(smoke_config(data_dir, *RMT, *frozen, f"train.init_from={tiny_run}"), tmp_path / "w")
    train(smoke_config(data_dir, *RMT, *frozen), tmp_path / "scratch")
    warm = _flat(load_run(tmp_path / "w", step=1).params)
    scratch = _flat(load_run(tmp_path / "scratch", step=1).params)
    source = _flat(load_run(tiny_run).params)
    assert set(warm) == set(source) | {"['memory_init']"}
    for name, value in source.items():
        np.testing.assert_array_equal(warm[name], value, err_msg=name)
    np.testing.assert_array_equal(warm["['memory_init']"], scratch["['memory_init']"])
    assert not np.array_equal(warm["['word_emb']['embedding']"],
                              scratch["['word_emb']['embedding']"])
    # what the XL run learnt shows in the first step's loss
    assert _first_loss(tmp_path / "w") < _first_loss(tmp_path / "scratch") - 0.1


def _first_loss(workdir) -> float:
    return json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_warm_start_trains_and_records_its_source(data_dir, tiny_run, warm_rmt, capsys):
    summary = json.loads((warm_rmt / "summary.json").read_text())
    source = load_run(tiny_run)
    record = {"path": str(tiny_run.absolute()), "step": source.step, "arch": "xl",
              "params_sha256": params_sha256(source.params)}
    assert summary["init_from"] == record and summary["step"] == 8 and summary["arch"] == "rmt"
    assert run_info(warm_rmt, capsys)["init_from"] == record
    assert run_info(tiny_run, capsys)["init_from"] is None
    rows = [json.loads(line) for line in (warm_rmt / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < np.log(source.cfg.model.n_token) - 0.2  # below a uniform guess
    trained = _flat(load_run(warm_rmt).params)
    assert not np.array_equal(trained["['word_emb']['embedding']"],
                              _flat(source.params)["['word_emb']['embedding']"])


def test_gated_rmt_starts_a_fresh_gate_and_resumes_bit_exact(data_dir, tiny_run, tmp_path,
                                                             capsys):
    """model.rmt.memory_gate from the XL run: the gate (w = 0, b = memory_gate_bias) and the
    initial memory are new, in the run's parameters as the estimate counts them, and
    trained; a run SIGKILLed after step 2 (its checkpoint at 1) and resumed ends with the
    uninterrupted run's parameters (gate included)."""
    from longctx.train.memory_fit import num_params

    gated = [*RMT, "model.rmt.memory_gate=true", "model.rmt.memory_gate_bias=-1.5",
             "optim.warmup_steps=1", "train.num_steps=3", "checkpoint.every_steps=1",
             "checkpoint.keep=3", "checkpoint.async_save=false", f"train.init_from={tiny_run}"]
    train(smoke_config(data_dir, *gated), tmp_path / "a")
    args = ["train", "--config", str(SMOKE), "--workdir", str(tmp_path / "b"),
            f"data.data_dir={data_dir}", *gated]
    proc = run_cli(args, check=False, env=subprocess_env(1, LONGCTX_FAULT="step:2"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "resumed from step 1" in run_main(args, capsys).out  # in this process
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("a", "b"))
    assert a["params_sha256"] == b["params_sha256"] and a["step"] == b["step"] == 3
    run = load_run(tmp_path / "a")
    xl = num_params(run.cfg.model.replace(arch="xl"), run.cfg.model.n_token)
    assert a["num_params"] == num_params(run.cfg.model, run.cfg.model.n_token) == (
        xl + 4 * 32 + 32 * 32 + 32)
    start = _flat(load_run(tmp_path / "a", step=1).params)  # step 1's learning rate is 0
    source = _flat(load_run(tiny_run).params)
    gate = {"['memory_gate']['w']", "['memory_gate']['b']"}
    assert set(start) == set(source) | {"['memory_init']"} | gate
    np.testing.assert_array_equal(start["['memory_gate']['w']"], np.zeros((32, 32)))
    np.testing.assert_array_equal(start["['memory_gate']['b']"], np.full(32, -1.5))
    trained = _flat(run.params)
    assert all(not np.array_equal(trained[name], start[name]) for name in gate)


def test_warm_start_resumes_bit_exact_without_its_source(data_dir, tiny_run, warm_rmt, tmp_path,
                                                         capsys):
    """Killed after step 6 (its checkpoint at 4), the source moved away, resumed: the same
    parameters as the uninterrupted run (which is the same config as `warm_rmt`: same
    config and seed, same numbers)."""
    source = tmp_path / "source"
    shutil.copytree(tiny_run, source)
    args = ["train", "--config", str(SMOKE), "--workdir", str(tmp_path / "killed"),
            f"data.data_dir={data_dir}", *RMT, f"train.init_from={source}",
            "checkpoint.async_save=false"]  # step 4's checkpoint is whole before the kill
    proc = run_cli(args, check=False, env=subprocess_env(1, LONGCTX_FAULT="step:6"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    source.rename(tmp_path / "gone")
    run_main(args, capsys)  # the resume, in this process
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    clean = json.loads((warm_rmt / "summary.json").read_text())
    assert resumed["step"] == 8
    assert resumed["params_sha256"] == clean["params_sha256"]
    assert resumed["init_from"]["params_sha256"] == clean["init_from"]["params_sha256"]


def _refused(data_dir, workdir, *overrides) -> str:
    with pytest.raises(UserError) as err:
        train(smoke_config(data_dir, *overrides), workdir)
    message = str(err.value)
    assert "\n" not in message and "train.init_from" in message
    assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()
    return message


def test_missing_source_or_one_without_checkpoint_is_refused(data_dir, tmp_path):
    msg = _refused(data_dir, tmp_path / "a", *RMT, f"train.init_from={tmp_path / 'nowhere'}")
    assert "no such run directory" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in _refused(data_dir, tmp_path / "b", *RMT, f"train.init_from={empty}")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(smoke_config(data_dir).to_json())
    (bare / "checkpoints").mkdir()
    msg = _refused(data_dir, tmp_path / "c", *RMT, f"train.init_from={bare}")
    assert "no finished checkpoint" in msg


def test_other_vocabulary_or_tokenizer_is_refused(data_dir, tiny_run, tmp_path):
    msg = _refused(data_dir, tmp_path / "a", *RMT, "model.n_token=600",
                   f"train.init_from={tiny_run}")
    assert "vocabulary" in msg and "600" in msg
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    tok_file = other / "tokenizer" / "tokenizer.json"
    tok = json.loads(tok_file.read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[-2:]  # swap two ids: a valid, different tokenizer
    vocab[a], vocab[b] = vocab[b], vocab[a]
    tok_file.write_text(json.dumps(tok))
    msg = _refused(data_dir, tmp_path / "b", *RMT, f"train.init_from={other}")
    assert "another tokenizer" in msg and str(other / "tokenizer") in msg


def test_unplaceable_or_misshapen_parameters_are_refused(data_dir, tiny_run, warm_rmt,
                                                         tmp_path):
    msg = _refused(data_dir, tmp_path / "a", "model.arch=xl", f"train.init_from={warm_rmt}")
    assert "['memory_init'] (4, 32)" in msg and "no place" in msg
    msg = _refused(data_dir, tmp_path / "b", *RMT, "model.d_inner=128",
                   f"train.init_from={tiny_run}")
    assert "['layers_0']['ff_in']['bias'] is (64,) in" in msg
    assert "(128,) in this model" in msg


def test_zero_steps_take_the_source_parameters_as_they_are(data_dir, tiny_run, tmp_path):
    """train.num_steps=0 with init_from: a run of another mechanism over the source's
    parameters, unchanged (step 0's checkpoint), e.g. to evaluate a trained XL with a
    retrieval memory; without init_from, 0 steps are refused."""
    train(smoke_config(data_dir, *RMT, "train.num_steps=0", f"train.init_from={tiny_run}"),
          tmp_path / "z")
    run, source = load_run(tmp_path / "z"), load_run(tiny_run)
    assert run.step == 0
    flat, src = _flat(run.params), _flat(source.params)
    for name, value in src.items():
        np.testing.assert_array_equal(flat[name], value, err_msg=name)
    summary = json.loads((tmp_path / "z" / "summary.json").read_text())
    assert summary["step"] == 0 and summary["done"] and summary["train_tokens"] == 0
    with pytest.raises(Exception, match="train.num_steps"):
        train(smoke_config(data_dir, *RMT, "train.num_steps=0"), tmp_path / "none")
