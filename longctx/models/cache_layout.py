"""The key/value cache layout of the decoders (XL's memory + segment, the window's ring
buffer): per layer, keys [B, H, D, K] and values [B, H, K, D].

A decode step's dots (q . k over D, p . v over K) then read each layer's arrays as they
are: XLA's CPU dots take the contracted axis second-to-last, so keys laid out [K, D] would
be copied transposed every token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models.primitives import compute_dtype


def empty_cache(cfg: ModelConfig, batch_size: int, size: int) -> tuple[tuple, tuple]:
    """Zero keys and values of `size` slots for every layer."""
    dt = compute_dtype(cfg)
    k = tuple(jnp.zeros((batch_size, cfg.n_head, cfg.d_head, size), dt) for _ in range(cfg.n_layer))
    v = tuple(jnp.zeros((batch_size, cfg.n_head, size, cfg.d_head), dt) for _ in range(cfg.n_layer))
    return k, v


def to_cache(k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """k, v [B, K, H, D] -> the cache layout (keys [B, H, D, K], values [B, H, K, D])."""
    return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)


def from_cache(kc: jax.Array, vc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The cache layout -> k, v [B, K, H, D]."""
    return kc.transpose(0, 3, 1, 2), vc.transpose(0, 2, 1, 3)


def write_token(ks: tuple, vs: tuple, k: list, v: list, slot: jax.Array) -> tuple[tuple, tuple]:
    """Each layer's new k, v [B, H, D] into its cache at `slot`."""
    ks = tuple(jax.lax.dynamic_update_slice(c, r[..., None].astype(c.dtype), (0, 0, 0, slot))
               for c, r in zip(ks, k, strict=True))
    vs = tuple(jax.lax.dynamic_update_slice(c, r[:, :, None].astype(c.dtype), (0, 0, slot, 0))
               for c, r in zip(vs, v, strict=True))
    return ks, vs
