"""Sliding-window decoder: token i sees keys i-W+1 .. i at every layer.

The full forward uses blocked local attention: the sequence is cut into blocks of C = W
queries, each attending to its own block and the one(s) before it under a band mask, so
time and memory are O(T * W), never a T x T score matrix. Streaming (chunk by chunk, with a
ring-buffer KV cache of W entries per layer) lives in `window_decode.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from longctx.models import attention as A
from longctx.models.primitives import descending_pos_emb

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


def window_forward(mod: Decoder, tokens: jax.Array, deterministic: bool) -> jax.Array:
    """[B, T] tokens -> logits [B, T, V] float32 under the causal band of width cfg.window.window."""
    cfg = mod.cfg
    seq_len = tokens.shape[1]
    block, history, n_blocks = A.band_plan(seq_len, cfg.window.window)
    padded = jnp.pad(tokens, [(0, 0), (0, n_blocks * block - seq_len)])
    mask = jnp.asarray(A.band_mask(block, history, n_blocks, cfg.window.window))
    h = mod.embed(padded, deterministic)
    pos_emb = mod.dropout(descending_pos_emb(cfg, (history + 1) * block), deterministic)
    h, _ = mod.run_layers(h, pos_emb, mask, deterministic=deterministic, band=(block, history))
    return mod.output(h, deterministic)[:, :seq_len]

