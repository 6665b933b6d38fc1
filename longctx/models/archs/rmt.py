"""Recurrent memory tokens (`rmt`): n_mem_tokens vectors read at the front of every segment
and written at its back, gradients through them over bptt_segments segments per training
row (Bulatov et al. 2022), optionally a gated memory update (memory_gate). The maths is in
`longctx.models.recurrent_memory`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from longctx.config import ConfigError, ModelConfig
from longctx.config_knobs import Knobs
from longctx.models import recurrent_memory as rm
from longctx.models.archs.base import Arch, CallShape
from longctx.models.archs.registry import register


@dataclass(frozen=True)
class RMTKnobs(Knobs):
    """`model.rmt`: segments, memory tokens and training."""

    ranges: ClassVar[dict[str, str]] = {"seg_len": "[1, inf)", "n_mem_tokens": "[1, inf)",
                                        "bptt_segments": "[1, inf)",
                                        "memory_gate_bias": "[-30, 30]"}

    seg_len: int = 64  # segment length: tokens a lane consumes per segment (the span)
    n_mem_tokens: int = 16  # memory vectors each segment reads and writes
    # segments of seg_len per training row, gradients through the memory across them
    bptt_segments: int = 1
    bptt_stop_gradient: bool = False  # stop the gradient at every segment boundary
    # the next memory = read + g (written - read), g = sigmoid(written w + b) per feature,
    # instead of the written memory alone (adds d_model^2 + d_model parameters)
    memory_gate: bool = False
    # b at initialisation (w starts at 0, so g starts at sigmoid(bias)); 0 (g = 0.5)
    # chained the relay one segment further in experiments/RESULTS.md, -2 learnt none;
    # at -30 the gate is shut and at 30 open to float32's precision (sigmoid(30) = 1)
    memory_gate_bias: float = 0.0


class RecurrentMemory(Arch):
    name = "rmt"
    label = "RMT"
    has_memory = True
    description = ("recurrent memory tokens: n_mem_tokens vectors read and written by every "
                   "segment, gradients through them over bptt_segments, optionally a gated "
                   "memory update (memory_gate)")
    lane_mode = "segments"
    in_studies = False  # not in the main comparison until it reaches (RESULTS, issue 20)
    knobs = RMTKnobs
    took_over = {"tgt_len": "seg_len", "n_mem_tokens": "n_mem_tokens",
                 "bptt_segments": "bptt_segments", "bptt_stop_gradient": "bptt_stop_gradient"}

    def check(self, cfg: ModelConfig) -> None:
        if cfg.rmt.n_mem_tokens < 1:
            raise ConfigError("config key 'model.rmt.n_mem_tokens': rmt needs at least one "
                              f"memory token, got {cfg.rmt.n_mem_tokens}", "model.rmt.n_mem_tokens")

    def span(self, cfg: ModelConfig) -> int:
        return cfg.rmt.seg_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.rmt.bptt_segments * cfg.rmt.seg_len

    def segments_per_step(self, cfg: ModelConfig) -> int:
        return cfg.rmt.bptt_segments

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        # one segment per predicted block: T queries predicted; T + 2m rows projected,
        # scored and positioned (the memory rows' own queries are in extra_flops)
        rows = cfg.rmt.seg_len + 2 * cfg.rmt.n_mem_tokens
        return CallShape(queries=cfg.rmt.seg_len, projected=rows, keys=rows, distances=rows)

    def extra_flops(self, cfg: ModelConfig) -> float:
        """The 2m memory rows' queries, scores, o_net and feed-forward (no output layer)."""
        c, rows = cfg, 2 * cfg.rmt.n_mem_tokens
        hd = c.n_head * c.d_head
        keys = cfg.rmt.seg_len + rows
        per_layer = (2 * rows * c.d_model * hd + 3 * 2 * rows * keys * hd
                     + 2 * rows * hd * c.d_model + 2 * rows * 2 * c.d_model * c.d_inner)
        return float(c.n_layer * per_layer)

    def extra_params(self, cfg: ModelConfig) -> int:
        return rm.added_params(cfg.rmt.n_mem_tokens, cfg.d_model, cfg.rmt.memory_gate)

    def state_floats(self, cfg: ModelConfig) -> int:
        return cfg.rmt.n_mem_tokens * cfg.d_model

    def setup(self, mod) -> Any:
        return rm.memory_param(mod), rm.gate_param(mod)

    def init_state(self, cfg: ModelConfig, batch_size: int):
        return rm.empty_memory_tokens(cfg, batch_size)

    def forward(self, mod, tokens, state, reset, deterministic):
        return rm.rmt_forward(mod, tokens, state, reset, deterministic)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return f"rmt: segments of {cfg.rmt.seg_len} carrying {cfg.rmt.n_mem_tokens} memory vectors"

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        return {"memory_vectors": cfg.rmt.n_mem_tokens,
                "segment_position": int(state.pos) % self.decode_block(cfg)}


register(RecurrentMemory())
