"""The optax optimiser: global-norm clipping, then AdamW on a warm-up + cosine schedule."""

from __future__ import annotations

import optax

from longctx.config import OptimConfig


def learning_rate_schedule(cfg: OptimConfig, num_updates: int) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then cosine decay to `end_learning_rate`."""
    warmup = min(cfg.warmup_steps, max(num_updates - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(num_updates, warmup + 1),
        end_value=cfg.end_learning_rate,
    )


def make_optimizer(cfg: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    """AdamW with clipping; with `grad_accum > 1`, one update every `grad_accum` steps.

    `num_steps` counts micro-steps (batches); the schedule counts updates.
    """
    num_updates = max(num_steps // cfg.grad_accum, 1)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(
            learning_rate_schedule(cfg, num_updates),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        ),
    )
    if cfg.grad_accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=cfg.grad_accum)
    return tx
