"""Transformer-XL: segments of tgt_len with a memory of the last mem_len hidden states of
every layer, gradient-stopped between segments (Dai et al. 2019). With bptt_segments K > 1
a training row holds K segments and the gradient flows through the memory across them
(unless bptt_stop_gradient). The maths is in `longctx.models.transformer_xl`; this module
is its plug-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from longctx.config import ConfigError, ModelConfig
from longctx.config_knobs import Knobs
from longctx.models import transformer_xl as txl
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register
from longctx.models.memory import apply_reset, empty_memory
from longctx.models.segment_scan import xl_row_forward


@dataclass(frozen=True)
class XLKnobs(Knobs):
    """`model.xl`: Transformer-XL's segments, memory and training."""

    ranges: ClassVar[dict[str, str]] = {"tgt_len": "[1, inf)", "mem_len": "[0, inf)",
                                        "bptt_segments": "[1, inf)"}

    tgt_len: int = 64  # segment length: tokens a lane consumes per segment
    mem_len: int = 64  # memory rows per layer (the span W)
    same_length: bool = False  # every query sees exactly mem_len keys (needs mem_len > 0)
    attention_impl: str = "reference"  # segment attention: 'reference' or 'pallas' (fused)
    # segments of tgt_len per training row, gradients through the memory across them
    # (truncated BPTT over K segments; 1: one segment a step, XL's original training)
    bptt_segments: int = 1
    bptt_stop_gradient: bool = False  # stop the gradient at every segment boundary


class TransformerXL(Arch):
    name = "xl"
    label = "XL"
    has_memory = True
    description = "Transformer-XL: segments with a memory of the last mem_len hidden states"
    lane_mode = "segments"
    knobs = XLKnobs
    took_over = {k: k for k in ("tgt_len", "mem_len", "same_length", "attention_impl",
                                "bptt_segments", "bptt_stop_gradient")}

    def check(self, cfg: ModelConfig) -> None:
        k = cfg.xl
        if k.attention_impl not in ("reference", "pallas"):
            raise ConfigError("config key 'model.xl.attention_impl': must be 'reference' or "
                              f"'pallas', got {k.attention_impl!r}", "model.xl.attention_impl")
        if k.same_length and k.mem_len == 0:
            raise ConfigError("config key 'model.xl.same_length': needs model.xl.mem_len > 0 "
                              "(with mem_len = 0 every key would be masked)",
                              "model.xl.same_length")
        if k.attention_impl == "pallas" and cfg.dropatt > 0:
            raise ConfigError("config key 'model.xl.attention_impl': the 'pallas' kernel has no "
                              f"attention dropout; set model.dropatt=0 (got {cfg.dropatt}) or "
                              "use 'reference'", "model.xl.attention_impl")

    def span(self, cfg: ModelConfig) -> int:
        return cfg.xl.mem_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.xl.bptt_segments * cfg.xl.tgt_len

    def segments_per_step(self, cfg: ModelConfig) -> int:
        return cfg.xl.bptt_segments

    def carries_state(self, cfg: ModelConfig) -> bool:
        return cfg.xl.mem_len > 0

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        # q for the segment's rows; k, v and r_net for memory + segment (the memory's keys
        # are recomputed from its cached hidden states, as the original does)
        keys = cfg.xl.mem_len + cfg.xl.tgt_len
        return CallShape(queries=cfg.xl.tgt_len, projected=keys, keys=keys, distances=keys)

    def state_floats(self, cfg: ModelConfig) -> int:
        return (cfg.n_layer + 1) * cfg.xl.mem_len * cfg.d_model

    def init_state(self, cfg: ModelConfig, batch_size: int):
        return empty_memory(cfg, batch_size)

    def forward(self, mod, tokens, state, reset, deterministic):
        return xl_row_forward(mod, txl.xl_forward, apply_reset, tokens, state, reset,
                              deterministic)

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=cfg.xl.tgt_len)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return f"xl: segments of {cfg.xl.tgt_len} with memory {cfg.xl.mem_len}"

    # decoding: the key/value cache of memory + segment (exactly segment mode)

    def decode_block(self, cfg: ModelConfig) -> int:
        return cfg.xl.tgt_len

    def decode_init(self, cfg: ModelConfig, batch_size: int) -> Any:
        return txl.xl_decode_init(cfg, batch_size)

    def decode_step(self, model, params, token, state):
        return txl.xl_decode_step(model, params, token, state)

    def decode_feed_block(self, model, params, tokens, state):
        return txl.xl_decode_segment(model, params, tokens, state)

    def span_in_use(self, cfg: ModelConfig, state: Any) -> tuple[int, int]:
        used = int(state.valid[0]) + int(state.pos) % cfg.xl.tgt_len
        return used, cfg.xl.mem_len + cfg.xl.tgt_len - 1

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        return {"memory_rows": int(state.valid[0]),
                "segment_position": int(state.pos) % cfg.xl.tgt_len}


register(TransformerXL())
