"""Relative positional attention maths (Transformer-XL, attn_type 0), dense and banded.

score(i, j) = ((q_i + r_w_bias) . k_j + (q_i + r_r_bias) . r_{dist(i,j)}) / sqrt(d_head).
The positional term is computed for all distances at once and moved into place with the
original's "rel_shift" (pad, reshape, slice: no gather). Queries are end-aligned: query i of
Tq sits at key index Tk - Tq + i, and r holds distances Tk-1 ... 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

NEG_INF = -1e30  # masked score: exp underflows to exactly 0, so masked keys have no effect


def rel_shift(x: jax.Array) -> jax.Array:
    """[..., Tq, Tk] scores over distances (Tk-1 .. 0) -> scores over keys: out[i, j] =
    x[i, j + Tq - 1 - i] (entries with j > i + Tk - Tq are garbage and must be masked)."""
    *lead, tq, tk = x.shape
    pad = [(0, 0)] * len(lead) + [(0, 0), (1, 0)]
    flat = jnp.pad(x, pad).reshape(*lead, tq * (tk + 1))
    return flat[..., tq:].reshape(*lead, tq, tk)


def rel_scores(
    q: jax.Array, k: jax.Array, r: jax.Array, r_w_bias: jax.Array, r_r_bias: jax.Array
) -> jax.Array:
    """q [..., Tq, H, D], k [..., Tk, H, D], r [Tk, H, D] -> scaled scores [..., H, Tq, Tk] f32."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    f32 = jnp.float32
    ac = jnp.einsum("...qhd,...khd->...hqk", q + r_w_bias.astype(q.dtype), k,
                    preferred_element_type=f32)
    bd = jnp.einsum("...qhd,khd->...hqk", q + r_r_bias.astype(q.dtype), r,
                    preferred_element_type=f32)
    return (ac + rel_shift(bd)) * scale


def attend(
    scores: jax.Array,
    mask: jax.Array,
    v: jax.Array,
    drop: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """Masked softmax over keys then the weighted sum of v.

    scores [..., H, Tq, Tk] f32, mask broadcastable to it (True = visible), v [..., Tk, H, D]
    -> [..., Tq, H, D] in v's dtype.
    """
    scores = jnp.where(mask, scores, NEG_INF)
    prob = jax.nn.softmax(scores, axis=-1)
    if drop is not None:
        prob = drop(prob)
    return jnp.einsum("...hqk,...khd->...qhd", prob.astype(v.dtype), v)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout with an explicit key (usable inside lax.map)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


# ----------------------------------------------------------------------------- banded (window)


def band_plan(seq_len: int, window: int) -> tuple[int, int, int]:
    """(block C, history blocks m, number of blocks nb) for blocked band attention over
    seq_len tokens: each query block attends to itself and the m blocks before it."""
    block = max(1, min(window, seq_len))
    n_blocks = -(-seq_len // block)
    history = min(-(-(window - 1) // block), n_blocks - 1)
    return block, history, n_blocks


def with_history(x: jax.Array, block: int, history: int) -> jax.Array:
    """[B, nb*C, ...] -> [B, nb, (history+1)*C, ...]: each block preceded by `history`
    blocks (zeros before the start)."""
    b, t = x.shape[:2]
    n_blocks = t // block
    pad = [(0, 0), (history * block, 0)] + [(0, 0)] * (x.ndim - 2)
    xp = jnp.pad(x, pad)
    parts = [
        xp[:, s * block : s * block + t].reshape(b, n_blocks, block, *x.shape[2:])
        for s in range(history + 1)
    ]
    return jnp.concatenate(parts, axis=2)


def band_mask(block: int, history: int, n_blocks: int, window: int) -> np.ndarray:
    """[nb, C, (m+1)C] bool: query i of block n sees key j iff 0 <= dist <= window-1 and the
    key exists (absolute position >= 0); dist = m*C + i - j."""
    i = np.arange(block)[:, None]
    j = np.arange((history + 1) * block)[None, :]
    dist = history * block + i - j
    inside = (dist >= 0) & (dist <= window - 1)
    n = np.arange(n_blocks)[:, None, None]
    exists = j[None] >= (history - n) * block
    return inside[None] & exists
