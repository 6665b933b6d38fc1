"""Vanilla fixed context (the paper's baseline): causal attention inside independent
segments of ctx_len; evaluated by recomputing a window per target
(`longctx.models.vanilla`)."""

from __future__ import annotations

from longctx.config import ModelConfig
from longctx.models import vanilla
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register


class Vanilla(Arch):
    name = "vanilla"
    description = "fixed context: attention inside independent windows of ctx_len"
    knobs = ("ctx_len",)
    no_decode = "a vanilla model keeps no state between turns"

    def span(self, cfg: ModelConfig) -> int:
        return cfg.ctx_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.ctx_len

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        t = cfg.ctx_len
        return CallShape(queries=t, projected=t, keys=t, distances=t)

    def forward(self, mod, tokens, state, reset, deterministic):
        return vanilla.vanilla_forward(mod, tokens, deterministic), state

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=None, context=cfg.ctx_len, per_token=True)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return f"vanilla: windows of {cfg.ctx_len}, stride {stride}"


register(Vanilla())
