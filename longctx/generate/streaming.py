"""One interface over every architecture's decode state, for chat and benchmarks.

`Stream(cfg, params)` owns jitted functions with fixed shapes (batch 1), over the
architecture's decode (`Arch.decode_*`):
- `feed(state, tokens)`: a run of known tokens (history, the user's turn) a block at a
  time where it can (XL: whole segments as the segment forward on the cached keys/values;
  window: whole chunks through the chunk feed) and the rest token by token inside one
  compiled loop over a fixed-size buffer; returns the logits after the last token.
- `reply_step(state, token, key, knobs)`: feed the token just sampled and sample the next one.
Every call has the same shapes whatever the history, so nothing recompiles per token or per
turn (`compiled_variants` counts the compiled versions; tests check it stays at one each),
and every Stream of one model config in a process shares them (traced once).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ModelConfig
from longctx.errors import UserError
from longctx.generate.sampler import split_and_sample
from longctx.models import archs, build_model


@lru_cache(maxsize=8)
def _compiled(cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, int]]:
    """`cfg`'s jitted feed_block, feed_steps, reply_step and sample (closing over the model
    only: parameters and state are arguments), and a count of each one's traces. Cached:
    every Stream of one model config in the process shares them (a second chat, a
    notebook's next reply, a benchmark's next repeat: traced and compiled once)."""
    arch, model = archs.get(cfg), build_model(cfg)
    step = partial(arch.decode_step, model)
    traces: dict[str, int] = {}

    def jit(name: str, fn: Any, donate: tuple[int, ...] = ()) -> Any:
        traces[name] = 0

        def traced(*args: Any) -> Any:
            traces[name] += 1
            return fn(*args)

        return jax.jit(traced, donate_argnums=donate)

    def block(params, state, tokens):
        """A whole block at a block boundary (XL: segment mode, on the cached k/v)."""
        logits, state = arch.decode_feed_block(model, params, tokens, state)
        return logits[:, -1], state

    def steps(params, state, tokens, count):
        """Feed tokens[0, :count] one at a time (count traced, tokens [1, chunk] padded)."""
        init = (jnp.zeros((1, cfg.n_token), jnp.float32), state)
        return jax.lax.fori_loop(0, count, lambda i, carry: step(params, tokens[:, i], carry[1]),
                                 init)

    def reply(params, state, token, key, knobs):
        logits, state = step(params, token, state)
        nxt, key = split_and_sample(logits, key, knobs)
        return nxt, state, key, logits

    # the state a reply step is given is consumed: its cache is updated in place instead of
    # copied every token (callers keep only the state it returns)
    fns = {"feed_block": jit("feed_block", block), "feed_steps": jit("feed_steps", steps),
           "reply_step": jit("reply_step", reply, donate=(1,)),
           "sample": jit("sample", split_and_sample)}
    return fns, traces


class Stream:
    """Incremental decoding of one conversation stream (batch 1) for any architecture that
    decodes (`Arch.no_decode` is None)."""

    def __init__(self, cfg: ModelConfig, params: Any) -> None:
        self.arch = archs.get(cfg)
        if self.arch.no_decode is not None:
            able = ", ".join(n for n in archs.names() if archs.get(n).no_decode is None)
            raise UserError(f"model.arch '{cfg.arch}': chat and streaming decode need a run of "
                            f"an architecture that decodes ({able}); {self.arch.no_decode}")
        self.cfg, self.params = cfg, params
        # Known tokens go in blocks of `chunk` (an XL segment, a window of W tokens).
        self.chunk = self.arch.decode_block(cfg)
        fns, self._traces = _compiled(cfg)
        self._feed_block, self._feed_steps = fns["feed_block"], fns["feed_steps"]
        self._reply_step, self._sample = fns["reply_step"], fns["sample"]

    # ------------------------------------------------------------------ state

    def init(self) -> Any:
        """An empty decode state (nothing seen yet)."""
        return self.arch.decode_init(self.cfg, 1)

    def position_in_block(self, state: Any) -> int:
        """Tokens fed since the last block boundary (XL: in the current segment); every
        decode state counts the tokens fed in `pos`."""
        return int(state.pos) % self.chunk

    def span_in_use(self, state: Any) -> tuple[int, int]:
        """(keys the next token attends to besides itself, the most it ever can)."""
        return self.arch.span_in_use(self.cfg, state)

    def stats(self, state: Any) -> dict[str, int]:
        """The architecture's own numbers about the state (XL: memory rows, segment
        position)."""
        return self.arch.decode_stats(self.cfg, state)

    # ------------------------------------------------------------------ public calls

    def feed(self, state: Any, tokens: np.ndarray) -> tuple[jax.Array, Any]:
        """Feed known tokens [T] (T >= 1) -> (logits [1, V] after the last one, new state)."""
        tokens = np.asarray(tokens, np.int32).reshape(-1)
        if tokens.size == 0:
            raise ValueError("feed needs at least one token")
        logits, done = None, 0
        gap = (-self.position_in_block(state)) % self.chunk  # steps up to a block boundary
        first = min(gap, tokens.size)
        if first:
            logits, state = self._steps(state, tokens[:first])
            done = first
        while tokens.size - done >= self.chunk:
            block = jnp.asarray(tokens[None, done:done + self.chunk])
            logits, state = self._feed_block(self.params, state, block)
            done += self.chunk
        if done < tokens.size:
            logits, state = self._steps(state, tokens[done:])
        return logits, state

    def _steps(self, state: Any, tokens: np.ndarray) -> tuple[jax.Array, Any]:
        buf = np.zeros((1, self.chunk), np.int32)
        buf[0, : tokens.size] = tokens
        return self._feed_steps(self.params, state, jnp.asarray(buf),
                                jnp.asarray(tokens.size, jnp.int32))

    def sample(self, logits: jax.Array, key: jax.Array, knobs: dict) -> tuple[jax.Array, jax.Array]:
        """The first token of a reply from the logits `feed` returned: (token [1], next key)."""
        return self._sample(logits, key, knobs)

    def reply_step(self, state: Any, token: jax.Array, key: jax.Array, knobs: dict
                   ) -> tuple[jax.Array, Any, jax.Array, jax.Array]:
        """Feed `token` [1] and sample the next: (next token [1], state, next key, logits).
        `state` is consumed (donated to the step, which updates its cache in place): use
        the returned state, never the one passed in."""
        return self._reply_step(self.params, state, token, key, knobs)

    def compiled_variants(self) -> dict[str, int]:
        """How many versions of each jitted function were compiled in this process for this
        model config (1 each = no recompilation; 0 = not called yet)."""
        return dict(self._traces)
