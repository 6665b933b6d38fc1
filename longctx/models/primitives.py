"""Small building blocks: sinusoidal relative positions, dtypes, initialisers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from longctx.config import ModelConfig


def compute_dtype(cfg: ModelConfig) -> jnp.dtype:
    """The activation dtype (parameters stay float32)."""
    return jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32


def init(cfg: ModelConfig) -> nn.initializers.Initializer:
    """Normal(0, init_std) for every weight matrix, as the original."""
    return nn.initializers.normal(stddev=cfg.init_std)


def clamp_distance(dist: jax.Array, clamp_len: int) -> jax.Array:
    """Distances clamped to at most clamp_len when clamp_len > 0 (and to >= 0 always)."""
    dist = jnp.maximum(dist, 0)
    return jnp.minimum(dist, clamp_len) if clamp_len > 0 else dist


def sinusoid(dist: jax.Array, d_model: int) -> jax.Array:
    """concat(sin(pos*inv_freq), cos(pos*inv_freq)) of relative distances, float32."""
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model))
    angle = dist.astype(jnp.float32)[..., None] * inv_freq
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def descending_pos_emb(cfg: ModelConfig, key_len: int) -> jax.Array:
    """[key_len, d_model] sinusoids of distances key_len-1 ... 0 (the rel_shift layout)."""
    dist = jnp.arange(key_len - 1, -1, -1)
    return sinusoid(clamp_distance(dist, cfg.clamp_len), cfg.d_model)


def distance_table(cfg: ModelConfig, size: int) -> jax.Array:
    """Sinusoids [size, d_model] of the distances 0 .. size-1 (clamped as the model clamps
    them), made once at trace time: a decode step scores its positional term against this
    constant and picks each key's score by its distance, with no sin/cos of its own."""
    with jax.ensure_compile_time_eval():
        return sinusoid(clamp_distance(jnp.arange(size), cfg.clamp_len), cfg.d_model)
