"""RECL on made-up loss curves against a hand computation; target selection."""

import math

import numpy as np
import pytest

from longctx.eval import context_curve


def _gain(base_short, long_model):
    f_short = np.mean(base_short)
    f_long = np.mean(np.minimum(base_short, long_model))
    return (math.exp(f_short) - math.exp(f_long)) / math.exp(f_short)


def test_recl_matches_hand_computation():
    lengths = [32, 64, 128, 256]
    # two models, four targets; model A keeps improving up to 128, model B stops at 64
    a = np.array([[4.0, 3.0, 2.0, 1.0],
                  [3.0, 2.5, 2.0, 1.0],
                  [2.0, 2.0, 1.5, 1.0],
                  [2.0, 2.0, 1.5, 1.0]])
    b = np.array([[4.0, 3.5, 2.0, 1.0],
                  [3.5, 3.0, 2.0, 1.0],
                  [3.5, 3.0, 2.0, 1.0],
                  [3.5, 3.0, 2.0, 1.0]])
    losses = np.stack([a, b])
    # by hand, r = 1: baseline at c=32 is min(a, b) = [4, 3, 2, 1]
    g_a_32 = _gain([4, 3, 2, 1], a[1])  # exp(2.5) vs exp(2.125) -> 0.31
    g_b_32 = _gain([4, 3, 2, 1], b[1])
    base_64 = np.minimum(a[1], b[1])  # [3, 2.5, 2, 1]
    g_a_64 = _gain(base_64, a[2])
    g_b_64 = _gain(base_64, b[2])  # b does not improve on the shared baseline: 0
    base_128 = np.minimum(a[2], b[2])
    g_a_128 = _gain(base_128, a[3])  # no change: 0
    assert g_a_32 > 0.01 and g_b_32 > 0.01 and g_a_64 > 0.01 and g_b_64 == 0 and g_a_128 == 0
    res = context_curve.recl(losses, lengths, ratio=1.0, threshold=0.01)
    assert res == [{"recl": 128, "lower_bound": False}, {"recl": 64, "lower_bound": False}]
    assert context_curve.relative_gain(losses, 0, 0, 1, 1.0) == pytest.approx(g_a_32)


def test_recl_ratio_keeps_the_hardest_targets():
    lengths = [32, 64]
    # model gains only on the easy target (index 3): with r = 0.25 only the hardest counts
    m = np.array([[4.0, 3.0, 2.0, 2.0],
                  [4.0, 3.0, 2.0, 0.5]])[None]
    assert context_curve.recl(m, lengths, ratio=1.0)[0]["recl"] == 64  # gain everywhere
    assert context_curve.recl(m, lengths, ratio=0.25)[0] == {"recl": 32, "lower_bound": False}
    g = context_curve.relative_gain(m, 0, 0, 1, 1.0)
    assert g == pytest.approx(_gain([4, 3, 2, 2], m[0, 1]))


def test_recl_rejects_bad_shapes():
    with pytest.raises(ValueError):
        context_curve.recl(np.zeros((2, 3, 4)), [32, 64])
    with pytest.raises(ValueError):
        context_curve.recl(np.zeros((1, 2, 4)), [64, 32])


def test_targets_are_deterministic_with_full_context():
    lengths = [100, 500, 300, 50]
    t1 = context_curve.select_targets(lengths, 128, 40, seed=0)
    assert t1 == context_curve.select_targets(lengths, 128, 40, seed=0)
    assert len(t1) == 40 and {i for i, _ in t1} == {1, 2}
    assert all(128 <= p < lengths[i] for i, p in t1)
    assert len(set(t1)) == len(t1)
    fp = context_curve.fingerprint([("a", 3, 7)])
    assert fp == context_curve.fingerprint([("a", 3, 7)]) != context_curve.fingerprint([])
