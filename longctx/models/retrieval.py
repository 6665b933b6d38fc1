"""Transformer-XL with a retrieval memory (kNN-augmented attention, as the Memorizing
Transformer, Wu et al. 2022, and Unlimiformer, Bertsch et al. 2023).

XL keeps its memory of mem_len hidden states per layer. In addition each layer keeps a
long store of the keys and values of the rows that left XL's memory (FIFO, the last
`store_len` of them, right-aligned with a fill count like the memory), not differentiated
through between training steps (within a training row of `bptt_segments` segments the
gradient flows through memory and store alike, as XL's gradients through memory). Every
query also attends to the `retrieval_k` stored keys with the highest content score
(q + r_w_bias) . k of its own head, under one softmax with XL's local keys. A
retrieved key has no position of its own: it gets one clamped distance
(`retrieval_distance`, default mem_len + tgt_len - 1, the farthest XL saw in training), so
its positional term is the same for every retrieved key and top-k by content is top-k by
the whole score; a trained XL's content-matching heads use the keys unchanged.

The store holds keys and values rather than hidden states: a row's k and v depend only on
its hidden state and the layer's parameters, so storing them costs one projection per row
instead of re-projecting the whole store every segment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ModelConfig
from longctx.models import attention as A
from longctx.models.cache_layout import to_cache
from longctx.models.memory import Memory, apply_reset, empty_memory, key_valid, update_memory
from longctx.models.primitives import clamp_distance, descending_pos_emb, sinusoid
from longctx.models.state import Rows
from longctx.models.transformer_xl import _check_rows, xl_visibility

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


@flax.struct.dataclass
class RetrievalState(Rows):
    """xl: XL's memory; keys [n_layer, B, H, D, store_len] and values [n_layer, B, H,
    store_len, D] float32: each layer's stored rows, oldest first, laid out as the decode
    caches (`cache_layout`: the scan's dot reads them without a copy); filled: [B] int32,
    the last filled[b] rows are real."""

    xl: Memory
    keys: jax.Array
    values: jax.Array
    filled: jax.Array

    def batch_axes(self) -> RetrievalState:
        return RetrievalState(xl=self.xl.batch_axes(), keys=1, values=1, filled=0)


def far_distance(cfg: ModelConfig) -> int:
    """The distance every retrieved key is given (before clamp_len applies)."""
    r = cfg.xl_retrieval.retrieval_distance
    return r if r > 0 else cfg.xl.mem_len + cfg.xl.tgt_len - 1


def empty_state(cfg: ModelConfig, batch_size: int) -> RetrievalState:
    """An empty XL memory and empty stores."""
    lead = (cfg.n_layer, batch_size, cfg.n_head)
    store = cfg.xl_retrieval.store_len
    keys = jnp.zeros(lead + (cfg.d_head, store), jnp.float32)
    values = jnp.zeros(lead + (store, cfg.d_head), jnp.float32)
    return RetrievalState(xl=empty_memory(cfg, batch_size), keys=keys, values=values,
                          filled=jnp.zeros((batch_size,), jnp.int32))


def reset_state(state: RetrievalState, reset: jax.Array | None, keep_grad: bool = False
                ) -> RetrievalState:
    """Empty the lanes where `reset` (a conversation starts): memory and store. The memory's
    gradient is stopped unless keep_grad; the store keeps the gradient `_push` gave it."""
    xl = apply_reset(state.xl, reset, keep_grad=keep_grad)
    filled = state.filled
    if reset is not None:
        filled = jnp.where(jnp.asarray(reset, bool), 0, filled)
    return RetrievalState(xl=xl, keys=state.keys, values=state.values,
                          filled=filled.astype(jnp.int32))


def store_valid(filled: jax.Array, size: int) -> jax.Array:
    """[B, size] bool: which store rows are real (the last filled[b])."""
    return jnp.arange(size)[None, :] >= (size - filled)[:, None]


def retrieve(q: jax.Array, r_w_bias: jax.Array, keys: jax.Array, values: jax.Array,
             filled: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each query's top-k stored keys of its head by content score.

    q [B, T, H, D], keys [B, H, D, S], values [B, H, S, D], filled [B] -> (scaled content
    scores [B, H, T, k] f32, their values [B, H, T, k, D], which of them are real
    [B, H, T, k]: a row outside the fill scores NEG_INF exactly, real rows far above)."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    content = jnp.einsum("bqhd,bhds->bhqs", q + r_w_bias.astype(q.dtype), keys.astype(q.dtype),
                         preferred_element_type=jnp.float32) * scale
    ok = store_valid(filled, keys.shape[-1])[:, None, None, :]
    top, idx = jax.lax.top_k(jnp.where(ok, content, A.NEG_INF), k)
    picked_v = jax.vmap(jax.vmap(lambda v, i: v[i]))(values, idx)  # [B, H, T, k, D]
    return top, picked_v, top > A.NEG_INF / 2


def retrieval_forward(mod: Decoder, tokens: jax.Array, state: RetrievalState,
                      reset: jax.Array | None, deterministic: bool, memory_grad: bool = False
                      ) -> tuple[jax.Array, RetrievalState]:
    """One segment [B, T] -> (logits [B, T, V] f32, the state after it): XL's segment
    forward where every query also attends to its top-k stored keys at the far distance;
    the rows leaving XL's memory (the first T of memory + segment) join the store.
    memory_grad: gradients flow through the memory and the store (in and out), for training
    over several segments per step (`longctx.models.segment_scan`): a query's loss then
    reaches the stored keys and values it retrieved, and the parameters that made them."""
    cfg = mod.cfg
    _check_rows(cfg, state.xl)
    state = reset_state(state, reset, keep_grad=memory_grad)
    memory = state.xl
    rows, seg_len = memory.hidden.shape[2], tokens.shape[1]
    mask = xl_visibility(cfg, key_valid(memory), seg_len)[:, None]  # [B, 1, T, M+T]
    far = sinusoid(clamp_distance(jnp.asarray([far_distance(cfg)]), cfg.clamp_len), cfg.d_model)
    pos = mod.dropout(jnp.concatenate([descending_pos_emb(cfg, rows + seg_len), far]),
                      deterministic)
    pos_emb, far_emb = pos[:-1], pos[-1:]
    scale = 1.0 / np.sqrt(cfg.d_head)
    rw, rr = mod.shared_biases()
    h = mod.embed(tokens, deterministic)
    hids, leaving_k, leaving_v = [h], [], []
    for i, layer in enumerate(mod.layers):
        lrw, lrr = layer.biases(rw, rr)
        src = jnp.concatenate([memory.hidden[i].astype(h.dtype), h], axis=1)
        q, k, v = layer.project(src, n_query=seg_len)
        local = A.rel_scores(q, k, layer.rel_proj(pos_emb), lrw, lrr)  # [B, H, T, M+T]
        top, got_v, got_ok = retrieve(q, lrw, state.keys[i], state.values[i], state.filled,
                                      cfg.xl_retrieval.retrieval_k)
        r_far = layer.rel_proj(far_emb)[0]  # [H, D]
        far_score = jnp.einsum("bqhd,hd->bhq", q + lrr.astype(q.dtype), r_far,
                               preferred_element_type=jnp.float32) * scale
        scores = jnp.concatenate([jnp.where(mask, local, A.NEG_INF),
                                  jnp.where(got_ok, top + far_score[..., None], A.NEG_INF)], -1)
        prob = jax.nn.softmax(scores, axis=-1)
        if cfg.dropatt > 0 and not deterministic:
            prob = layer.drop_att(prob, deterministic=False)
        prob = prob.astype(v.dtype)
        n_local = rows + seg_len
        vec = (jnp.einsum("bhqk,bkhd->bqhd", prob[..., :n_local], v)
               + jnp.einsum("bhqk,bhqkd->bqhd", prob[..., n_local:], got_v.astype(v.dtype)))
        h = layer.finish(h, vec, deterministic)
        hids.append(h)
        left_k, left_v = to_cache(k[:, :seg_len], v[:, :seg_len])  # [B, H, D, T], [B, H, T, D]
        leaving_k.append(left_k)
        leaving_v.append(left_v)
    logits = mod.output(h, deterministic)
    new_rows = jnp.clip(seg_len - rows + memory.valid, 0, seg_len)  # real rows that left
    return logits, RetrievalState(
        xl=update_memory(memory, jnp.stack(hids), keep_grad=memory_grad),
        keys=_push(state.keys, jnp.stack(leaving_k), -1, memory_grad),
        values=_push(state.values, jnp.stack(leaving_v), -2, memory_grad),
        filled=jnp.minimum(cfg.xl_retrieval.store_len, state.filled + new_rows).astype(jnp.int32))


def _push(store: jax.Array, rows: jax.Array, axis: int, keep_grad: bool) -> jax.Array:
    """The last store_len rows (along `axis`) of concat(store, rows), no gradient unless
    keep_grad. (Real rows stay a suffix: rows leave XL's memory only once it is full, so a
    store that holds anything gets only real rows.)"""
    size = store.shape[axis]
    cat = jnp.concatenate([store, rows.astype(store.dtype)], axis=axis)
    kept = jax.lax.slice_in_dim(cat, cat.shape[axis] - size, cat.shape[axis], axis=axis)
    return kept if keep_grad else jax.lax.stop_gradient(kept)
