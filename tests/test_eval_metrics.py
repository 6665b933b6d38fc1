"""Hand-built cases with known answers for every coherence metric (pure functions)."""

import math

import numpy as np
import pytest

from longctx.data import buckets
from longctx.data.synthetic_dialogues import PLAN_RANGES
from longctx.eval import metrics
from longctx.eval.shuffle import permute_within_speaker, shuffle_pairs


def test_all_mass_on_true_value_scores_one():
    # log-probs of 8 candidates where the model puts (almost) all mass on the true one
    scores = [0.0] + [-1e9] * 7
    assert metrics.forced_choice_credit(scores, 0) == 1.0
    assert metrics.forced_choice_credit(scores[::-1], 0) == 0.0


@pytest.mark.parametrize("n", [2, 5, 8])
def test_uniform_model_scores_exactly_one_over_n(n):
    scores = [n * math.log(1 / 300)] * n  # identical summed log-likelihoods
    assert metrics.forced_choice_credit(scores, 0) == 1.0 / n
    res = metrics.hits_at_1([scores] * 10, [0] * 10)
    assert res["accuracy"] == 1.0 / n and res["count"] == 10 and res["chance"] == 1.0 / n


def test_ties_split_fractionally():
    assert metrics.forced_choice_credit([-1.0, -1.0, -3.0, -1.0], 0) == pytest.approx(1 / 3)
    assert metrics.forced_choice_credit([-1.0, -1.0, -3.0, -1.0], 2) == 0.0


def test_buckets_follow_recorded_distances():
    span = 64
    cases = {1: "inside", 64: "inside", 65: "1-2x", 128: "1-2x", 129: "2-4x", 256: "2-4x",
             257: ">4x", 10_000: ">4x"}
    for d, name in cases.items():
        assert buckets.distance_bucket(d, span) == name
    distances = [10, 70, 70, 300, 300, 300]
    credits = [1.0, 0.0, 0.5, 0.125, 0.125, 0.0]
    exact = [True, False, False, False, True, False]
    res = metrics.recall_by_bucket(credits, exact, distances, span)
    assert res["inside"] == {"accuracy": 1.0, "stderr": None, "exact_match": 1.0, "count": 1}
    # two probes, credits 0 and 0.5: sample std 0.3536, over sqrt(2) = 0.25
    assert res["1-2x"] == {"accuracy": 0.25, "stderr": pytest.approx(0.25), "exact_match": 0.0,
                           "count": 2}
    assert res["2-4x"] == {"accuracy": None, "stderr": None, "exact_match": None, "count": 0}
    assert res[">4x"]["count"] == 3 and res[">4x"]["accuracy"] == pytest.approx(0.25 / 3)
    assert res[">4x"]["exact_match"] == pytest.approx(1 / 3)
    assert res["all"]["count"] == 6


def test_the_synthetic_plan_fills_each_bucket_between_its_ends():
    span = 64
    assert len(PLAN_RANGES) == len(buckets.BUCKETS)
    for (name, _), (lo, hi) in zip(buckets.BUCKETS, PLAN_RANGES, strict=True):
        assert buckets.distance_bucket(math.floor(lo * span) + 1, span) == name
        assert buckets.distance_bucket(math.floor(hi * span), span) == name


def test_order_blind_model_scores_half_on_shuffles():
    # an order-blind model gives both orders the same log-likelihood: every pair ties
    true = [-10.0, -12.5, -3.0]
    assert metrics.shuffle_accuracy(true, true) == {"accuracy": 0.5, "count": 3, "chance": 0.5}
    assert metrics.shuffle_accuracy([-1.0, -2.0], [-2.0, -1.0])["accuracy"] == 0.5
    assert metrics.shuffle_accuracy([-1.0, -1.0], [-2.0, -3.0])["accuracy"] == 1.0


def test_length_normalised_hits():
    # the true (long) turn has the better per-token likelihood though a worse sum
    true = metrics.length_normalised(-10.0, 10)
    short = metrics.length_normalised(-2.0, 1)
    assert metrics.hits_at_1([[true, short]], [0])["accuracy"] == 1.0


def test_perplexity_by_key():
    nll = np.array([1.0, 2.0, 3.0, 5.0])
    keys = np.array([0, 0, -1, 1])
    out = metrics.perplexity_by_key(nll, keys)
    assert out["0"] == {"nll": 1.5, "ppl": math.exp(1.5), "tokens": 2}
    assert out["1"]["tokens"] == 1 and "-1" not in out


class _Turn:
    def __init__(self, start, end, speaker):
        self.start, self.end, self.speaker = start, end, speaker


class _Conv:
    def __init__(self, ids, turns):
        self.ids, self.turns = np.asarray(ids, np.int32), turns


def test_shuffle_keeps_speaker_pattern_and_tokens():
    # stream: bos, then turns "spk content eot" with speakers 0 1 0 1
    ids, turns, spk_tok = [1], [], {0: 5, 1: 6}
    for k, spk in enumerate([0, 1, 0, 1]):
        ids.append(spk_tok[spk])
        start = len(ids)
        ids.extend([100 + 10 * k, 101 + 10 * k, 3])
        turns.append(_Turn(start, len(ids), spk))
    conv = _Conv(ids, turns)
    pairs = shuffle_pairs([conv], 4, np.random.default_rng(0))
    assert len(pairs) == 1
    true, fake = pairs[0]
    assert np.array_equal(true, conv.ids[1:])
    assert sorted(true.tolist()) == sorted(fake.tolist()) and not np.array_equal(true, fake)
    assert [fake[i] for i in (0, 4, 8, 12)] == [5, 6, 5, 6]  # speaker tokens in place
    perm = permute_within_speaker([0, 1, 0, 1, 1], np.random.default_rng(3))
    assert all([0, 1, 0, 1, 1][p] == s for p, s in zip(perm, [0, 1, 0, 1, 1], strict=True))
