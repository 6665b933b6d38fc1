"""Choosing the next token from logits: greedy, temperature, top-k and top-p, seeded.

The knobs are traced scalars, not static arguments, so one compiled function serves every
setting (changing the temperature never recompiles). Order as usual: temperature, then
top-k, then top-p on what is left; temperature 0 means greedy (argmax).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp

from longctx.errors import UserError

INT32_MAX = 2**31 - 1
SEED_LIMIT = 2**32  # PRNGKey keeps 32 bits of a seed: 2**32 would sample like 0


def check_seed(seed: int) -> int:
    """A sampler seed every value of which gives its own PRNG key; UserError otherwise."""
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"--seed: must be in 0..{SEED_LIMIT - 1}, got {seed}")
    return seed


@dataclass(frozen=True)
class SamplerSettings:
    """How replies are sampled; `max_new_tokens` bounds a reply (end of turn included)."""

    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise UserError(f"--temperature: must be a finite number >= 0 (0 = greedy), got "
                            f"{self.temperature}")
        if not 0 <= self.top_k <= INT32_MAX:
            raise UserError(f"--top-k: must be in 0..{INT32_MAX} (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p: must be in (0, 1] (1 = off), got {self.top_p}")
        if not 1 <= self.max_new_tokens <= INT32_MAX:
            raise UserError(f"--max-new-tokens: must be in 1..{INT32_MAX}, got "
                            f"{self.max_new_tokens}")

    def knobs(self) -> dict[str, jax.Array]:
        """The traced scalars `sample_token` takes (same dtypes every time: no recompiles)."""
        return {
            "temperature": jnp.asarray(self.temperature, jnp.float32),
            "top_k": jnp.asarray(self.top_k, jnp.int32),
            "top_p": jnp.asarray(self.top_p, jnp.float32),
        }

    def to_json(self) -> dict:
        return asdict(self)


def filter_logits(logits: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """[B, V] logits with everything outside the top-k and the top-p nucleus set to -inf.

    top_k <= 0 keeps every token; the nucleus is the smallest prefix of the sorted
    distribution whose mass reaches top_p (the most likely token is always kept).
    """
    vocab = logits.shape[-1]
    ordered = jnp.sort(logits, axis=-1)[..., ::-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, logits.shape[:-1])[..., None], -1)
    ordered = jnp.where(ordered >= kth, ordered, -jnp.inf)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = jnp.where(mass_before < top_p, ordered, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    return jnp.where(logits >= jnp.maximum(threshold, kth), logits, -jnp.inf)


def sample_token(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
                 top_p: jax.Array) -> jax.Array:
    """[B, V] float logits -> [B] int32 tokens; `key` is a raw uint32[2] PRNG key."""
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    sampled = jax.random.categorical(key, filter_logits(scaled, top_k, top_p), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


def split_and_sample(logits: jax.Array, key: jax.Array, knobs: dict[str, jax.Array]
                     ) -> tuple[jax.Array, jax.Array]:
    """Advance the PRNG key and sample: (tokens [B], next key). Deterministic given the key."""
    key, sub = jax.random.split(key)
    return sample_token(logits, sub, **knobs), key
