"""experiments/copy_task.py: the task's samples, greedy generation, a tiny run and its table."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import load_script

ct = load_script("copy_task")


def test_samples_follow_the_anchor_layout():
    task = ct.scaled(ct.TASKS["copy120_3"], 20)  # L = 6, 3 segments of 6
    assert task == ct.Task(6, 3, 3)
    inputs, targets, mask, first = ct.make_batch(jax.random.key(0), 4, task, 3)
    assert inputs.shape == targets.shape == mask.shape == (4, 18) and first == 6
    seq = np.asarray(inputs[:, :6])
    assert seq.min() >= 2 and seq.max() <= 9  # 8 symbols: chance 1/8
    np.testing.assert_array_equal(inputs[:, 6], 1)  # the start marker
    np.testing.assert_array_equal(targets[:, 6:12], seq)  # the copy, twice
    np.testing.assert_array_equal(targets[:, 12:], seq)
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    np.testing.assert_array_equal(mask[:, :6], 0)
    np.testing.assert_array_equal(mask[:, 6:], 1)
    # the curriculum over segments: one segment filled by a copy a third as long
    inputs, targets, mask, first = ct.make_batch(jax.random.key(0), 2, task, 1, 2)
    assert inputs.shape == (2, 6) and first == 2
    np.testing.assert_array_equal(targets[:, 2:4], inputs[:, :2])
    assert float(mask.sum()) == 2 * 4
    assert ct.stages(task, "segments") == [(1, 2), (2, 4), (3, 6)]
    # over the length: every segment filled; the sequence first, 0s, the answer last
    assert ct.stages(task, "length") == [(3, 1), (3, 3), (3, 4), (3, 6)]
    inputs, targets, mask, first = ct.make_batch(jax.random.key(0), 2, task, 3, 3)
    assert inputs.shape == (2, 18) and first == 12 and float(mask.sum()) == 2 * 6
    np.testing.assert_array_equal(inputs[:, 3:12], 0)
    np.testing.assert_array_equal(inputs[:, 12], 1)
    np.testing.assert_array_equal(targets[:, 12:15], inputs[:, :3])
    np.testing.assert_array_equal(targets[:, 15:], inputs[:, :3])


def test_bad_scale_and_names_are_refused(capsys):
    with pytest.raises(SystemExit, match="do not split into 9 segments"):
        ct.scaled(ct.TASKS["copy120_9"], 7)
    assert ct.main(["--archs", "rnn", "--out", "/nonexistent/never"]) == 2
    assert "unknown task or arch 'rnn'" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["rmt", "xl"])
def test_greedy_generation_feeds_back_its_predictions(arch):
    """Before the answer, greedy equals teacher forcing; inside it, each prediction is the
    next input, so greedy's predictions equal a teacher-forced pass over its own output."""
    task = ct.scaled(ct.TASKS["copy120_9"], 20)  # L = 6 over 9 segments of 2
    run = ct.Runner("tiny", task, arch)
    params = run.init(jax.random.key(0))
    # a nonzero output bias on symbol 5 makes some predictions differ from the inputs
    params = {**params, "out_bias": params["out_bias"].at[5].set(0.3)}
    inputs, targets, _, first = ct.make_batch(jax.random.key(1), 3, task, task.segments)
    preds = run.greedy(params, inputs, first)
    fed = inputs.at[:, first + 1 :].set(preds[:, first:-1])
    forced = run.segments(params, fed, None, lambda lg, _: jnp.argmax(lg, -1), None)
    forced = forced.swapaxes(0, 1).reshape(preds.shape)
    np.testing.assert_array_equal(preds[:, first:], forced[:, first:])
    assert not np.array_equal(np.asarray(fed), np.asarray(inputs))


def test_tiny_run_writes_results_and_table(tmp_path, capsys):
    args = ["--size", "tiny", "--scale", "20", "--tasks", "copy120_3", "--archs",
            "rmt,rmt_sg", "--steps", "4", "--batch", "2", "--n-test", "4",
            "--curriculum", "segments",
            "--advance", "0", "--out", str(tmp_path)]
    assert ct.main(args) == 0
    files = sorted(tmp_path.glob("*.json"))
    assert [f.name for f in files] == ["copy120_3_rmt_sg_tiny_x20_s0.json",
                                       "copy120_3_rmt_tiny_x20_s0.json"]
    result = json.loads(files[1].read_text())
    # --advance 0: one segment more every chunk (chunks of 50 steps: one chunk here)
    assert [c["filled"] for c in result["curve"]] == [1]
    assert result["tokens"] == 4 * 2 * 1 * 6
    assert 0.0 <= result["accuracy"] <= 1.0 and result["n_test"] == 4
    plain = ct.Runner("tiny", ct.Task(6, 3, 3), "xl")
    decoder = ct.count_params(plain.init(jax.random.key(0)))
    assert result["params"] == decoder + 3 * plain.cfg.d_model  # + the 3 memory vectors
    out = capsys.readouterr().out
    assert "| copy120_3 | rmt | tiny/20 | 6 / 3 / 3 | 762 | segments | 1 |" in out
    again = ct.main(args + ["--report"])  # finished runs are read, not retrained
    assert again == 0 and "| copy120_3 | rmt_sg |" in capsys.readouterr().out


def test_table_sets_published_figures_beside_the_anchor_size():
    row = dict(task="copy120_9", arch="rmt", size="anchor", scale=1, length=120, segments=9,
               memory=40, params=928_010, accuracy=0.5, teacher_forced=0.6, tokens=1000,
               curriculum="length", steps=10, curve=[
                   dict(filled=9, length=60, tokens=500, train_acc=1.0),
                   dict(filled=9, length=120, tokens=800, train_acc=0.995)])
    text = ct.table([row, {**row, "accuracy": 0.25, "seed": 1}])
    assert ("| length | 2 | 0.375 | 0.500 | 0.600 | 10 | 1,000 | 2/2 (800) | 1.000 (1.000, 2) |"
            in text)
    assert ct.tokens_to_solve({**row, "curve": row["curve"][:1]}) is None
    small = ct.table([{**row, "size": "small", "scale": 5}])
    assert small.rstrip().endswith("| - |")
