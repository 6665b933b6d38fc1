"""The training step: a pure function of (state, memory, batch) -> (state, memory, metrics).

It runs per device under `jax.pmap(axis_name="data")`. Three choices make its numbers
independent of how many devices share the batch:
- the loss is the global token-weighted mean: the sums of NLL and of real tokens are
  reduced over devices, then divided, so padding and device count do not change it;
- every lane (batch row) gets its dropout key from (seed, step, global lane index), and
  the model runs per lane under `vmap`, so no random bit depends on the device layout;
- gradients of the local share of that mean are summed over devices (a `psum`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from longctx.models.nll import token_nll
from longctx.models.state import Rows

AXIS = "data"


@struct.dataclass
class TrainState:
    """Everything the step updates, besides the model memory (which is per lane)."""

    step: jax.Array  # int32 scalar: steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # base PRNG key; per-step, per-lane keys are folded from it


def _expand_row(tree: Any, axes: Any) -> Any:
    return jax.tree.map(lambda x, a: jnp.expand_dims(x, a), tree, axes)


def _squeeze_row(tree: Any, axes: Any) -> Any:
    return jax.tree.map(lambda x, a: jnp.squeeze(x, a), tree, axes)


def make_lane_forward(model: nn.Module, deterministic: bool) -> Callable:
    """(params, memory, batch, lanes, key) -> (nll_sum per lane, new memory), vmapped over
    lanes (the memory's own `batch_axes`)."""

    def forward(params, memory: Rows, batch, lanes, key):
        axes = memory.batch_axes()

        def one_lane(inputs, targets, mask, reset, mem_row, lane):
            logits, new_mem = model.apply(
                {"params": params},
                inputs[None],
                _expand_row(mem_row, axes),
                reset[None],
                deterministic=deterministic,
                rngs={"dropout": jax.random.fold_in(key, lane)},
            )
            nll = token_nll(logits[0], targets)
            return jnp.sum(nll * mask), _squeeze_row(new_mem, axes)

        return jax.vmap(one_lane, in_axes=(0, 0, 0, 0, axes, 0), out_axes=(0, axes))(
            batch["inputs"], batch["targets"], batch["mask"], batch["reset"], memory, lanes
        )

    return forward


def make_train_step(
    model: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum: int = 1,
) -> Callable:
    """Build the per-device step; wrap it in `jax.pmap(..., axis_name=AXIS)`."""
    forward = make_lane_forward(model, deterministic=False)

    def train_step(state: TrainState, memory: Rows, batch: dict, lanes: jax.Array):
        key = jax.random.fold_in(state.rng, state.step)
        count = jax.lax.psum(jnp.sum(batch["mask"]), AXIS)
        denom = jnp.maximum(count, 1.0)

        def local_loss(params):
            nll_sums, new_memory = forward(params, memory, batch, lanes, key)
            local = jnp.sum(nll_sums)
            return local / denom, (local, new_memory)

        grads, (nll_local, new_memory) = jax.grad(local_loss, has_aux=True)(state.params)
        grads = jax.lax.psum(grads, AXIS)
        nll_sum = jax.lax.psum(nll_local, AXIS)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": nll_sum / denom,
            "tokens": count,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.step // grad_accum),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, new_memory, metrics

    return train_step
