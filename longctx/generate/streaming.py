"""One interface over every architecture's decode state, for chat and benchmarks.

`Stream(cfg, params)` owns jitted functions with fixed shapes (batch 1), over the
architecture's decode (`Arch.decode_*`):
- `feed(state, tokens)`: a run of known tokens (history, the user's turn) a block at a
  time where it can (XL: whole segments as the segment forward on the cached keys/values;
  window: whole chunks through the chunk feed) and the rest token by token inside one
  compiled loop over a fixed-size buffer; returns the logits after the last token.
- `reply_step(state, token, key, knobs)`: feed the token just sampled and sample the next one.
Every call has the same shapes whatever the history, so nothing recompiles per token or per
turn (`compiled_variants` counts the compiled versions; tests check it stays at one each).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from longctx.config import ModelConfig
from longctx.errors import UserError
from longctx.generate.sampler import split_and_sample
from longctx.models import archs, build_model


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
        self.model = build_model(cfg)
        # Known tokens go in blocks of `chunk` (an XL segment, a window of W tokens).
        self.chunk = self.arch.decode_block(cfg)
        self._step = partial(self.arch.decode_step, self.model)
        self._traces: dict[str, int] = {}
        self._feed_block = self._jit("feed_block", self._block_fn())
        self._feed_steps = self._jit("feed_steps", self._steps_fn)
        # the state a reply step is given is consumed: its cache is updated in place
        # instead of copied every token (callers keep only the state it returns)
        self._reply_step = self._jit("reply_step", self._reply_fn, donate=(1,))
        self._sample = self._jit("sample", split_and_sample)

    def _jit(self, name: str, fn: Any, donate: tuple[int, ...] = ()) -> Any:
        """jax.jit of `fn` that counts its traces (one trace = one compiled version). The
        wrapper is a fresh function, so no other caller's compilations are counted."""
        self._traces[name] = 0

        def traced(*args: Any) -> Any:
            self._traces[name] += 1
            return fn(*args)

        return jax.jit(traced, donate_argnums=donate)

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

    # ------------------------------------------------------------------ jitted pieces

    def _block_fn(self):
        model, arch = self.model, self.arch

        def block(params, state, tokens):
            """A whole block at a block boundary (XL: segment mode, on the cached k/v)."""
            logits, state = arch.decode_feed_block(model, params, tokens, state)
            return logits[:, -1], state
        return block

    def _steps_fn(self, params, state, tokens, count):
        """Feed tokens[0, :count] one at a time (count traced, tokens [1, chunk] padded)."""
        vocab = self.cfg.n_token

        def body(i, carry):
            _, st = carry
            return self._step(params, tokens[:, i], st)

        init = (jnp.zeros((1, vocab), jnp.float32), state)
        return jax.lax.fori_loop(0, count, body, init)

    def _reply_fn(self, params, state, token, key, knobs):
        logits, state = self._step(params, token, state)
        nxt, key = split_and_sample(logits, key, knobs)
        return nxt, state, key, logits

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
        """How many versions of each jitted function were compiled (1 each = no
        recompilation; 0 = not called yet)."""
        return dict(self._traces)
