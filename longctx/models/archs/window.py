"""Sliding window: token i attends to keys i-W+1 .. i at every layer; no state crosses a
training sequence. The forward is `longctx.models.sliding_window` (blocked band
attention), streaming the ring-buffer cache of `longctx.models.window_decode`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from longctx.config import ConfigError, ModelConfig
from longctx.config_knobs import Knobs
from longctx.models import sliding_window, window_decode
from longctx.models.archs.base import Arch, CallShape, ScoringPlan
from longctx.models.archs.registry import register
from longctx.models.attention import band_plan


@dataclass(frozen=True)
class WindowKnobs(Knobs):
    """`model.window`: the span and the training sequence."""

    ranges: ClassVar[dict[str, str]] = {"window": "[1, inf)", "seq_len": "[1, inf)"}

    window: int = 64  # the span W (keys i-W+1 .. i)
    seq_len: int = 256  # the training sequence length (tokens per lane per step)


class SlidingWindow(Arch):
    name = "window"
    description = "sliding window: every token attends to the W tokens before it"
    knobs = WindowKnobs
    took_over = {"window": "window", "seq_len": "seq_len"}

    def check(self, cfg: ModelConfig) -> None:
        k = cfg.window
        if k.window > k.seq_len:
            raise ConfigError(
                f"config key 'model.window.window': {k.window} is longer than the training "
                f"sequence (model.window.seq_len = {k.seq_len}), so the span would silently be "
                "seq_len; use window <= seq_len", "model.window.window")

    def span(self, cfg: ModelConfig) -> int:
        return cfg.window.window

    def tokens_per_step(self, cfg: ModelConfig) -> int:
        return cfg.window.seq_len

    def call_shape(self, cfg: ModelConfig) -> CallShape:
        # blocks of C = min(W, seq_len) queries, each scoring itself and the m blocks before
        block, history, n_blocks = band_plan(cfg.window.seq_len, cfg.window.window)
        rows, keys = n_blocks * block, (history + 1) * block
        return CallShape(queries=rows, projected=rows, keys=keys, distances=keys)

    def forward(self, mod, tokens, state, reset, deterministic):
        return sliding_window.window_forward(mod, tokens, deterministic), state

    def receptive(self, cfg: ModelConfig) -> int:
        """Tokens of left context that fully determine a logit: n_layer (W - 1)."""
        return cfg.n_layer * (cfg.window.window - 1)

    def scoring(self, cfg: ModelConfig) -> ScoringPlan:
        return ScoringPlan(chunk=cfg.window.window, context=self.receptive(cfg))

    def stream_mode(self, cfg: ModelConfig, stride: int) -> str:
        return f"window: ring-buffer KV cache of {cfg.window.window}, chunks of {cfg.window.window}"

    def stream_init(self, cfg: ModelConfig, rows: int) -> Any:
        return window_decode.window_decode_init(cfg, rows)

    def stream_feed(self, model, params, tokens, state, reset):
        return window_decode.window_feed(model, params, tokens, state)

    # decoding: the ring buffer of W keys and values per layer

    def decode_block(self, cfg: ModelConfig) -> int:
        return cfg.window.window

    def decode_init(self, cfg: ModelConfig, batch_size: int) -> Any:
        return window_decode.window_decode_init(cfg, batch_size)

    def decode_step(self, model, params, token, state):
        return window_decode.window_decode_step(model, params, token, state)

    def decode_feed_block(self, model, params, tokens, state):
        return window_decode.window_feed(model, params, tokens, state)

    def span_in_use(self, cfg: ModelConfig, state: Any) -> tuple[int, int]:
        return min(int(state.pos), cfg.window.window - 1), cfg.window.window - 1

    def decode_stats(self, cfg: ModelConfig, state: Any) -> dict[str, int]:
        return {}


register(SlidingWindow())
