"""Transformer-XL: the segment forward with memory, and token-by-token decoding.

Segment mode: keys are concat(memory rows, segment); query i of the segment sees key j iff
the key is valid and 0 <= dist < (mem_len if same_length else inf), dist = mem_len + i - j
(the memory is right-aligned, so distances equal the original's `mlen + i - j`).

Decoding caches every layer's keys and values in a ring buffer of mem_len + tgt_len rows:
the memory's and the current segment's so far. A step projects only its own token and
attends to memory + segment exactly as segment mode does; when tgt_len tokens have been fed
the segment becomes the memory as segment mode's update would (see XLDecodeState).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ConfigError, ModelConfig
from longctx.models.cache_layout import empty_cache, from_cache, to_cache, write_token
from longctx.models.memory import Memory, Rows, apply_reset, key_valid, update_memory
from longctx.models.primitives import compute_dtype, descending_pos_emb, distance_table

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder


def xl_visibility(cfg: ModelConfig, mem_valid: jax.Array, seg_len: int) -> jax.Array:
    """[B, T, M+T] bool: which keys (memory then segment) each query of the segment sees."""
    rows = mem_valid.shape[1]
    i = jnp.arange(seg_len)[:, None]
    j = jnp.arange(rows + seg_len)[None, :]
    dist = rows + i - j
    ok = dist >= 0
    if cfg.xl.same_length:
        ok = ok & (dist < cfg.xl.mem_len)
    keys = jnp.concatenate([mem_valid, jnp.ones((mem_valid.shape[0], seg_len), bool)], axis=1)
    return ok[None] & keys[:, None, :]


def _check_rows(cfg: ModelConfig, memory: Memory) -> None:
    if memory.hidden.shape[2] != cfg.xl.mem_len or memory.hidden.shape[0] != cfg.n_layer + 1:
        raise ConfigError(
            f"config key 'model.xl.mem_len': memory has shape {memory.hidden.shape}, expected "
            f"[{cfg.n_layer + 1}, B, {cfg.xl.mem_len}, {cfg.d_model}]; build it with init_memory(cfg, B)"
        )


def xl_forward(
    mod: Decoder, tokens: jax.Array, memory: Memory, reset: jax.Array | None, deterministic: bool,
    memory_grad: bool = False,
) -> tuple[jax.Array, Memory]:
    """One segment [B, T] with memory -> (logits [B, T, V] f32, updated memory).
    memory_grad: gradients flow through the memory (in and out) instead of stopping at it,
    for training over several segments per step (`longctx.models.segment_scan`)."""
    cfg = mod.cfg
    _check_rows(cfg, memory)
    memory = apply_reset(memory, reset, keep_grad=memory_grad)
    rows, seg_len = memory.hidden.shape[2], tokens.shape[1]
    if cfg.xl.attention_impl == "pallas":  # each row's first valid key; the kernel masks
        mask = rows - memory.valid
    else:
        mask = xl_visibility(cfg, key_valid(memory), seg_len)
    h = mod.embed(tokens, deterministic)
    pos_emb = mod.dropout(descending_pos_emb(cfg, rows + seg_len), deterministic)
    h, hids = mod.run_layers(h, pos_emb, mask, deterministic=deterministic,
                             memory=memory.hidden, fused=cfg.xl.attention_impl == "pallas")
    logits = mod.output(h, deterministic)
    return logits, update_memory(memory, jnp.stack(hids), keep_grad=memory_grad)


# ----------------------------------------------------------------------------- decoding


@flax.struct.dataclass
class XLDecodeState(Rows):
    """k, v: every layer's keys and values in the window cache's layout (`cache_layout.to_cache`)
    over K = mem_len + tgt_len slots: a ring buffer, position u in slot u mod K; valid: [B] int32,
    the current segment's memory rows that are real (the last `valid[b]` before it);
    pos: int32 scalar, tokens fed so far (the current segment began at pos - pos % tgt_len;
    memory rows given by `xl_decode_from_memory` sit at positions -mem_len .. -1).

    XL's keys carry no position (the positional term comes from r_net over relative
    distances), so a row's k/v never change once computed and a token projects only its
    own. The K slots hold exactly the memory and the current segment, so a new token
    overwrites a row no query sees any more, and at a segment boundary nothing moves: the
    segment becomes the memory by `valid` growing."""

    k: jax.Array
    v: jax.Array
    valid: jax.Array
    pos: jax.Array

    def batch_axes(self) -> XLDecodeState:
        return XLDecodeState(k=tuple(0 for _ in self.k), v=tuple(0 for _ in self.v), valid=0,
                             pos=None)


def xl_decode_init(cfg: ModelConfig, batch_size: int) -> XLDecodeState:
    """Decoding state with an empty memory (nothing seen yet)."""
    k, v = empty_cache(cfg, batch_size, cfg.xl.mem_len + cfg.xl.tgt_len)
    return XLDecodeState(k=k, v=v, valid=jnp.zeros((batch_size,), jnp.int32),
                         pos=jnp.zeros((), jnp.int32))


def _project_memory(mod: Decoder, memory: Memory) -> tuple[list, list]:
    """Inside apply: every layer's k, v of the memory rows (cache layout, mem_len slots)."""
    dt = compute_dtype(mod.cfg)
    ks, vs = [], []
    for i, layer in enumerate(mod.layers):
        k, v = to_cache(*layer.project(memory.hidden[i].astype(dt))[1:])
        ks.append(k)
        vs.append(v)
    return ks, vs


def xl_decode_from_memory(model: Decoder, params, memory: Memory) -> XLDecodeState:
    """Decoding state at a segment boundary after segment mode left `memory`: each layer's
    memory rows projected to keys and values once (slots tgt_len .. K-1)."""
    cfg = model.cfg
    _check_rows(cfg, memory)
    k, v = model.apply({"params": params}, memory, method=_project_memory)
    before = (cfg.xl.tgt_len, 0)
    return XLDecodeState(k=tuple(jnp.pad(x, [(0, 0)] * 3 + [before]) for x in k),
                         v=tuple(jnp.pad(x, [(0, 0)] * 2 + [before, (0, 0)]) for x in v),
                         valid=memory.valid,
                         pos=jnp.zeros((), jnp.int32))


def _xl_step(mod: Decoder, token: jax.Array, state: XLDecodeState):
    """Inside apply: one token per row -> (logits [B, V], its k, v per layer [B, H, D])."""
    cfg = mod.cfg
    size, t = cfg.xl.mem_len + cfg.xl.tgt_len, state.pos
    dist = (t - jnp.arange(size)) % size  # distance of the position each slot holds
    # visible: back to the memory's oldest real row; dist 0 is this token's slot (its old
    # row is stale; the token's own key is scored apart by attend_one)
    seen = (dist[None] <= (t % cfg.xl.tgt_len + state.valid)[:, None]) & (dist > 0)[None]
    if cfg.xl.same_length:
        seen = seen & (dist < cfg.xl.mem_len)[None]
    return mod.decode_token(token, state.k, state.v, distance_table(cfg, size), dist, seen)


def xl_decode_step(
    model: Decoder, params, token: jax.Array, state: XLDecodeState
) -> tuple[jax.Array, XLDecodeState]:
    """Feed one token [B] -> (logits [B, V] float32, new state). Reproduces segment mode:
    the token projects only its own k/v into the cache, and after tgt_len steps the
    segment becomes the memory as segment mode's update would. Jit it with
    `jax.jit(xl_decode_step, static_argnums=0)`; shapes never change, so it compiles once."""
    cfg = model.cfg
    logits, k, v = model.apply({"params": params}, token, state, method=_xl_step)
    slot = state.pos % (cfg.xl.mem_len + cfg.xl.tgt_len)
    pos = state.pos + 1
    grown = jnp.minimum(cfg.xl.mem_len, state.valid + cfg.xl.tgt_len)
    k, v = write_token(state.k, state.v, k, v, slot)
    return logits, XLDecodeState(
        k=k, v=v, valid=jnp.where(pos % cfg.xl.tgt_len == 0, grown, state.valid).astype(jnp.int32),
        pos=pos)


def _xl_segment(mod: Decoder, tokens: jax.Array, state: XLDecodeState):
    """Inside apply: a whole segment [B, tgt_len] at a boundary, as segment mode but with
    the memory's cached k/v -> (logits [B, T, V], every layer's new k, v cache: the memory
    rows and the segment at their slots)."""
    cfg = mod.cfg
    rows, seg_len = cfg.xl.mem_len, cfg.xl.tgt_len
    mem_valid = jnp.arange(rows)[None, :] >= (rows - state.valid)[:, None]
    mask = xl_visibility(cfg, mem_valid, seg_len)
    pos_emb = descending_pos_emb(cfg, rows + seg_len)
    size = rows + seg_len
    shift = -(state.pos % size)  # oldest slot first: the memory rows in order
    back = (state.pos + seg_len) % size  # rows in order -> their slots (position mod K)

    def memory_rows(i):
        return tuple(jnp.roll(x, shift, axis=1)[:, seg_len:]
                     for x in from_cache(state.k[i], state.v[i]))

    logits, kks, vvs = mod.decode_block(tokens, memory_rows, mask[:, None], pos_emb)
    caches = [to_cache(jnp.roll(kk, back, axis=1), jnp.roll(vv, back, axis=1))
              for kk, vv in zip(kks, vvs, strict=True)]
    return logits, tuple(c[0] for c in caches), tuple(c[1] for c in caches)


def xl_decode_segment(
    model: Decoder, params, tokens: jax.Array, state: XLDecodeState
) -> tuple[jax.Array, XLDecodeState]:
    """Feed a whole segment [B, tgt_len] to a state at a segment boundary (pos a multiple of
    tgt_len, not checked: it is traced) -> (logits [B, tgt_len, V], state at the next
    boundary). Equal to the segment forward, without re-projecting the memory rows."""
    cfg = model.cfg
    if tokens.shape[1] != cfg.xl.tgt_len:
        raise ValueError(f"xl_decode_segment needs tgt_len={cfg.xl.tgt_len} tokens per row, "
                         f"got {tokens.shape[1]}")
    logits, k, v = model.apply({"params": params}, tokens, state, method=_xl_segment)
    valid = jnp.minimum(cfg.xl.mem_len, state.valid + cfg.xl.tgt_len).astype(jnp.int32)
    return logits, XLDecodeState(k=k, v=v, valid=valid, pos=state.pos + cfg.xl.tgt_len)


def xl_decode_feed(
    model: Decoder, params, tokens: jax.Array, state: XLDecodeState
) -> tuple[jax.Array, XLDecodeState]:
    """Feed tokens [B, N] one by one (a lax.scan of xl_decode_step) -> (logits [B, N, V], state)."""

    def body(st, tok):
        logits, st = xl_decode_step(model, params, tok, st)
        return st, logits

    state, logits = jax.lax.scan(body, state, jnp.swapaxes(tokens, 0, 1))
    return jnp.swapaxes(logits, 0, 1), state
