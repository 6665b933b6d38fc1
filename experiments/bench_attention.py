"""Benchmark: forward+backward cost of the Transformer-XL stack (segment by segment with
memory) vs the sliding-window stack (blocked band attention) at matched span W.

    python experiments/bench_attention.py            # seq 1k, 4k, 16k; W = 256
    python experiments/bench_attention.py --smoke    # tiny, a few seconds (used by a test)
    python experiments/bench_attention.py --kernel   # XL attention alone: reference vs Pallas

--kernel times the attention op alone (q, k, v, r in; softmax-weighted v out) at the XL
xlarge shape by default, the reference (XLA) against the fused Pallas kernel at each
--blocks, with model FLOP/s and the share of --peak-tflops (MFU). The kernel runs on a GPU;
elsewhere it is skipped unless --smoke (tiny shapes, interpret mode: numerics only).

XL: mem_len = W, tgt_len = W/2, the sequence fed as consecutive segments (a lax.scan; memory
gradient-stopped, gradients summed over segments). Window: the whole sequence at once.
Time: median wall-clock of several runs of the jitted fwd+bwd (after a warm-up).
Peak memory: XLA's memory analysis of the compiled fwd+bwd function (temporaries +
arguments + outputs, bytes), not the process RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from longctx.config import ModelConfig
from longctx.models import archs, build_model, count_params, init_memory
from longctx.models import pallas_attention as PA


def make_loss(cfg: ModelConfig, seq_len: int):
    """(loss(params, tokens), params) for cfg.arch over one [1, seq_len + 1] token row."""
    model = build_model(cfg)
    probe = jnp.zeros((1, cfg.xl.tgt_len), jnp.int32)
    params = model.init({"params": jax.random.key(0)}, probe, init_memory(cfg, 1), None)["params"]

    def nll(logits, targets):
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None], axis=-1).sum()

    if not archs.get(cfg).has_memory:

        def loss(p, tokens):
            logits, _ = model.apply({"params": p}, tokens[:, :-1], None, None)
            return nll(logits, tokens[:, 1:]) / seq_len

        return loss, params

    n_seg = seq_len // cfg.xl.tgt_len

    def seg_loss(p, memory, inputs, targets):
        logits, memory = model.apply({"params": p}, inputs, memory, None)
        return nll(logits, targets) / seq_len, memory

    def loss_and_grad(p, tokens):
        inputs = tokens[:, :-1].reshape(1, n_seg, cfg.xl.tgt_len).swapaxes(0, 1)
        targets = tokens[:, 1:].reshape(1, n_seg, cfg.xl.tgt_len).swapaxes(0, 1)

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
    step = fn if archs.get(cfg).has_memory else jax.value_and_grad(fn)
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


def time_jitted(fn, args, repeats: int):
    """(median seconds of a compiled fn(*args) after a warm-up call, its output)."""
    compiled = jax.jit(fn).lower(*args).compile()
    out = jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def kernel_table(args) -> int:
    """Reference vs Pallas XL attention alone: ms, model TFLOP/s, MFU, error vs reference."""
    on_gpu = jax.default_backend() == "gpu"
    if args.smoke:
        b, h, d, t, m, blocks, repeats = 2, 2, 8, 16, 16, ["8x8"], 1
    else:
        b, h, d, t, m, repeats = args.batch, args.heads, args.d_head, args.tgt_len, args.mem_len, args.repeats
        blocks = args.blocks.split(",")
    dtype = jnp.dtype(args.dtype)
    keys = jax.random.split(jax.random.key(0), 7)
    q = jax.random.normal(keys[0], (b, t, h, d), dtype)
    k = jax.random.normal(keys[1], (b, m + t, h, d), dtype)
    v = jax.random.normal(keys[2], (b, m + t, h, d), dtype)
    r = jax.random.normal(keys[3], (m + t, h, d), dtype)
    rw, rr = (0.1 * jax.random.normal(kk, (h, d), jnp.float32) for kk in keys[4:6])
    cot = jax.random.normal(keys[6], (b, t, h, d), dtype)
    starts = jnp.zeros((b,), jnp.int32)
    flops = 3 * 2 * b * h * t * (m + t) * d  # content, position, weighted values (masked included)
    print(f"# XL attention alone: batch {b}, heads {h}, d_head {d}, tgt_len {t}, mem_len {m}, "
          f"{args.dtype}; jax {jax.__version__} on {jax.default_backend()}; median of {repeats}; "
          f"model FLOPs {flops:.3g} fwd, 3x fwd+bwd; MFU vs {args.peak_tflops} TFLOP/s")
    impls = [("reference", lambda *a: PA.reference_attention(*a, starts))]
    if on_gpu or args.smoke:
        for blk in blocks:
            bq, bk = (int(x) for x in blk.split("x"))
            impls.append((f"pallas {bq}x{bk}", functools.partial(
                lambda *a, bq, bk: PA.rel_attention(*a, starts, block_q=bq, block_k=bk),
                bq=bq, bk=bk)))
    else:
        print(f"# pallas: skipped on {jax.default_backend()} (interpret mode would time the "
              "emulation, not the kernel); run on a GPU, or --smoke for the numerics")
    print(f"| {'impl':<16} | {'fwd ms':>8} | {'fwd+bwd ms':>10} | {'TFLOP/s':>8} | {'MFU':>6} | "
          f"{'max rel err':>11} |")
    print("|------------------|----------|------------|----------|--------|-------------|")
    want = None
    for name, fn in impls:
        def loss(*a, fn=fn):
            return jnp.sum(fn(*a).astype(jnp.float32) * cot.astype(jnp.float32))

        fwd, got = time_jitted(fn, (q, k, v, r, rw, rr), repeats)
        both, _ = time_jitted(jax.grad(loss, argnums=tuple(range(6))), (q, k, v, r, rw, rr),
                              repeats)
        want = got if want is None else want  # the first row is the reference
        err = float(jnp.max(jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32)))
                    / jnp.max(jnp.abs(want.astype(jnp.float32))))
        tflops = 3 * flops / both / 1e12
        print(f"| {name:<16} | {fwd * 1e3:>8.3f} | {both * 1e3:>10.3f} | {tflops:>8.2f} | "
              f"{100 * tflops / args.peak_tflops:>5.1f}% | {err:>11.2e} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernel", action="store_true",
                        help="time XL attention alone: reference vs the Pallas kernel")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--d-head", type=int, default=64)
    parser.add_argument("--tgt-len", type=int, default=128)
    parser.add_argument("--mem-len", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--blocks", default="64x64,128x64,64x128,128x128",
                        help="comma-separated block_q x block_k (powers of two)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the chip's peak for --dtype (H200 bf16 dense: 989)")
    args = parser.parse_args(argv)
    if args.kernel:
        return kernel_table(args)
    if args.smoke:
        window, lengths, repeats = 32, (128, 256), 1
        base = ModelConfig(n_token=64, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32)
    else:
        window, lengths, repeats = 256, (1024, 4096, 16384), args.repeats
        base = ModelConfig(n_token=256, n_layer=2, n_head=4, d_model=128, d_head=32, d_inner=512)
    base = base.replace(xl=dict(mem_len=window, tgt_len=window // 2), window=dict(window=window),
                        vanilla=dict(ctx_len=window))
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
