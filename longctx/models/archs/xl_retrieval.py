"""Transformer-XL with a retrieval memory (`xl_retrieval`): XL's memory of mem_len rows plus
a store of the keys and values that left it (`store_len` per layer), each query attending
to its top `retrieval_k` stored keys under one softmax with the local ones (the Memorizing
Transformer's kNN-augmented attention, at every layer and head as Unlimiformer). It adds no
parameters: a trained XL runs it as it is (`train.init_from`). The maths is in
`longctx.models.retrieval`.

Training uses the same forward: the store is part of the state carried across steps, so a
row's queries retrieve from the conversation's earlier rows (no gradient into the stored
keys and values, as the Memorizing Transformer), and evaluation, chat and training share one
code path. With `model.xl.bptt_segments` K > 1 a training row holds K segments and the
gradient flows through XL's memory and the store across them (unless
`model.xl.bptt_stop_gradient`): a query's loss reaches the keys it retrieved from earlier
segments of its row, so the keys can learn to say whose fact they hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from longctx.config import ConfigError, ModelConfig
from longctx.config_knobs import Knobs
from longctx.models import retrieval
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register
from longctx.models.segment_scan import xl_row_forward


@dataclass(frozen=True)
class RetrievalKnobs(Knobs):
    """`model.xl_retrieval`: the store and what a query takes from it (its segments and
    memory are XL's: `model.xl.tgt_len`, `model.xl.mem_len`)."""

    ranges: ClassVar[dict[str, str]] = {"retrieval_k": "[1, inf)", "store_len": "[1, inf)",
                                        "retrieval_distance": "[0, inf)"}

    retrieval_k: int = 32  # stored keys each query attends to (top-k per head)
    store_len: int = 2048  # rows each layer's store keeps (those that left the memory)
    retrieval_distance: int = 0  # the distance retrieved keys are given; 0: mem_len + tgt_len - 1


class XLRetrieval(Arch):
    name = "xl_retrieval"
    label = "XL+retrieval"
    has_memory = True
    in_studies = False  # run by name until it is trained at a size where it reaches
    description = ("Transformer-XL plus a store of the rows that left its memory; each query "
                   "attends to its top-k stored keys")
    lane_mode = "segments"
    knobs = RetrievalKnobs  # besides XL's section, which it reads for its segments and memory
    took_over = {k: k for k in ("retrieval_k", "store_len", "retrieval_distance")}

    def check(self, cfg: ModelConfig) -> None:
        xl, r = cfg.xl, cfg.xl_retrieval
        if xl.attention_impl != "reference":
            raise ConfigError("config key 'model.xl.attention_impl': xl_retrieval attends with "
                              f"the 'reference' path only, got {xl.attention_impl!r}",
                              "model.xl.attention_impl")
        if xl.same_length:
            raise ConfigError("config key 'model.xl.same_length': xl_retrieval does not support "
                              "same_length; set it false", "model.xl.same_length")
        if r.retrieval_k > r.store_len:
            raise ConfigError(f"config key 'model.xl_retrieval.retrieval_k': {r.retrieval_k} keys "
                              f"per query but the store holds {r.store_len} rows; use "
                              "retrieval_k <= model.xl_retrieval.store_len",
                              "model.xl_retrieval.retrieval_k")

    def span(self, cfg: ModelConfig) -> int:
        return cfg.xl.mem_len

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.xl.bptt_segments * cfg.xl.tgt_len

    def segments_per_step(self, cfg: ModelConfig) -> int:
        return cfg.xl.bptt_segments

    def carries_state(self, cfg: ModelConfig) -> bool:
        return True

    # ------------------------------------------------------------------ cost

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        # XL's shape; the far distance's sinusoid goes through r_net as one more row
        local = cfg.xl.mem_len + cfg.xl.tgt_len
        return CallShape(queries=cfg.xl.tgt_len, projected=local, keys=local, distances=local + 1)

    def keys_per_query(self, cfg: ModelConfig) -> int:
        return cfg.xl.mem_len + cfg.xl.tgt_len + cfg.xl_retrieval.retrieval_k

    def extra_flops(self, cfg: ModelConfig) -> float:
        """Per layer: the store scan (one content score per stored row per query per head,
        2 T S H D), the retrieved keys' weighted values (2 T k H D) and their one
        positional score per query and head (2 T H D)."""
        t, hd, r = cfg.xl.tgt_len, cfg.n_head * cfg.d_head, cfg.xl_retrieval
        per_layer = 2 * t * r.store_len * hd + 2 * t * r.retrieval_k * hd + 2 * t * hd
        return float(cfg.n_layer * per_layer)

    def state_floats(self, cfg: ModelConfig) -> int:
        xl = (cfg.n_layer + 1) * cfg.xl.mem_len * cfg.d_model
        return xl + 2 * cfg.n_layer * cfg.xl_retrieval.store_len * cfg.n_head * cfg.d_head

    # ------------------------------------------------------------------ model

    def init_state(self, cfg: ModelConfig, batch_size: int):
        return retrieval.empty_state(cfg, batch_size)

    def forward(self, mod, tokens, state, reset, deterministic):
        return xl_row_forward(mod, retrieval.retrieval_forward, retrieval.reset_state, tokens,
                              state, reset, deterministic)

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=cfg.xl.tgt_len)

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return (f"xl_retrieval: segments of {cfg.xl.tgt_len} with memory {cfg.xl.mem_len}, top "
                f"{cfg.xl_retrieval.retrieval_k} of a store of {cfg.xl_retrieval.store_len}")

    # ------------------------------------------------------------------ decoding
    # The default: the state at the last segment boundary plus the segment's tokens so far,
    # each step rerunning the segment forward (exact; O(tgt_len) per token).

    def decode_block(self, cfg: ModelConfig) -> int:
        return cfg.xl.tgt_len

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        return {"memory_rows": int(state.state.xl.valid[0]),
                "store_rows": int(state.state.filled[0]),
                "segment_position": int(state.pos) % cfg.xl.tgt_len}


register(XLRetrieval())
