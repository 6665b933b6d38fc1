"""Evaluation speed: tokens/s of a model's own streaming mode, and of the vanilla stride-1
recompute at the same span W with the same parameters (the cost XL's memory avoids).

Times are wall-clock after one untimed warm-up pass (compilation), so they vary between
runs and machines; they are kept apart from the reproducible numbers in eval.json.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from longctx.config import ModelConfig
from longctx.eval.scoring import ROWS, Scorer
from longctx.models import archs


def speed_streams(convs: Sequence[np.ndarray], tokens: int, lanes: int = ROWS
                  ) -> list[np.ndarray]:
    """`lanes` streams of tokens+1 ids cut from the conversations laid end to end."""
    flat = np.concatenate(list(convs)).astype(np.int32)
    need = lanes * (tokens + 1)
    flat = np.tile(flat, -(-need // flat.size))[:need]
    return list(flat.reshape(lanes, tokens + 1))


def time_streams(scorer: Scorer, streams: Sequence[np.ndarray], repeats: int = 3
                 ) -> dict[str, float | int]:
    """Tokens scored per second by `scorer`'s streaming mode: the best of `repeats` timed
    passes after a warm-up pass (compilation; the machine may be shared)."""
    scorer.stream_logprobs(streams[:1])
    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.stream_logprobs(streams)
        seconds = min(seconds, time.perf_counter() - start)
    tokens = int(sum(s.size - 1 for s in streams))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def describe(cfg: ModelConfig, stride: int) -> str:
    """The streaming mode in words (stored beside the numbers)."""
    return archs.get(cfg).stream_mode(cfg, stride)


def measure(cfg: ModelConfig, params, stride: int, convs: Sequence[np.ndarray],
            tokens: int) -> dict:
    """Speed of the model's streaming mode on `tokens` per lane, and of the vanilla stride-1
    recompute at span W on a quarter of that (at least 2 W tokens per lane)."""
    own = time_streams(Scorer(cfg, params, stride), speed_streams(convs, tokens))
    span = archs.span(cfg)
    vanilla_cfg = cfg.replace(arch="vanilla", vanilla={"ctx_len": span})
    sub = max(2 * span, tokens // 4)
    recompute = time_streams(Scorer(vanilla_cfg, params, 1), speed_streams(convs, sub))
    return {
        "stream": {**own, "mode": describe(cfg, stride), "lanes": ROWS},
        "vanilla_recompute": {**recompute, "mode": describe(vanilla_cfg, 1), "lanes": ROWS},
        "speedup_vs_recompute": own["tokens_per_s"] / recompute["tokens_per_s"],
    }
