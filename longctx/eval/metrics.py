"""Coherence metrics as pure functions over log-probabilities.

Nothing here touches a model: each function takes scores that a model produced and returns
the metric with the number of items behind it, so hand-built cases test the definitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from longctx.data.buckets import BUCKET_NAMES, distance_bucket

MIN_RELIABLE_COUNT = 20  # buckets with fewer items are marked in tables


def forced_choice_credit(scores: Sequence[float] | np.ndarray, true_index: int) -> float:
    """Credit of one forced choice: 1 if the true candidate scores strictly highest, 1/k if
    it ties with k-1 others at the top, 0 otherwise (so identical scores give exactly 1/N)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not 0 <= true_index < s.shape[0]:
        raise ValueError(f"need 1-d scores and a valid true index, got {s.shape}, {true_index}")
    best = s.max()
    if s[true_index] < best:
        return 0.0
    return 1.0 / float(np.sum(s == best))


def mean_with_count(values: Iterable[float]) -> dict[str, float | int | None]:
    """{'value': mean or None when empty, 'count': n}."""
    v = np.asarray(list(values), dtype=np.float64)
    return {"value": float(v.mean()) if v.size else None, "count": int(v.size)}


def standard_error(values: Iterable[float]) -> float | None:
    """Standard error of the mean of independent items: sample std (ddof 1) / sqrt(n); None
    below two items."""
    v = np.asarray(list(values), dtype=np.float64)
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else None


def recall_by_bucket(
    credits: Sequence[float],
    exact: Sequence[bool],
    distances: Sequence[int],
    span: int,
) -> dict[str, dict[str, float | int | None]]:
    """Forced-choice accuracy (with its standard error over probes) and greedy exact match
    per distance bucket (`longctx.data.buckets`) and overall."""
    if not len(credits) == len(exact) == len(distances):
        raise ValueError("credits, exact and distances must have one entry per probe")
    names = [distance_bucket(int(d), span) for d in distances]
    out: dict[str, dict[str, float | int | None]] = {}
    for bucket in (*BUCKET_NAMES, "all"):
        idx = [i for i, n in enumerate(names) if bucket in ("all", n)]
        acc = mean_with_count(credits[i] for i in idx)
        em = mean_with_count(float(exact[i]) for i in idx)
        out[bucket] = {"accuracy": acc["value"], "stderr": standard_error(credits[i] for i in idx),
                       "exact_match": em["value"], "count": acc["count"]}
    return out


def pairwise_credit(true_score: float, other_score: float) -> float:
    """1 if the true version scores higher, 0.5 on a tie, 0 otherwise (shuffle test)."""
    if true_score > other_score:
        return 1.0
    return 0.5 if true_score == other_score else 0.0


def shuffle_accuracy(true_ll: Sequence[float], shuffled_ll: Sequence[float]) -> dict:
    """Share of windows whose true turn order is more likely than the shuffled one."""
    if len(true_ll) != len(shuffled_ll):
        raise ValueError("need one shuffled score per true score")
    credit = [pairwise_credit(t, s) for t, s in zip(true_ll, shuffled_ll, strict=True)]
    res = mean_with_count(credit)
    return {"accuracy": res["value"], "count": res["count"], "chance": 0.5}


def length_normalised(sum_logprob: float, num_tokens: int) -> float:
    """Mean per-token log-likelihood of a continuation (ConvAI2's hits@1 scoring)."""
    if num_tokens <= 0:
        raise ValueError("a continuation needs at least one token")
    return sum_logprob / num_tokens


def hits_at_1(scores: Sequence[Sequence[float]], true_indices: Sequence[int]) -> dict:
    """Share of items where the true next utterance ranks first (ties split fractionally)."""
    credit = [forced_choice_credit(s, t) for s, t in zip(scores, true_indices, strict=True)]
    res = mean_with_count(credit)
    n = len(scores[0]) if len(scores) else None
    return {"accuracy": res["value"], "count": res["count"], "num_candidates": n,
            "chance": (1.0 / n) if n else None}


def perplexity_by_key(nll: np.ndarray, keys: np.ndarray) -> dict[str, dict[str, float | int]]:
    """Mean NLL, perplexity and token count of the tokens sharing each integer key (key < 0:
    not counted); returned in key order with string keys (JSON objects)."""
    nll = np.asarray(nll, dtype=np.float64)
    keys = np.asarray(keys)
    if nll.shape != keys.shape:
        raise ValueError(f"nll {nll.shape} and keys {keys.shape} differ in shape")
    out: dict[str, dict[str, float | int]] = {}
    for k in np.unique(keys[keys >= 0]):
        sel = nll[keys == k]
        out[str(int(k))] = summarise_nll(sel)
    return out


def summarise_nll(nll: np.ndarray) -> dict[str, float | int]:
    """{'nll': mean, 'ppl': exp(mean), 'tokens': n} of a set of per-token NLLs."""
    nll = np.asarray(nll, dtype=np.float64)
    if nll.size == 0:
        return {"nll": None, "ppl": None, "tokens": 0}
    mean = float(nll.mean())
    return {"nll": mean, "ppl": float(np.exp(mean)), "tokens": int(nll.size)}
