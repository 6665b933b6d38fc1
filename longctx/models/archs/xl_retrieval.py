"""Transformer-XL with a retrieval memory (`xl_retrieval`): XL's memory of mem_len rows plus
a store of the keys and values that left it (`store_len` per layer), each query attending
to its top `retrieval_k` stored keys under one softmax with the local ones (the Memorizing
Transformer's kNN-augmented attention, at every layer and head as Unlimiformer). It adds no
parameters: a trained XL runs it as it is (`train.init_from`). The maths is in
`longctx.models.retrieval`.

Training uses the same forward: the store is part of the state carried across steps, so a
row's queries retrieve from the conversation's earlier rows (no gradient into the stored
keys and values, as the Memorizing Transformer), and evaluation, chat and training share one
code path."""

from __future__ import annotations

from typing import Any

from longctx.config import ConfigError, ModelConfig
from longctx.models import retrieval
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register


class XLRetrieval(Arch):
    name = "xl_retrieval"
    label = "XL+retrieval"
    has_memory = True
    in_studies = False  # run by name until it is trained at a size where it reaches
    description = ("Transformer-XL plus a store of the rows that left its memory; each query "
                   "attends to its top-k stored keys")
    lane_mode = "segments"
    knobs = ("tgt_len", "mem_len", "retrieval_k", "store_len", "retrieval_distance")

    def check(self, cfg: ModelConfig) -> None:
        if cfg.attention_impl != "reference":
            raise ConfigError("config key 'model.attention_impl': xl_retrieval attends with the "
                              f"'reference' path only, got {cfg.attention_impl!r}",
                              "model.attention_impl")
        if cfg.same_length:
            raise ConfigError("config key 'model.same_length': xl_retrieval does not support "
                              "same_length; set it false", "model.same_length")
        if cfg.bptt_segments != 1:
            raise ConfigError("config key 'model.bptt_segments': xl_retrieval trains one "
                              f"segment a step; set it to 1 (got {cfg.bptt_segments})",
                              "model.bptt_segments")
        if cfg.retrieval_k > cfg.store_len:
            raise ConfigError(f"config key 'model.retrieval_k': {cfg.retrieval_k} keys per query "
                              f"but the store holds {cfg.store_len} rows; use retrieval_k <= "
                              "model.store_len", "model.retrieval_k")

    def span(self, cfg: ModelConfig) -> int:
        return cfg.mem_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.tgt_len

    def carries_state(self, cfg: ModelConfig) -> bool:
        return True

    # ------------------------------------------------------------------ cost

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        # XL's shape; the far distance's sinusoid goes through r_net as one more row
        local = cfg.mem_len + cfg.tgt_len
        return CallShape(queries=cfg.tgt_len, projected=local, keys=local, distances=local + 1)

    def keys_per_query(self, cfg: ModelConfig) -> int:
        return cfg.mem_len + cfg.tgt_len + cfg.retrieval_k

    def extra_flops(self, cfg: ModelConfig) -> float:
        """Per layer: the store scan (one content score per stored row per query per head,
        2 T S H D), the retrieved keys' weighted values (2 T k H D) and their one
        positional score per query and head (2 T H D)."""
        t, hd = cfg.tgt_len, cfg.n_head * cfg.d_head
        per_layer = 2 * t * cfg.store_len * hd + 2 * t * cfg.retrieval_k * hd + 2 * t * hd
        return float(cfg.n_layer * per_layer)

    def state_floats(self, cfg: ModelConfig) -> int:
        xl = (cfg.n_layer + 1) * cfg.mem_len * cfg.d_model
        return xl + 2 * cfg.n_layer * cfg.store_len * cfg.n_head * cfg.d_head

    # ------------------------------------------------------------------ model

    def init_state(self, cfg: ModelConfig, batch_size: int):
        return retrieval.empty_state(cfg, batch_size)

    def forward(self, mod, tokens, state, reset, deterministic):
        return retrieval.retrieval_forward(mod, tokens, state, reset, deterministic)

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=cfg.tgt_len)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return (f"xl_retrieval: segments of {cfg.tgt_len} with memory {cfg.mem_len}, top "
                f"{cfg.retrieval_k} of a store of {cfg.store_len}")

    # ------------------------------------------------------------------ decoding
    # The default: the state at the last segment boundary plus the segment's tokens so far,
    # each step rerunning the segment forward (exact; O(tgt_len) per token).

    def decode_block(self, cfg: ModelConfig) -> int:
        return cfg.tgt_len

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        return {"memory_rows": int(state.state.xl.valid[0]),
                "store_rows": int(state.state.filled[0]),
                "segment_position": int(state.pos) % cfg.tgt_len}


register(XLRetrieval())
