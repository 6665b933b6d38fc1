"""Helpers shared by the model tests: jitted init/apply of tiny models."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models import Decoder, build_model, init_memory
from longctx.models.recurrent_memory import rmt_init


def make(cfg: ModelConfig, batch: int = 2, seed: int = 0):
    """(model, params) for cfg, initialised under jit."""
    model = build_model(cfg)
    tokens = jnp.zeros((batch, cfg.xl.tgt_len), jnp.int32)
    init = jax.jit(model.init)
    params = init({"params": jax.random.key(seed)}, tokens, init_memory(cfg, batch),
                  jnp.zeros((batch,), bool))["params"]
    return model, params


@partial(jax.jit, static_argnums=0, static_argnames=("deterministic",))
def forward(model, params, tokens, memory=None, reset=None, deterministic=True, rng=None):
    """Jitted model.apply -> (logits, memory)."""
    rngs = {"dropout": rng} if rng is not None else {}
    return model.apply({"params": params}, tokens, memory, reset, deterministic=deterministic,
                       rngs=rngs)


# recurrent_memory.rmt_init (decoder + memory_init [+ gate]) as one jitted program: run
# eagerly, each of its operations compiles on its own
rmt_params = jax.jit(rmt_init, static_argnums=(0, 2, 3))


@partial(jax.jit, static_argnums=0)
def band_visibility(seq_len: int, window: int) -> jax.Array:
    """[1, T, T] dense band mask (query i sees keys i-W+1 .. i), the sliding window's view."""
    i = jnp.arange(seq_len)[:, None]
    j = jnp.arange(seq_len)[None, :]
    return ((i - j >= 0) & (i - j < window))[None]


@partial(jax.jit, static_argnums=0)
def masked(model, params, tokens, mask):
    """Jitted dense forward under an explicit visibility mask."""
    return model.apply({"params": params}, tokens, mask, method=Decoder.masked_forward)


def rel(a, b) -> float:
    """max|a - b| / max|b|."""
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
