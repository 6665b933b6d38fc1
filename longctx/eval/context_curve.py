"""Context curve (per-token NLL vs context length) and RECL over a group of runs.

A run stores, for a fixed set of target tokens, the NLL of each target when the model is
given exactly c tokens before it (c in `eval.context_lengths`). `compare` then computes the
relative effective context length (RECL) of each run within the compared group, as the
Transformer-XL paper (Dai et al. 2019, appendix) defines it:

- losses l_i(c, t) of model i on target t with context c; baseline b(c, t) = min_i l_i(c, t);
- T = the ceil(r * |targets|) targets with the largest b(c, t) (the hardest for the group);
- f_i(c, c') = mean_{t in T} min(b(c, t), l_i(c', t));
- gain g_i(c, c') = (exp f_i(c, c) - exp f_i(c, c')) / exp f_i(c, c);
- from the shortest c, step c -> c' (the next measured length) while g_i >= threshold;
  RECL = the c where the gain first falls below the threshold (the longest length when it
  never does: then RECL is a lower bound).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RATIOS = (0.1, 1.0)
DEFAULT_THRESHOLD = 0.01


def select_targets(lengths: Sequence[int], max_context: int, num_targets: int,
                   seed: int = 0) -> list[tuple[int, int]]:
    """Deterministic (conversation index, position) pairs of target tokens, each with at least
    `max_context` tokens before it, spread evenly over the conversations that allow it."""
    eligible = [i for i, n in enumerate(lengths) if n > max_context]
    if not eligible or num_targets <= 0:
        return []
    rng = np.random.default_rng(seed)
    per_conv = max(1, math.ceil(num_targets / len(eligible)))
    out: list[tuple[int, int]] = []
    for i in eligible:
        positions = np.arange(max_context, lengths[i])
        k = min(per_conv, positions.size)
        chosen = np.sort(rng.choice(positions, size=k, replace=False))
        out.extend((i, int(p)) for p in chosen)
    return out[:num_targets]


def fingerprint(items: Sequence[tuple[str, int, int]]) -> str:
    """A short hash of (conversation id, position, token id) triples: runs can share a RECL
    only if they were measured on the same targets."""
    h = hashlib.sha1()
    for conv_id, pos, tok in items:
        h.update(f"{conv_id}:{pos}:{tok};".encode())
    return h.hexdigest()[:16]


def relative_gain(losses: np.ndarray, model: int, c: int, c_next: int, ratio: float) -> float:
    """g_i(c, c') for model `model`; losses is [models, context lengths, targets] and c,
    c_next index its second axis."""
    base = losses[:, c, :].min(axis=0)
    k = max(1, math.ceil(ratio * base.size))
    hardest = np.argsort(-base, kind="stable")[:k]
    f_short = float(base[hardest].mean())
    f_long = float(np.minimum(base, losses[model, c_next, :])[hardest].mean())
    return (math.exp(f_short) - math.exp(f_long)) / math.exp(f_short)


def recl(losses: np.ndarray, context_lengths: Sequence[int], ratio: float = 1.0,
         threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, int | bool]]:
    """RECL of every model in the group: [{'recl': c, 'lower_bound': bool}] per model."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 3 or losses.shape[1] != len(context_lengths):
        raise ValueError(f"losses must be [models, {len(context_lengths)}, targets], "
                         f"got {losses.shape}")
    if list(context_lengths) != sorted(context_lengths):
        raise ValueError(f"context lengths must increase, got {list(context_lengths)}")
    out = []
    for m in range(losses.shape[0]):
        result = {"recl": int(context_lengths[-1]), "lower_bound": True}
        for j in range(len(context_lengths) - 1):
            if relative_gain(losses, m, j, j + 1, ratio) < threshold:
                result = {"recl": int(context_lengths[j]), "lower_bound": False}
                break
        out.append(result)
    return out
