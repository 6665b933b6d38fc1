"""Per-lane state pytrees: anything a memory mechanism carries from one call to the next.

A state is any pytree (a `flax.struct.dataclass`) that says where the batch axis of each
leaf is (`Rows.batch_axes`), so code that splits, vmaps, gathers, checkpoints or saves
rows (training lanes, devices, scoring, chat) never guesses the layout: XL's memory
`[n_layer+1, B, mem_len, d]`, a few memory vectors per lane `[B, m, d]`, per-layer keys and
values with a write pointer, or nothing at all (`NoState`).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


class Rows:
    """Base of the per-row state pytrees: each knows the batch axis of its leaves."""

    def batch_axes(self) -> Any:
        """The same pytree with each leaf replaced by its batch axis (None: shared by all
        rows), usable as vmap's in_axes / out_axes."""
        raise NotImplementedError

    def take_rows(self, idx: Any) -> Any:
        """Rows `idx` (an index array) of every leaf; leaves without a batch axis as they are."""
        return jax.tree.map(lambda a, x: x if a is None else jnp.take(x, idx, axis=a, mode="clip"),
                            self.batch_axes(), self, is_leaf=lambda a: a is None)


@flax.struct.dataclass
class NoState(Rows):
    """The state of a mechanism that carries nothing between calls (no leaves)."""

    def batch_axes(self) -> NoState:
        return NoState()
