"""Benchmark: Transformer-XL's cached evaluation against the vanilla model's sliding
recompute (stride 1, the paper's baseline) at span W = 128, 256 and 512.

    python experiments/bench_eval.py            # W = 128, 256, 512
    python experiments/bench_eval.py --smoke    # tiny, seconds (used by a test)

One set of parameters (the bench_train "small" decoder: 4 layers, d_model 256, vocabulary
8192) serves both, so only the evaluation mode differs:
- XL: segments of tgt_len = W with mem_len = W, 8 streams side by side, the memory carried
  (a lax.scan); every target sees W to 2W previous tokens.
- vanilla stride 1: target t is predicted from exactly tokens t-W .. t-1, every window
  recomputed (`vanilla_strided_nll`, windows batched 64 at a time; only each window's new
  target reaches the output layer). Counted: the targets after the first window (their
  steady-state rate; the first window's W targets cost one extra window, not counted).
Times: median of 3 runs after a compiling warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models import build_model, init_memory, vanilla_strided_nll

SPANS = (128, 256, 512)
MODEL = dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024, n_token=8192)
SMOKE = dict(n_layer=1, n_head=2, d_model=32, d_head=16, d_inner=64, n_token=64)
XL_LANES = 8


def _median_seconds(fn, *args, repeats: int = 3) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def xl_tokens_per_s(cfg: ModelConfig, params, segments: int) -> float:
    """Steady-state rate of segment-by-segment scoring with the memory."""
    model = build_model(cfg)
    t = cfg.xl.tgt_len

    def score(params, tokens):
        inputs = tokens[:, :-1].reshape(XL_LANES, segments, t).swapaxes(0, 1)
        targets = tokens[:, 1:].reshape(XL_LANES, segments, t).swapaxes(0, 1)

        def body(memory, xs):
            x, y = xs
            logits, memory = model.apply({"params": params}, x, memory, None)
            logp = jax.nn.log_softmax(logits, axis=-1)
            return memory, -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]

        return jax.lax.scan(body, init_memory(cfg, XL_LANES), (inputs, targets))[1]

    tokens = jax.random.randint(jax.random.key(3), (XL_LANES, segments * t + 1), 0, cfg.n_token)
    seconds = _median_seconds(jax.jit(score), params, tokens)
    return XL_LANES * segments * t / seconds


def vanilla_tokens_per_s(cfg: ModelConfig, params, windows: int) -> float:
    """Steady-state rate of the stride-1 sliding recompute over `windows` new targets."""
    model = build_model(cfg)
    span = cfg.vanilla.ctx_len
    tokens = jax.random.randint(jax.random.key(4), (span + 1 + windows,), 0, cfg.n_token)
    fn = jax.jit(lambda p, x: vanilla_strided_nll(model, p, x, span, 1))
    return windows / _median_seconds(fn, params, tokens)


def measure(span: int, shape: dict, segments: int, windows: int) -> dict:
    xl = ModelConfig(arch="xl", **shape).replace(xl=dict(tgt_len=span, mem_len=span))
    vanilla = ModelConfig(arch="vanilla", **shape).replace(vanilla=dict(ctx_len=span), xl=dict(tgt_len=span))
    params = build_model(xl).init({"params": jax.random.key(0)}, jnp.zeros((1, span), jnp.int32),
                                  init_memory(xl, 1), None)["params"]
    xl_rate = xl_tokens_per_s(xl, params, segments)
    vanilla_rate = vanilla_tokens_per_s(vanilla, params, windows)
    return {"span": span, "xl_tokens_per_s": xl_rate, "vanilla_tokens_per_s": vanilla_rate,
            "speedup": xl_rate / vanilla_rate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", default=",".join(map(str, SPANS)))
    p.add_argument("--smoke", action="store_true", help="tiny model and spans, seconds")
    args = p.parse_args(argv)
    spans = (8, 16) if args.smoke else tuple(int(s) for s in args.spans.split(","))
    shape = SMOKE if args.smoke else MODEL
    rows = []
    for span in spans:
        rows.append(measure(span, shape, segments=4 if args.smoke else 8,
                            windows=16 if args.smoke else 128))
        print(f"  W={span}: x{rows[-1]['speedup']:.0f}", file=sys.stderr, flush=True)
    device = (f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cpus); jax {jax.__version__}")
    print(f"device: {device}; model {shape}\n")
    print("| span W | XL cached tokens/s | vanilla stride-1 tokens/s | speed-up |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['span']} | {r['xl_tokens_per_s']:.0f} | {r['vanilla_tokens_per_s']:.1f} | "
              f"{r['speedup']:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
