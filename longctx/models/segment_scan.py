"""Training over several segments per step, with gradients through the memory (truncated BPTT).

A recurrent model's memory is the carry of a `lax.scan` over the K segments of one training
step: each segment reads the memory the previous one wrote, and the loss of segment k
reaches the parameters through every segment before it. Each segment's body is
rematerialised (`jax.checkpoint`), so the backward pass keeps one memory per segment
boundary and recomputes a segment's activations when it needs them: activation memory stays
about one segment's, whatever K. Between training steps the memory enters as an input, so
gradients are truncated there (every K segments).

`stop_gradient=True` stops the gradient at every segment boundary instead (the ablation:
the same forward values, but no loss teaches a segment what to write for the next one).

Two forms: `scan_segments` / `xl_segments` / `recurrent_memory.rmt_segments` drive the
model from outside (a `model.apply` per segment inside `lax.scan` + `jax.checkpoint`), and
`scan_in_apply` runs inside the Decoder's apply (Flax's lifted `nn.scan` + `nn.remat`), as
an architecture's forward over a training row of `bptt_segments` segments does (`xl` and
`rmt` in `longctx.models.archs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from longctx.models.memory import Memory
from longctx.models.transformer_xl import xl_forward


def split_segments(x: jax.Array, seg_len: int) -> jax.Array:
    """[B, K*T, ...] -> [K, B, T, ...] (segments first, the scan's axis)."""
    b, n = x.shape[:2]
    if n % seg_len:
        raise ValueError(f"a row of {n} tokens does not split into segments of {seg_len}")
    return jnp.swapaxes(x.reshape(b, n // seg_len, seg_len, *x.shape[2:]), 0, 1)


def join_segments(x: jax.Array) -> jax.Array:
    """[K, B, T, ...] -> [B, K*T, ...] (inverse of split_segments)."""
    k, b, t = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape(b, k * t, *x.shape[3:])


def scan_segments(
    segment_fn: Callable[[Any, Any], tuple[Any, Any]],
    carry: Any,
    xs: Any,
    *,
    stop_gradient: bool = False,
    remat: bool = True,
) -> tuple[Any, Any]:
    """lax.scan of segment_fn(carry, x) -> (carry, y) over the leading axis of xs.

    The gradient flows through the carry from segment to segment unless stop_gradient,
    which stops it at every boundary (the first segment still reads `carry` with its
    gradient). remat: each segment's activations are recomputed in the backward pass."""

    def body(c, x):
        new_c, y = segment_fn(c, x)
        if stop_gradient:
            new_c = jax.lax.stop_gradient(new_c)
        return new_c, y

    if remat:
        body = jax.checkpoint(body)
    return jax.lax.scan(body, carry, xs)


def xl_segments(
    model,
    params,
    memory: Memory,
    tokens: jax.Array,
    seg_len: int,
    head: Callable[[jax.Array, Any], Any],
    extras: Any = None,
    *,
    reset: jax.Array | None = None,
    memory_grad: bool = True,
    deterministic: bool = True,
    rng: jax.Array | None = None,
    remat: bool = True,
) -> tuple[Any, Memory]:
    """Transformer-XL over tokens [B, K*seg_len], segment by segment with its memory.

    head(logits [B, T, V], extras_k) -> y_k reduces each segment's logits (a loss, a
    per-token NLL, predictions) so that K full logit arrays are never kept; extras is a
    pytree of [B, K*seg_len, ...] arrays split like the tokens (targets, masks) or None.
    reset [B]: rows whose memory is emptied before the first segment. memory_grad: the
    gradient flows through the memory across the K segments (else stopped, as plain XL).
    Returns (stacked y [K, ...], memory after the last segment)."""
    xs = (split_segments(tokens, seg_len),
          jax.tree.map(lambda a: split_segments(a, seg_len), extras),
          jnp.arange(tokens.shape[1] // seg_len))
    if reset is not None:
        memory = Memory(hidden=jnp.where(reset[None, :, None, None], 0.0, memory.hidden),
                        valid=jnp.where(reset, 0, memory.valid).astype(jnp.int32))

    def segment(mem, x):
        seg, extra, k = x
        rngs = {"dropout": jax.random.fold_in(rng, k)} if rng is not None else {}
        logits, mem = model.apply({"params": params}, seg, mem, None, deterministic,
                                  memory_grad, method=xl_forward, rngs=rngs)
        return mem, head(logits, extra)

    memory, ys = scan_segments(segment, memory, xs, stop_gradient=not memory_grad, remat=remat)
    return ys, memory


def scan_in_apply(mod, segment_fn: Callable, state: Any, tokens: jax.Array, seg_len: int, *,
                  stop_gradient: bool, deterministic: bool) -> tuple[jax.Array, Any]:
    """Inside the Decoder's apply (an architecture's forward): tokens [B, K*seg_len]
    segment by segment, segment_fn(mod, tokens [B, T], state, deterministic) -> (logits,
    state), the state carried with its gradient unless stop_gradient -> (logits [B, K*T, V],
    the state after the last segment). Flax's lifted scan (the shared parameters broadcast,
    a dropout key per segment) over a rematerialised body (`nn.remat`), so the backward
    pass keeps one state per boundary and recomputes a segment's activations."""
    xs = split_segments(tokens, seg_len)

    def body(m, carry, seg):
        logits, new = segment_fn(m, seg, carry, deterministic)
        if stop_gradient:
            new = jax.lax.stop_gradient(new)
        return new, logits

    scan = nn.scan(nn.remat(body), variable_broadcast="params",
                   split_rngs={"params": False, "dropout": True}, length=xs.shape[0])
    state, logits = scan(mod, state, xs)
    return join_segments(logits), state


def xl_row_forward(mod, segment_forward: Callable, reset_state: Callable, tokens: jax.Array,
                   state: Any, reset: jax.Array | None, deterministic: bool
                   ) -> tuple[jax.Array, Any]:
    """An XL-family architecture's forward over a call of tokens [B, n]: one segment
    (`model.xl.bptt_segments` = 1, or n <= tgt_len) is segment_forward(mod, tokens, state,
    reset, deterministic); a training row of K segments is `scan_in_apply` over them, the
    state (reset_state(state, reset, keep_grad)) carried with its gradient unless
    `model.xl.bptt_stop_gradient`. segment_forward takes `memory_grad` for that."""
    cfg = mod.cfg
    if cfg.xl.bptt_segments == 1 or tokens.shape[1] <= cfg.xl.tgt_len:
        return segment_forward(mod, tokens, state, reset, deterministic)
    grad = not cfg.xl.bptt_stop_gradient

    def segment(m, seg, carry, det):
        return segment_forward(m, seg, carry, None, det, memory_grad=grad)

    return scan_in_apply(mod, segment, reset_state(state, reset, keep_grad=grad), tokens,
                         cfg.xl.tgt_len, stop_gradient=not grad, deterministic=deterministic)
