"""Vanilla fixed context (the paper's baseline): causal attention inside independent
segments of ctx_len; evaluated by recomputing a window per target
(`longctx.models.vanilla`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from longctx.config import ModelConfig
from longctx.config_knobs import Knobs
from longctx.models import vanilla
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register


@dataclass(frozen=True)
class VanillaKnobs(Knobs):
    """`model.vanilla`: the fixed context."""

    ranges: ClassVar[dict[str, str]] = {"ctx_len": "[1, inf)"}

    ctx_len: int = 64  # the fixed context (tokens per lane per step)


class Vanilla(Arch):
    name = "vanilla"
    description = "fixed context: attention inside independent windows of ctx_len"
    knobs = VanillaKnobs
    took_over = {"ctx_len": "ctx_len"}
    no_decode = "a vanilla model keeps no state between turns"

    def span(self, cfg: ModelConfig) -> int:
        return cfg.vanilla.ctx_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.vanilla.ctx_len

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        t = cfg.vanilla.ctx_len
        return CallShape(queries=t, projected=t, keys=t, distances=t)

    def forward(self, mod, tokens, state, reset, deterministic):
        return vanilla.vanilla_forward(mod, tokens, deterministic), state

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=None, context=cfg.vanilla.ctx_len, per_token=True)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return f"vanilla: windows of {cfg.vanilla.ctx_len}, stride {stride}"


register(Vanilla())
