"""The XL memory pytree: cached hidden states per layer, right-aligned, with a valid count.

`hidden[0]` caches the embeddings and `hidden[i]` the output of layer `i-1` (as the original
Transformer-XL's `mems`). Row b's valid entries are the last `valid[b]` rows; the rest are
masked as keys. A fixed size keeps every shape static under `jit`.

Like every per-lane state (`longctx.models.state`) it says where its batch axis is.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models.state import Rows


@flax.struct.dataclass
class Memory(Rows):
    """hidden: [n_layer+1, B, mem_len, d_model] float32; valid: [B] int32 rows in use."""

    hidden: jax.Array
    valid: jax.Array

    def batch_axes(self) -> Memory:
        return Memory(hidden=1, valid=0)


def empty_memory(cfg: ModelConfig, batch_size: int) -> Memory:
    """An empty XL memory of mem_len rows per layer (valid = 0)."""
    hidden = jnp.zeros((cfg.n_layer + 1, batch_size, cfg.xl.mem_len, cfg.d_model), jnp.float32)
    return Memory(hidden=hidden, valid=jnp.zeros((batch_size,), jnp.int32))


def apply_reset(memory: Memory, reset: jax.Array | None, keep_grad: bool = False) -> Memory:
    """Empty the rows where `reset` is True (a new conversation starts there); stop gradients
    unless keep_grad (gradients through memory, over the segments of one training step)."""
    hidden = memory.hidden if keep_grad else jax.lax.stop_gradient(memory.hidden)
    valid = memory.valid
    if reset is not None:
        reset = jnp.asarray(reset, bool)
        valid = jnp.where(reset, 0, valid)
        hidden = jnp.where(reset[None, :, None, None], 0.0, hidden)
    return Memory(hidden=hidden, valid=valid.astype(jnp.int32))


def key_valid(memory: Memory) -> jax.Array:
    """[B, mem_len] bool: which memory rows hold real keys (the last `valid[b]`)."""
    rows = memory.hidden.shape[2]
    return jnp.arange(rows)[None, :] >= (rows - memory.valid)[:, None]


def update_memory(memory: Memory, new_hidden: jax.Array, keep_grad: bool = False) -> Memory:
    """Last mem_len rows of concat(old rows, new_hidden [n_layer+1, B, T, d]); no gradient
    unless keep_grad."""
    rows = memory.hidden.shape[2]
    steps = new_hidden.shape[2]
    cat = jnp.concatenate([memory.hidden, new_hidden.astype(memory.hidden.dtype)], axis=2)
    hidden = cat[:, :, cat.shape[2] - rows :]
    hidden = hidden if keep_grad else jax.lax.stop_gradient(hidden)
    valid = jnp.minimum(rows, memory.valid + steps).astype(jnp.int32)
    return Memory(hidden=hidden, valid=valid)
