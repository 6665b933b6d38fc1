"""Recurrent memory tokens (the Recurrent Memory Transformer, Bulatov et al. 2022).

A segment of T tokens is processed as the sequence [read memory (m) | tokens (T) | write
memory (m)] by the shared decoder layers (the same parameters as Transformer-XL, the window
and vanilla), under one causal mask with the decoder's relative positions. Both memory
copies enter as the m memory vectors the previous segment wrote; the tokens see the read
copy (and each other, causally); the write copy sees the read copy, the whole segment and
the write rows before it, and its last-layer outputs are the next segment's memory. So a
fact can travel any number of segments, carried in m vectors of d_model, and a loss on a
later segment teaches earlier segments what to write when gradients flow through the
memory (K segments per training row, a rematerialised scan).

The parameters added to the decoder's are the initial memory `memory_init` [m, d_model]
(m * d_model scalars), which a new conversation starts from, and, with
`model.rmt.memory_gate`, a gated memory update `memory_gate` (d_model^2 + d_model, see
`gated_update`): the next memory interpolates per feature between the one read and the one
written instead of being replaced by it.

Two ways to drive it. As the `rmt` architecture (`longctx.models.archs.rmt`: `longctx
train`, evaluate, chat), inside the Decoder's apply: `memory_init` is a Decoder parameter,
the state is `empty_memory_tokens` (rows marked `fresh` read `memory_init`) and
`rmt_forward` takes one segment or K of them. From outside, with any decoder config (the
experiments' own loops):

Masking is causal everywhere (as the decoder-only RMT of Bulatov et al. 2023); the 2022
implementation also lets the read rows and the write rows see each other in both
directions. Causal keeps every distance non-negative and the segment decodable token by
token with an ordinary key/value cache.

    params = rmt_init(model, key, n_mem, seg_len)         # decoder params + memory_init
                                                          # (+ memory_gate: cfg.rmt.memory_gate)
    memory = rmt_initial_memory(params, batch)            # MemoryTokens(vectors [B, m, d])
    logits, memory = rmt_segment(model, params, tokens [B, T], memory, reset=None)
    ys, memory = rmt_segments(model, params, memory, tokens [B, K*T], seg_len, head, ...)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models.primitives import descending_pos_emb, init
from longctx.models.segment_scan import scan_in_apply, scan_segments, split_segments
from longctx.models.state import Rows

if TYPE_CHECKING:
    from longctx.models.decoder import Decoder

MEMORY_PARAM = "memory_init"  # the initial memory's entry in the parameter tree
GATE_PARAM = "memory_gate"  # optional: a learnt gate between the memory read and written


@flax.struct.dataclass
class MemoryTokens(Rows):
    """vectors: [B, m, d_model] float32, the memory each row's next segment reads; fresh:
    [B] bool, rows that start a conversation and so read the learnt initial memory (the
    architecture's state; None when driven from outside, where reset says it)."""

    vectors: jax.Array
    fresh: jax.Array | None = None

    def batch_axes(self) -> MemoryTokens:
        return MemoryTokens(vectors=0, fresh=None if self.fresh is None else 0)


def empty_memory_tokens(cfg: ModelConfig, batch_size: int) -> MemoryTokens:
    """The architecture's state of rows that start a conversation."""
    return MemoryTokens(vectors=jnp.zeros((batch_size, cfg.rmt.n_mem_tokens, cfg.d_model),
                                          jnp.float32),
                        fresh=jnp.ones((batch_size,), bool))


def memory_param(mod: Decoder) -> jax.Array:
    """Inside `Decoder.setup`: the learnt initial memory [n_mem_tokens, d_model], drawn
    N(0, init_std) (see `rmt_init` for why small)."""
    c = mod.cfg
    return mod.param(MEMORY_PARAM, init(c), (c.rmt.n_mem_tokens, c.d_model))


def gate_param(mod: Decoder) -> dict | None:
    """Inside `Decoder.setup`: the gated update's parameters when `model.rmt.memory_gate`
    (`gate_params` at `memory_gate_bias`; created after every other parameter, so the
    rest are drawn as without the gate), else None."""
    c = mod.cfg
    if not c.rmt.memory_gate:
        return None
    return mod.param(GATE_PARAM, lambda _key: gate_params(c.d_model, c.rmt.memory_gate_bias))


def added_params(n_mem: int, d_model: int, gate: bool = False) -> int:
    """Parameters the mechanism adds to the shared decoder: the initial memory and, with
    the gate, its weights and biases."""
    return n_mem * d_model + (d_model * d_model + d_model if gate else 0)


def decoder_params(params: dict) -> dict:
    """The shared decoder's parameters (everything but the initial memory and the gate)."""
    return {k: v for k, v in params.items() if k not in (MEMORY_PARAM, GATE_PARAM)}


def gate_params(d_model: int, bias: float = 0.0) -> dict:
    """A gated memory update's parameters (d_model^2 + d_model): zero weights, so the gate
    starts at sigmoid(bias) everywhere and learns to depend on what is written."""
    return {"w": jnp.zeros((d_model, d_model), jnp.float32),
            "b": jnp.full((d_model,), bias, jnp.float32)}


def gated_update(gate: dict, read: jax.Array, written: jax.Array) -> jax.Array:
    """The next memory as a per-feature interpolation between the memory read and the
    segment's written one, g = sigmoid(written w + b) (the gated state update of LSTMs and
    of the Block-Recurrent Transformer): where g stays small the memory keeps what it
    held, so a fact can outlive several segments without being written again."""
    g = jax.nn.sigmoid(written @ gate["w"] + gate["b"])
    return read + g * (written - read)


def _segment(mod: Decoder, tokens: jax.Array, memory: jax.Array, deterministic: bool):
    """Inside apply: [B, T] tokens and [B, m, d] memory -> (logits [B, T, V], new memory)."""
    cfg = mod.cfg
    m, t = memory.shape[1], tokens.shape[1]
    x = mod.embed(tokens, deterministic)
    read = mod.dropout(memory.astype(x.dtype), deterministic)
    write = mod.dropout(memory.astype(x.dtype), deterministic)
    h = jnp.concatenate([read, x, write], axis=1)
    n = h.shape[1]
    pos_emb = mod.dropout(descending_pos_emb(cfg, n), deterministic)
    causal = jnp.tril(jnp.ones((n, n), bool))[None]
    h, _ = mod.run_layers(h, pos_emb, causal, deterministic=deterministic)
    return mod.output(h[:, m : m + t], deterministic), h[:, m + t :].astype(jnp.float32)


def rmt_init(model: Decoder, key: jax.Array, n_mem: int, seg_len: int) -> dict:
    """Parameters: the decoder's (initialised as for every architecture) plus memory_init
    [n_mem, d_model] ~ N(0, init_std) like every weight. Small on purpose: a write row's
    residual stream then holds mostly what it reads from the segment. Drawn at N(0, 1)
    (as the 2022 code), the written memory varies with the segment an order of magnitude
    less at initialisation, and training on the copy task stalls at chance. With
    `model.rmt.memory_gate`, also the gate (`gate_params` at `memory_gate_bias`)."""
    if n_mem <= 0:
        raise ValueError(f"recurrent memory needs n_mem > 0 memory tokens, got {n_mem}")
    dec_key, mem_key = jax.random.split(key)
    d = model.cfg.d_model
    tokens = jnp.zeros((1, seg_len), jnp.int32)
    params = model.init({"params": dec_key}, tokens, jnp.zeros((1, n_mem, d)), True,
                        method=_segment)["params"]
    memory = model.cfg.init_std * jax.random.normal(mem_key, (n_mem, d), jnp.float32)
    params = {**params, MEMORY_PARAM: memory}
    if model.cfg.rmt.memory_gate:
        params[GATE_PARAM] = gate_params(d, model.cfg.rmt.memory_gate_bias)
    return params


def rmt_initial_memory(params: dict, batch_size: int) -> MemoryTokens:
    """Every row at the start of a conversation: the learnt initial memory."""
    init = params[MEMORY_PARAM]
    return MemoryTokens(vectors=jnp.broadcast_to(init, (batch_size, *init.shape)))


def _reset(params: dict, memory: MemoryTokens, reset: jax.Array | None) -> jax.Array:
    if reset is None:
        return memory.vectors
    return jnp.where(jnp.asarray(reset, bool)[:, None, None], params[MEMORY_PARAM][None],
                     memory.vectors)


def rmt_segment(
    model: Decoder,
    params: dict,
    tokens: jax.Array,
    memory: MemoryTokens,
    reset: jax.Array | None = None,
    deterministic: bool = True,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, MemoryTokens]:
    """One segment: tokens [B, T] reading memory -> (logits [B, T, V] float32, the memory it
    writes). reset [B]: rows that start a new conversation read the initial memory. The
    gradient flows through the memory (stop it outside to cut it)."""
    rngs = {"dropout": rng} if rng is not None else {}
    read = _reset(params, memory, reset)
    logits, vectors = model.apply({"params": decoder_params(params)}, tokens, read,
                                  deterministic, method=_segment, rngs=rngs)
    if GATE_PARAM in params:
        vectors = gated_update(params[GATE_PARAM], read, vectors)
    return logits, MemoryTokens(vectors=vectors)


def rmt_segments(
    model: Decoder,
    params: dict,
    memory: MemoryTokens,
    tokens: jax.Array,
    seg_len: int,
    head: Callable[[jax.Array, Any], Any],
    extras: Any = None,
    *,
    reset: jax.Array | None = None,
    stop_gradient: bool = False,
    deterministic: bool = True,
    rng: jax.Array | None = None,
    remat: bool = True,
) -> tuple[Any, MemoryTokens]:
    """tokens [B, K*seg_len] segment by segment, each reading the memory the previous one
    wrote (a rematerialised lax.scan, `segment_scan.scan_segments`). head(logits, extras_k)
    reduces each segment's logits (see `segment_scan.xl_segments`). stop_gradient: the
    ablation, gradients stopped at every boundary. Returns (stacked y [K, ...], memory)."""
    xs = (split_segments(tokens, seg_len),
          jax.tree.map(lambda a: split_segments(a, seg_len), extras),
          jnp.arange(tokens.shape[1] // seg_len))
    start = MemoryTokens(vectors=_reset(params, memory, reset))

    def segment(mem, x):
        seg, extra, k = x
        key = jax.random.fold_in(rng, k) if rng is not None else None
        logits, mem = rmt_segment(model, params, seg, mem, None, deterministic, key)
        return mem, head(logits, extra)

    memory, ys = scan_segments(segment, start, xs, stop_gradient=stop_gradient, remat=remat)
    return ys, memory


# ----------------------------------------------------------------------------- architecture


def _arch_segment(mod: Decoder, tokens: jax.Array, state: MemoryTokens, deterministic: bool
                  ) -> tuple[jax.Array, MemoryTokens]:
    """Inside apply: one segment; fresh rows read the initial memory (`mod.extra`: the
    initial memory and the gate or None, `RecurrentMemory.setup`)."""
    initial, gate = mod.extra
    start = jnp.where(state.fresh[:, None, None], initial[None], state.vectors)
    logits, vectors = _segment(mod, tokens, start, deterministic)
    if gate is not None:
        vectors = gated_update(gate, start, vectors)
    return logits, MemoryTokens(vectors=vectors, fresh=jnp.zeros_like(state.fresh))


def rmt_forward(mod: Decoder, tokens: jax.Array, state: MemoryTokens,
                reset: jax.Array | None, deterministic: bool) -> tuple[jax.Array, MemoryTokens]:
    """The `rmt` architecture's forward, inside apply: tokens [B, T] with T <= seg_len (one
    segment) or a multiple of it (that many segments, the gradient through the memory
    unless bptt_stop_gradient); reset [B]: rows that start a conversation first."""
    if reset is not None:
        state = state.replace(fresh=state.fresh | jnp.asarray(reset, bool))
    cfg = mod.cfg
    if tokens.shape[1] <= cfg.rmt.seg_len:
        return _arch_segment(mod, tokens, state, deterministic)
    return scan_in_apply(mod, _arch_segment, state, tokens, cfg.rmt.seg_len,
                         stop_gradient=cfg.rmt.bptt_stop_gradient, deterministic=deterministic)
