"""Benchmark: forward+backward cost of the Transformer-XL stack (segment by segment with
memory) vs the sliding-window stack (blocked band attention) at matched span W.

    python experiments/bench_attention.py            # seq 1k, 4k, 16k; W = 256
    python experiments/bench_attention.py --smoke    # tiny, a few seconds (used by a test)

XL: mem_len = W, tgt_len = W/2, the sequence fed as consecutive segments (a lax.scan; memory
gradient-stopped, gradients summed over segments). Window: the whole sequence at once.
Time: median wall-clock of several runs of the jitted fwd+bwd (after a warm-up).
Peak memory: XLA's memory analysis of the compiled fwd+bwd function (temporaries +
arguments + outputs, bytes), not the process RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models import build_model, count_params, init_memory


def make_loss(cfg: ModelConfig, seq_len: int):
    """(loss(params, tokens), params) for cfg.arch over one [1, seq_len + 1] token row."""
    model = build_model(cfg)
    probe = jnp.zeros((1, cfg.tgt_len), jnp.int32)
    params = model.init({"params": jax.random.key(0)}, probe, init_memory(cfg, 1), None)["params"]

    def nll(logits, targets):
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1).sum()

    if cfg.arch == "window":

        def loss(p, tokens):
            logits, _ = model.apply({"params": p}, tokens[:, :-1], None, None)
            return nll(logits, tokens[:, 1:]) / seq_len

        return loss, params

    n_seg = seq_len // cfg.tgt_len

    def seg_loss(p, memory, inputs, targets):
        logits, memory = model.apply({"params": p}, inputs, memory, None)
        return nll(logits, targets) / seq_len, memory

    def loss_and_grad(p, tokens):
        inputs = tokens[:, :-1].reshape(1, n_seg, cfg.tgt_len).swapaxes(0, 1)
        targets = tokens[:, 1:].reshape(1, n_seg, cfg.tgt_len).swapaxes(0, 1)

        def body(carry, xs):
            memory, total, grads = carry
            (value, memory), g = jax.value_and_grad(seg_loss, has_aux=True)(p, memory, *xs)
            grads = jax.tree.map(jnp.add, grads, g)
            return (memory, total + value, grads), None

        zero = jax.tree.map(jnp.zeros_like, p)
        (_, total, grads), _ = jax.lax.scan(body, (init_memory(cfg, 1), 0.0, zero),
                                            (inputs, targets))
        return total, grads

    return loss_and_grad, params


def measure(cfg: ModelConfig, seq_len: int, repeats: int) -> dict:
    """Median fwd+bwd seconds and compiled peak bytes for one architecture and length."""
    fn, params = make_loss(cfg, seq_len)
    step = fn if cfg.arch == "xl" else jax.value_and_grad(fn)
    tokens = jax.random.randint(jax.random.key(1), (1, seq_len + 1), 0, cfg.n_token)
    compiled = jax.jit(step).lower(params, tokens).compile()
    mem = compiled.memory_analysis()
    peak = None
    if mem is not None:
        peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                + mem.output_size_in_bytes)
    jax.block_until_ready(compiled(params, tokens))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, tokens))
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "peak_bytes": peak,
            "params": count_params(params)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.smoke:
        window, lengths, repeats = 32, (128, 256), 1
        base = ModelConfig(n_token=64, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32)
    else:
        window, lengths, repeats = 256, (1024, 4096, 16384), args.repeats
        base = ModelConfig(n_token=256, n_layer=2, n_head=4, d_model=128, d_head=32, d_inner=512)
    base = dataclasses.replace(base, mem_len=window, tgt_len=window // 2, window=window,
                               ctx_len=window)
    print(f"# bench_attention: W={window}, XL mem_len={window} tgt_len={window // 2}; "
          f"model n_layer={base.n_layer} d_model={base.d_model} n_head={base.n_head} "
          f"d_head={base.d_head} d_inner={base.d_inner} n_token={base.n_token}; batch 1")
    cpu = platform.processor() or platform.machine()
    print(f"# jax {jax.__version__} on {jax.devices()[0].platform}, {cpu}, {os.cpu_count()} cpus; "
          f"time = median of {repeats} fwd+bwd runs after warm-up; "
          "peak = XLA compiled memory analysis (temp+args+outputs)")
    print(f"| {'arch':<7} | {'seq':>6} | {'fwd+bwd ms':>11} | {'ms/1k tok':>9} | {'peak MiB':>9} |")
    print("|---------|--------|-------------|-----------|-----------|")
    results = {}
    for arch in ("xl", "window"):
        cfg = dataclasses.replace(base, arch=arch)
        for seq_len in lengths:
            r = measure(cfg, seq_len, repeats)
            results[arch, seq_len] = r
            peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}"
            print(f"| {arch:<7} | {seq_len:>6} | {r['seconds'] * 1e3:>11.1f} | "
                  f"{r['seconds'] * 1e6 / seq_len:>9.2f} | {peak:>9} |", flush=True)
    lo, hi = lengths[-2], lengths[-1]
    for arch in ("xl", "window"):
        ratio = results[arch, hi]["seconds"] / results[arch, lo]["seconds"]
        print(f"# {arch}: time({hi}) / time({lo}) = {ratio:.2f} (length ratio {hi // lo})")
    print(f"# parameters: {results['xl', lo]['params']} (xl) == {results['window', lo]['params']} (window)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
