"""Vanilla fixed-context decoder (the paper's baseline): no memory, context ctx_len.

`apply` on [B, T] with T <= ctx_len is plain causal attention; longer inputs are cut into
independent segments of ctx_len (no information crosses a segment boundary), as the
baseline is trained. Evaluation uses `vanilla_strided_nll` (stride 1 = the paper's sliding
recompute: token t is predicted from exactly tokens t-ctx_len .. t-1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


def causal_visibility(seq_len: int) -> jax.Array:
    """[1, T, T] causal mask."""
    return jnp.tril(jnp.ones((seq_len, seq_len), bool))[None]


def vanilla_forward(mod: Decoder, tokens: jax.Array, deterministic: bool) -> jax.Array:
    """[B, T] -> logits [B, T, V]; segments of ctx_len never see each other."""
    ctx = mod.cfg.vanilla.ctx_len
    batch, seq_len = tokens.shape
    if seq_len <= ctx:
        return mod.masked_forward(tokens, causal_visibility(seq_len), deterministic)
    n_seg = -(-seq_len // ctx)
    padded = jnp.pad(tokens, [(0, 0), (0, n_seg * ctx - seq_len)]).reshape(batch * n_seg, ctx)
    logits = mod.masked_forward(padded, causal_visibility(ctx), deterministic)
    return logits.reshape(batch, n_seg * ctx, -1)[:, :seq_len]


def strided_plan(seq_len: int, ctx_len: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static plan for scoring targets 1..T-1: (window starts [nw], window of each target
    [T-1], position of each target in its window [T-1]).

    Windows hold L = min(ctx_len, T-1) inputs and end at L, L+stride, ... (the last clipped
    to T-1); each target is scored in the first window whose end reaches it.
    """
    length = min(ctx_len, seq_len - 1)
    ends = list(range(length, seq_len - 1, stride)) + [seq_len - 1]
    ends = sorted(set(ends))
    starts = np.array([e - length for e in ends], np.int32)
    targets = np.arange(1, seq_len)
    win = np.searchsorted(np.array(ends), targets, side="left").astype(np.int32)
    pos = (targets - starts[win] - 1).astype(np.int32)
    return starts, win, pos


def vanilla_strided_nll(
    model: Decoder,
    params,
    tokens: jax.Array,
    ctx_len: int,
    stride: int = 1,
    windows_per_batch: int = 64,
) -> jax.Array:
    """Per-token NLL of tokens[1:] ([T] -> [T-1], or [B, T] -> [B, T-1]) with strided windows
    of ctx_len tokens (full causal attention inside each window, for any arch's parameters).

    stride 1: target t is predicted from exactly tokens max(0, t-ctx_len) .. t-1, every window
    recomputed. Windows are batched (`windows_per_batch` at a time, lax.map). Pure and
    jit-friendly: `jax.jit(vanilla_strided_nll, static_argnums=(0, 3, 4, 5))`.
    """
    from longctx.models.decoder import Decoder
    from longctx.models.nll import target_logprobs

    squeeze = tokens.ndim == 1
    tokens = jnp.atleast_2d(tokens)
    batch, seq_len = tokens.shape
    starts, win, pos = strided_plan(seq_len, ctx_len, stride)
    length = min(ctx_len, seq_len - 1)
    n_win = len(starts)
    idx = starts[:, None] + np.arange(length + 1)[None, :]  # inputs and the next token
    windows = tokens[:, idx]  # [B, nw, L+1]
    mask = jnp.tril(jnp.ones((length, length), bool))[None]

    def score(w: jax.Array, last: int) -> jax.Array:
        logits = model.apply({"params": params}, w[:, :-1], mask, method=Decoder.masked_forward,
                             last=last)
        return -target_logprobs(logits, w[:, -last:])

    # The first window scores all its targets; every later one only its last `keep`
    # positions (the targets new to it), so only those reach the output layer.
    first = score(windows[:, 0], length)  # [B, L]
    keep = min(stride, length)
    rest = windows[:, 1:].reshape(batch * (n_win - 1), length + 1)
    if rest.shape[0]:
        per = max(1, min(windows_per_batch, rest.shape[0]))
        n_batches = -(-rest.shape[0] // per)
        rest = jnp.pad(rest, [(0, n_batches * per - rest.shape[0]), (0, 0)])
        later = jax.lax.map(lambda w: score(w, keep), rest.reshape(n_batches, per, length + 1))
        later = later.reshape(-1, keep)[: batch * (n_win - 1)].reshape(batch, n_win - 1, keep)
    else:
        later = jnp.zeros((batch, 0, keep), first.dtype)
    is_first = win == 0
    out = jnp.where(is_first[None], first[:, np.where(is_first, pos, 0)],
                    later[:, np.maximum(win - 1, 0), np.clip(pos - (length - keep), 0, keep - 1)])
    return out[0] if squeeze else out
