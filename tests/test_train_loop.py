"""The training loop in-process: run-directory contents, metrics, fingerprint, determinism."""

import json

import numpy as np

from longctx.models.archs import resolved_steps
from longctx.rundir import load_run
from longctx.train.loop import params_sha256, train
from tests.conftest import SMOKE, run_cli, run_main, smoke_config


def _rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_writes_a_complete_run_directory(tiny_run):
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "tokenizer" / "tokenizer.json").is_file()
    assert any((tiny_run / "tb").glob("events.out.tfevents.*"))
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["done"] and summary["step"] == 12
    # static shapes and device-resident state: the step was traced (compiled) at most once
    # in 12 steps (0 when an earlier training of this process had traced the same step)
    assert summary["step_traces"] <= 1
    rows = _rows(tiny_run)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    for row in rows:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_sec", "perplexity"} <= row.keys()
        assert np.isfinite(row["loss"]) and row["tokens_per_sec"] > 0
    assert rows[-1]["loss"] < rows[0]["loss"], "12 steps of AdamW should lower the loss"


def test_info_prints_the_fingerprint(tiny_run, capsys):
    info = json.loads(run_main(["info", "--workdir", str(tiny_run)], capsys).out.strip()
                      .splitlines()[-1])
    run = load_run(tiny_run)
    assert info["step"] == 12 and info["config_name"] == "smoke"
    assert info["num_params"] == sum(int(np.size(x)) for x in
                                     __import__("jax").tree.leaves(run.params))
    assert info["params_sha256"] == params_sha256(run.params)
    assert len(info["params_sha256"]) == 64


def test_same_config_and_seed_give_identical_parameters(data_dir, tmp_path):
    # a weight decay no other test uses: the first run here traces its step
    common = ("train.num_steps=3", "checkpoint.every_steps=100", "optim.weight_decay=0.0123")
    a = train(smoke_config(data_dir, *common), tmp_path / "a")
    b = train(smoke_config(data_dir, *common), tmp_path / "b")
    c = train(smoke_config(data_dir, *common, "train.seed=1"), tmp_path / "c")
    assert a["params_sha256"] == b["params_sha256"]
    assert a["params_sha256"] != c["params_sha256"]
    # the later runs reuse the step the first traced (the seed is an input, not a constant)
    assert (a["step_traces"], b["step_traces"], c["step_traces"]) == (1, 0, 0)


def test_token_budget_sets_the_steps_per_architecture(data_dir):
    xl = smoke_config(data_dir, "train.train_tokens=4096", "model.arch=xl")
    window = smoke_config(data_dir, "train.train_tokens=4096", "model.arch=window")
    # batch 4: XL consumes 4*16 tokens a step, the window model 4*64.
    assert resolved_steps(xl) == 64 and resolved_steps(window) == 16


def test_bad_config_gets_one_line_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "never"
    args = ["train", "--config", str(SMOKE), "--workdir", str(workdir)]
    # lanes that do not split over the devices: a child process with 2 devices
    proc = run_cli([*args, "train.batch_size=3"], devices=2, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [proc.stderr]
    for bad in ("model.xl.mem_len=-1", "model.colour=red"):  # in this process
        errors.append(run_main([*args, bad], capsys, code=2).err)
    for err, key in zip(errors, ("train.batch_size", "model.xl.mem_len", "model.colour"),
                        strict=True):
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and key in lines[0], err
    assert not workdir.exists()


def test_divergence_stops_with_the_step_named(data_dir, tmp_path):
    cfg = smoke_config(data_dir, "optim.learning_rate=1e12", "optim.warmup_steps=0",
                       "train.num_steps=8", "checkpoint.every_steps=100")
    import pytest

    from longctx.train.loop import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"at step \d+"):
        train(cfg, tmp_path / "nan")
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_gradient_accumulation_updates_every_k_steps(data_dir, tmp_path):
    from longctx.rundir import load_run

    cfg = smoke_config(data_dir, "optim.grad_accum=2", "train.num_steps=3",
                       "checkpoint.every_steps=1", "checkpoint.keep=5")
    train(cfg, tmp_path / "acc")
    by_step = {s: params_sha256(load_run(tmp_path / "acc", step=s).params) for s in (1, 2, 3)}
    assert by_step[2] != by_step[1], "the second micro-step applies the update"
    assert by_step[3] == by_step[2], "the third micro-step only accumulates"


def test_bfloat16_compute_trains(data_dir, tmp_path):
    summary = train(smoke_config(data_dir, "model.dtype=bfloat16", "train.num_steps=2",
                                 "checkpoint.every_steps=100"), tmp_path / "bf16")
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert summary["done"] and all(np.isfinite(r["loss"]) for r in rows)


def test_step_zero_state_is_the_models_init_as_one_reused_program(data_dir):
    """Step 0's parameters are `model.init`'s, computed as one jitted program (not op by op),
    with the optimiser state beside them; a later run of the same config in the process
    reuses that program and gets the same bits."""
    import jax

    from longctx.models import archs, build_model, init_memory
    from longctx.train import loop

    cfg = smoke_config(data_dir, "model.n_token=512")
    steps = resolved_steps(cfg)
    loop._initializer.cache_clear()
    first = loop._fresh_state(cfg, 4, steps)
    second = loop._fresh_state(cfg, 4, steps)
    assert loop._initializer.cache_info().hits == 1  # the second run reused the program
    model = build_model(cfg.model)
    init_key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))[0]
    want = jax.jit(model.init)({"params": init_key},
                               np.zeros((1, archs.tokens_per_step(cfg.model)), np.int32),
                               init_memory(cfg.model, 1), np.zeros((1,), bool))["params"]
    assert jax.tree.structure(first.params) == jax.tree.structure(want)
    for a, b, c in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params),
                       jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    adam_mu = [x for x in jax.tree.leaves(first.opt_state) if x.shape == (512, 32)]
    assert adam_mu and all(not x.any() for x in adam_mu)  # the optimiser's zero moments
