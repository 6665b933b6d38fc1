"""longctx.models: one decoder (Flax Linen) and the memory mechanisms that drive it.

Each mechanism is a plug-in (`longctx.models.archs`: Transformer-XL, sliding window,
vanilla, and any registered one); all share one module (`Decoder`) and one parameter tree,
so parameter counts match at a matched config. Public API::

    model = build_model(cfg)                      # cfg: ModelConfig, arch a registered name
    memory = init_memory(cfg, batch_size)         # the mechanism's empty state (any Rows
                                                  # pytree; XL: Memory(hidden [n_layer+1, B,
                                                  # mem_len, d], valid [B]); others NoState)
    variables = model.init({"params": key}, tokens, memory, reset)   # tokens [B,T] int32, reset [B] bool
    logits, new_memory = model.apply({"params": params}, tokens, memory, reset,
                                     deterministic=True, rngs={"dropout": key})
    count_params(params) -> int

`logits` is [B, T, n_token] float32 (bfloat16 compute included). XL: `new_memory` keeps the
last mem_len rows of concat(old valid rows, new hidden states), gradient-stopped, with
`valid = min(mem_len, valid + T)`; reset[b] empties row b's memory before the segment.
Window: the full banded forward (blocked local attention: blocks of W queries against their
own and the previous block's keys, one block at a time with lax.map; O(T*W), never T x T);
the memory passes through unchanged (reset is ignored: each call is a fresh sequence).
Vanilla: causal attention inside independent segments of ctx_len.

Streaming and evaluation (all pure, static shapes; jit them with the model static, e.g.
`jax.jit(xl_decode_step, static_argnums=0)` -- the model hashes by its frozen config).
Decode states advance all rows together. The memory and both decode states know their
batch axes: `state.batch_axes()` (a vmap/pmap axes spec), `state.take_rows(idx)`.

    state = xl_decode_init(cfg, batch)            # k/v cache: memory rows + current segment
    state = xl_decode_from_memory(model, params, memory)      # after segment mode
    logits[B,V], state = xl_decode_step(model, params, token[B], state)     # == segment mode
    logits[B,N,V], state = xl_decode_feed(model, params, tokens[B,N], state)
    logits[B,T,V], state = xl_decode_segment(model, params, tokens[B,tgt_len], state)  # pos 0

    cache = window_decode_init(cfg, batch)                     # ring buffer, W entries per layer
    logits[B,V], cache = window_decode_step(model, params, token[B], cache)
    logits[B,C,V], cache = window_feed(model, params, tokens[B,C], cache)   # a chunk at once
    logits[B,T,V], cache = window_stream_logits(model, params, tokens[B,T], chunk, cache=None)
    nll[B,T-1] = window_stream_nll(model, params, tokens[B,T], chunk)

    nll = vanilla_strided_nll(model, params, tokens[T] or [B,T], ctx_len, stride=1)
          # [T-1] / [B,T-1]; NLL of tokens[1:]; stride 1 = context exactly t-ctx_len .. t-1

    logits = model.apply({"params": params}, tokens, mask, method=Decoder.masked_forward)
          # dense forward under any visibility mask [B|1, T, T] (tests, analysis)
"""

from __future__ import annotations

import jax
import numpy as np

from longctx.config import ModelConfig
from longctx.models.archs import registry
from longctx.models.decoder import Decoder, check_config
from longctx.models.memory import Memory
from longctx.models.state import NoState, Rows
from longctx.models.transformer_xl import (
    XLDecodeState,
    xl_decode_feed,
    xl_decode_from_memory,
    xl_decode_init,
    xl_decode_segment,
    xl_decode_step,
)
from longctx.models.vanilla import vanilla_strided_nll
from longctx.models.window_decode import (
    WindowCache,
    window_decode_init,
    window_decode_step,
    window_feed,
    window_stream_logits,
    window_stream_nll,
)


def build_model(cfg: ModelConfig) -> Decoder:
    """The decoder for cfg.arch; raises ConfigError (naming the key) on a config it cannot
    build (n_token <= 0, a rule of the architecture)."""
    check_config(cfg)
    return Decoder(cfg)


def init_memory(cfg: ModelConfig, batch_size: int) -> Rows:
    """The empty state of cfg.arch's mechanism for `batch_size` lanes."""
    return registry.get(cfg).init_state(cfg, batch_size)


def count_params(params) -> int:
    """Total number of parameter scalars in a pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


__all__ = [
    "Decoder",
    "Memory",
    "NoState",
    "Rows",
    "WindowCache",
    "XLDecodeState",
    "build_model",
    "count_params",
    "init_memory",
    "vanilla_strided_nll",
    "window_decode_init",
    "window_decode_step",
    "window_feed",
    "window_stream_logits",
    "window_stream_nll",
    "xl_decode_feed",
    "xl_decode_from_memory",
    "xl_decode_init",
    "xl_decode_segment",
    "xl_decode_step",
]
