"""Sliding-window streaming: a ring-buffer KV cache of `window` entries per layer.

Position t lives in slot t mod W. `window_decode_step` feeds one token (writes its k/v into
its slot, attends over the W slots); `window_feed` feeds a chunk of C tokens at once (for
fast scoring); both reproduce the full banded forward exactly and can be mixed freely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models.cache_layout import empty_cache, from_cache, to_cache, write_token
from longctx.models.memory import Rows
from longctx.models.nll import target_logprobs
from longctx.models.primitives import descending_pos_emb, distance_table

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


@flax.struct.dataclass
class WindowCache(Rows):
    """k: one [B, n_head, d_head, W] array per layer, v: one [B, n_head, W, d_head] (compute
    dtype; see `to_cache`); slot t mod W holds position t; pos: int32 scalar, tokens fed."""

    k: jax.Array
    v: jax.Array
    pos: jax.Array

    def batch_axes(self) -> WindowCache:
        return WindowCache(k=tuple(0 for _ in self.k), v=tuple(0 for _ in self.v), pos=None)


def window_decode_init(cfg: ModelConfig, batch_size: int) -> WindowCache:
    """An empty cache (nothing fed yet)."""
    k, v = empty_cache(cfg, batch_size, cfg.window.window)
    return WindowCache(k=k, v=v, pos=jnp.zeros((), jnp.int32))


def _step(mod: Decoder, token: jax.Array, cache: WindowCache):
    """Inside apply: one token per row against the ring buffer -> (logits [B, V], the
    token's k, v per layer [B, H, D]; the caller writes them into the cache)."""
    cfg = mod.cfg
    width, t = cfg.window.window, cache.pos
    dist = (t - jnp.arange(width)) % width  # distance of the position held in each slot
    # dist 0 is this token's slot: its old row (position t - W) is out of the window; the
    # token's own key is scored apart by attend_one
    seen = jnp.broadcast_to((dist <= t) & (dist > 0), (token.shape[0], width))
    return mod.decode_token(token, cache.k, cache.v, distance_table(cfg, width), dist, seen)


def _feed(mod: Decoder, tokens: jax.Array, cache: WindowCache) -> tuple[jax.Array, WindowCache]:
    """Inside apply: a chunk [B, C] against the cache (keys: the W cached + the C new)."""
    cfg = mod.cfg
    width, t = cfg.window.window, cache.pos
    chunk = tokens.shape[1]
    i = jnp.arange(chunk)[:, None]
    j = jnp.arange(width + chunk)[None, :]
    dist = width + i - j
    seen = (dist >= 0) & (dist < width) & (t - width + j >= 0)
    pos_emb = descending_pos_emb(cfg, width + chunk)

    def ring_in_order(n):  # the W cached rows, oldest first [B, W, H, D]
        return tuple(jnp.roll(x, -(t % width), axis=1)
                     for x in from_cache(cache.k[n], cache.v[n]))

    logits, kks, vvs = mod.decode_block(tokens, ring_in_order, seen[None, None], pos_emb)
    caches = [to_cache(jnp.roll(kk[:, chunk:], (t + chunk) % width, axis=1),
                       jnp.roll(vv[:, chunk:], (t + chunk) % width, axis=1))
              for kk, vv in zip(kks, vvs, strict=True)]
    return logits, WindowCache(k=tuple(c[0] for c in caches), v=tuple(c[1] for c in caches),
                               pos=t + chunk)


def window_decode_step(
    model: Decoder, params, token: jax.Array, cache: WindowCache
) -> tuple[jax.Array, WindowCache]:
    """Feed one token [B] -> (logits [B, V] float32, cache). Jit with static_argnums=0."""
    logits, k, v = model.apply({"params": params}, token, cache, method=_step)
    k, v = write_token(cache.k, cache.v, k, v, cache.pos % model.cfg.window.window)
    return logits, WindowCache(k=k, v=v, pos=cache.pos + 1)


def window_feed(
    model: Decoder, params, tokens: jax.Array, cache: WindowCache
) -> tuple[jax.Array, WindowCache]:
    """Feed a chunk [B, C] -> (logits [B, C, V] float32, cache). Jit with static_argnums=0."""
    return model.apply({"params": params}, tokens, cache, method=_feed)


def window_stream_logits(
    model: Decoder, params, tokens: jax.Array, chunk: int, cache: WindowCache | None = None
) -> tuple[jax.Array, WindowCache]:
    """Run [B, T] tokens chunk by chunk (a lax.scan of window_feed, then the remainder) ->
    (logits [B, T, V], cache): equal to the full banded forward, with O(chunk * W) memory."""
    batch, seq_len = tokens.shape
    if cache is None:
        cache = window_decode_init(model.cfg, batch)
    whole = seq_len // chunk * chunk
    outs = []
    if whole:
        parts = tokens[:, :whole].reshape(batch, whole // chunk, chunk).swapaxes(0, 1)

        def body(c, part):
            logits, c = window_feed(model, params, part, c)
            return c, logits

        cache, logits = jax.lax.scan(body, cache, parts)
        outs.append(logits.swapaxes(0, 1).reshape(batch, whole, -1))
    if whole < seq_len:
        logits, cache = window_feed(model, params, tokens[:, whole:], cache)
        outs.append(logits)
    return jnp.concatenate(outs, axis=1), cache


def window_stream_nll(model: Decoder, params, tokens: jax.Array, chunk: int) -> jax.Array:
    """Per-token NLL [B, T-1] of tokens[:, 1:] under the window model, streamed by chunks."""
    logits, _ = window_stream_logits(model, params, tokens[:, :-1], chunk)
    return -target_logprobs(logits, tokens[:, 1:])
