"""Transformer-XL: the segment forward with memory, and token-by-token decoding.

Segment mode: keys are concat(memory rows, segment); query i of the segment sees key j iff
the key is valid and 0 <= dist < (mem_len if same_length else inf), dist = mem_len + i - j
(the memory is right-aligned, so distances equal the original's `mlen + i - j`).

Decoding keeps the memory plus the hidden states of the current segment's tokens so far
(`seg`, every layer's input and the last layer's output); a step attends to
concat(memory, seg) exactly as segment mode does, and when tgt_len tokens have been fed the
segment rolls into the memory as segment mode's update would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ConfigError, ModelConfig
from longctx.models import attention as A
from longctx.models.blocks import clamp_distance, compute_dtype, descending_pos_emb, sinusoid
from longctx.models.memory import Memory, apply_reset, init_memory, key_valid, update_memory

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


def xl_visibility(cfg: ModelConfig, mem_valid: jax.Array, seg_len: int) -> jax.Array:
    """[B, T, M+T] bool: which keys (memory then segment) each query of the segment sees."""
    rows = mem_valid.shape[1]
    i = jnp.arange(seg_len)[:, None]
    j = jnp.arange(rows + seg_len)[None, :]
    dist = rows + i - j
    ok = dist >= 0
    if cfg.same_length:
        ok = ok & (dist < cfg.mem_len)
    keys = jnp.concatenate([mem_valid, jnp.ones((mem_valid.shape[0], seg_len), bool)], axis=1)
    return ok[None] & keys[:, None, :]


def _check_rows(cfg: ModelConfig, memory: Memory) -> None:
    if memory.hidden.shape[2] != cfg.mem_len or memory.hidden.shape[0] != cfg.n_layer + 1:
        raise ConfigError(
            f"config key 'model.mem_len': memory has shape {memory.hidden.shape}, expected "
            f"[{cfg.n_layer + 1}, B, {cfg.mem_len}, {cfg.d_model}]; build it with init_memory(cfg, B)"
        )


def xl_forward(
    mod: Decoder, tokens: jax.Array, memory: Memory, reset: jax.Array | None, deterministic: bool
) -> tuple[jax.Array, Memory]:
    """One segment [B, T] with memory -> (logits [B, T, V] f32, updated memory)."""
    cfg = mod.cfg
    _check_rows(cfg, memory)
    memory = apply_reset(memory, reset)
    rows, seg_len = memory.hidden.shape[2], tokens.shape[1]
    if cfg.attention_impl == "pallas":  # each row's first valid key; the kernel masks
        mask = rows - memory.valid
    else:
        mask = xl_visibility(cfg, key_valid(memory), seg_len)
    h = mod.embed(tokens, deterministic)
    pos_emb = mod.dropout(descending_pos_emb(cfg, rows + seg_len), deterministic)
    rw, rr = mod.shared_biases()
    hids = [h]
    for i, layer in enumerate(mod.layers):
        mem = memory.hidden[i].astype(h.dtype)
        h = layer(h, mem, pos_emb, mask, rw, rr, deterministic, 0)
        hids.append(h)
    logits = mod.output(h, deterministic)
    return logits, update_memory(memory, jnp.stack(hids))


# ----------------------------------------------------------------------------- decoding


@flax.struct.dataclass
class XLDecodeState:
    """memory: Memory; seg: [n_layer+1, B, tgt_len, d] hidden states of the current segment
    so far; pos: int32 scalar, tokens already in the current segment (0 .. tgt_len-1)."""

    memory: Memory
    seg: jax.Array
    pos: jax.Array


def xl_decode_init(cfg: ModelConfig, batch_size: int, memory: Memory | None = None) -> XLDecodeState:
    """Decoding state at a segment boundary: the given memory (default empty), no tokens."""
    if memory is None:
        memory = init_memory(cfg, batch_size)
    seg = jnp.zeros((cfg.n_layer + 1, batch_size, cfg.tgt_len, cfg.d_model), jnp.float32)
    return XLDecodeState(memory=memory, seg=seg, pos=jnp.zeros((), jnp.int32))


def _xl_step(mod: Decoder, token: jax.Array, state: XLDecodeState) -> tuple[jax.Array, jax.Array]:
    """Inside apply: one token per row -> (logits [B, V], the new seg rows [n_layer+1, B, d])."""
    cfg = mod.cfg
    memory, p = state.memory, state.pos
    rows, seg_len = cfg.mem_len, cfg.tgt_len
    batch = token.shape[0]
    dist = rows + p - jnp.arange(rows + seg_len)
    seen = jnp.concatenate(
        [key_valid(memory), jnp.broadcast_to(jnp.arange(seg_len) <= p, (batch, seg_len))], axis=1
    )
    seen = seen & (dist >= 0)[None]
    if cfg.same_length:
        seen = seen & (dist < cfg.mem_len)[None]
    pos_emb = sinusoid(clamp_distance(dist, cfg.clamp_len), cfg.d_model)
    rw, rr = mod.shared_biases()
    dt = compute_dtype(cfg)
    h = mod.embed(token[:, None], True)
    new_rows = [h[:, 0]]
    for i, layer in enumerate(mod.layers):
        seg_i = jax.lax.dynamic_update_slice(state.seg[i], h.astype(jnp.float32), (0, p, 0))
        src = jnp.concatenate([memory.hidden[i], seg_i], axis=1).astype(dt)
        _, k, v = layer.project(src)
        q, _, _ = layer.project(h)
        lrw, lrr = layer.biases(rw, rr)
        scores = A.rel_scores_direct(q, k, layer.rel_proj(pos_emb), lrw, lrr)
        vec = layer.attend(scores, seen[:, None, None, :], v, True)
        h = layer.finish(h, vec, True)
        new_rows.append(h[:, 0])
    return mod.output(h, True)[:, 0], jnp.stack(new_rows)


def xl_decode_step(
    model: Decoder, params, token: jax.Array, state: XLDecodeState
) -> tuple[jax.Array, XLDecodeState]:
    """Feed one token [B] -> (logits [B, V] float32, new state). Reproduces segment mode:
    after tgt_len steps the segment's hidden states roll into the memory. Jit it with
    `jax.jit(xl_decode_step, static_argnums=0)`; shapes never change, so it compiles once."""
    logits, rows = model.apply({"params": params}, token, state, method=_xl_step)
    seg = jax.lax.dynamic_update_slice(
        state.seg, rows[:, :, None, :].astype(jnp.float32), (0, 0, state.pos, 0)
    )
    pos = state.pos + 1
    full = pos == model.cfg.tgt_len
    rolled = update_memory(state.memory, seg)
    memory = jax.tree.map(lambda a, b: jnp.where(full, a, b), rolled, state.memory)
    seg = jnp.where(full, jnp.zeros_like(seg), seg)
    pos = jnp.where(full, 0, pos).astype(jnp.int32)
    return logits, XLDecodeState(memory=memory, seg=seg, pos=pos)


def xl_decode_feed(
    model: Decoder, params, tokens: jax.Array, state: XLDecodeState
) -> tuple[jax.Array, XLDecodeState]:
    """Feed tokens [B, N] one by one (a lax.scan of xl_decode_step) -> (logits [B, N, V], state)."""

    def body(st, tok):
        logits, st = xl_decode_step(model, params, tok, st)
        return st, logits

    state, logits = jax.lax.scan(body, state, jnp.swapaxes(tokens, 0, 1))
    return jnp.swapaxes(logits, 0, 1), state
