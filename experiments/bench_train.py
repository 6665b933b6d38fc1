"""Benchmark: the real training step (forward, backward, optax update) of the three models.

    python experiments/bench_train.py                       # every arch at three sizes
    python experiments/bench_train.py --arch xl --size large --remat both
    python experiments/bench_train.py --dtype bfloat16      # the GPU run (bf16 compute)
    python experiments/bench_train.py --size xlarge --dtype bfloat16 --batch 8,64  # batches
    python experiments/bench_train.py --smoke               # tiny, seconds (used by a test)

Fixed so the figures compare over time: span W = 256, batch 8 lanes (`--batch` for others;
the table gives tokens per step), vocabulary 8192. Rows:
XL a segment of tgt_len = W with mem_len = W; window seq_len = 2W; vanilla ctx_len = W.

The step is `longctx.train.step.make_train_step` under `jax.pmap` over every local device,
exactly as `longctx train` runs it (state and memory donated). Per config: compile time
(ahead-of-time lower + compile), the median step time after a warm-up, tokens/s, achieved
FLOP/s (the analytic `longctx.eval.flops` count, attention included, times tokens/s), and
the ratio to a 2048 x 2048 x 2048 matmul timed in the same process on the same device in
the compute dtype. Peak memory is XLA's memory analysis of the compiled step (arguments +
outputs + temporaries, bytes). The timed calls run the ahead-of-time executable, which
cannot retrace: the loop's own "no recompilation" check is tests/test_train_loop.py.

Needs only jax, flax, optax and numpy (no orbax, TFDS or transformers), so it runs on a
bare accelerator machine from a checkout.
"""

from __future__ import annotations

import argparse
import json
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
import numpy as np

from longctx.config import ModelConfig, OptimConfig
from longctx.eval.flops import flops_per_token
from longctx.models import archs, build_model, count_params, init_memory
from longctx.train import parallel
from longctx.train.optimizer import learning_rate_schedule, make_optimizer
from longctx.train.step import TrainState, make_train_step

SPAN, BATCH, VOCAB = 256, 8, 8192
SIZES = {
    "small": dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024),
    "medium": dict(n_layer=6, n_head=6, d_model=384, d_head=64, d_inner=1536),
    "large": dict(n_layer=8, n_head=8, d_model=512, d_head=64, d_inner=2048),
    "xlarge": dict(n_layer=12, n_head=16, d_model=1024, d_head=64, d_inner=4096),  # GPU
    "smoke": dict(n_layer=1, n_head=2, d_model=32, d_head=16, d_inner=64),
}
ARCHS = archs.studied()


def model_config(arch: str, size: str, dtype: str, remat: bool, span: int = SPAN,
                 vocab: int = VOCAB) -> ModelConfig:
    """The benchmark's configuration of one model."""
    return ModelConfig(arch=arch, n_token=vocab, dtype=dtype, remat=remat,
                       **SIZES[size]).replace(
        xl=dict(tgt_len=span, mem_len=span), window=dict(window=span, seq_len=2 * span),
        vanilla=dict(ctx_len=span))


def matmul_flops(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product on the default device (median of repeats)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def _inputs(cfg: ModelConfig, batch_size: int = BATCH):
    """Train state, memory, batch and lane ids laid out per local device as `longctx train`
    lays them out (longctx.train.parallel)."""
    model = build_model(cfg)
    optim = OptimConfig(warmup_steps=10)
    optimizer = make_optimizer(optim, 1000)
    schedule = learning_rate_schedule(optim, 1000)
    t = archs.tokens_per_step(cfg)
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, t), jnp.int32),
                        init_memory(cfg, 1), jnp.zeros((1,), bool))["params"]
    state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                       jax.random.key_data(jax.random.key(1)))
    topo = parallel.topology(batch_size)
    tokens = np.asarray(jax.random.randint(jax.random.key(2), (batch_size, t + 1), 0,
                                           cfg.n_token))
    batch = parallel.shard_batch({"inputs": tokens[:, :-1].astype(np.int32),
                                  "targets": tokens[:, 1:].astype(np.int32),
                                  "mask": np.ones((batch_size, t), np.float32),
                                  "reset": np.zeros((batch_size,), bool)}, topo.num_local)
    rep = parallel.to_devices(parallel.replicate(state, topo))
    mem = parallel.to_devices(parallel.memory_to_devices(init_memory(cfg, batch_size), topo))
    lanes = topo.process_lanes.reshape(topo.num_local, -1)
    step = jax.pmap(make_train_step(model, optimizer, schedule), axis_name="data",
                    donate_argnums=(0, 1))
    return step, rep, mem, batch, lanes, count_params(params)


class Prepared:
    """One configuration's compiled training step, warmed up, ready to be timed in chunks
    (`run`), so another implementation can be timed in between (bench_vs_pytorch.py)."""

    def __init__(self, cfg: ModelConfig, batch_size: int = BATCH):
        step, self.state, self.mem, self.batch, self.lanes, self.n_params = _inputs(cfg, batch_size)
        self.cfg, self.batch_size = cfg, batch_size
        t0 = time.perf_counter()
        self.compiled = step.lower(self.state, self.mem, self.batch, self.lanes).compile()
        self.compile_s = time.perf_counter() - t0
        self.peak = None
        try:
            ma = self.compiled.memory_analysis()
            ma = ma[0] if isinstance(ma, list | tuple) else ma
            self.peak = int(ma.argument_size_in_bytes + ma.output_size_in_bytes
                            + ma.temp_size_in_bytes - ma.alias_size_in_bytes)
        except Exception:  # noqa: BLE001 - not every backend reports it
            pass
        self.run(1)  # warm-up (and, for XL, a full memory from here on)

    def run(self, steps: int) -> list[float]:
        """Seconds of each of `steps` training steps (the host waits on every step)."""
        times = []
        for _ in range(steps):
            t1 = time.perf_counter()
            self.state, self.mem, self.metrics = self.compiled(self.state, self.mem, self.batch,
                                                               self.lanes)
            jax.block_until_ready(self.metrics)
            times.append(time.perf_counter() - t1)
        if not np.all(np.isfinite(np.asarray(self.metrics["loss"]))):
            raise SystemExit(f"bench_train: non-finite loss for {self.cfg.arch}")
        return times


def measure(cfg: ModelConfig, steps: int, batch_size: int = BATCH) -> dict:
    """Compile, warm up, then time `steps` train steps of one configuration."""
    prep = Prepared(cfg, batch_size)
    step_s = statistics.median(prep.run(steps))
    tokens = batch_size * archs.tokens_per_step(cfg)
    return {"arch": cfg.arch, "d_model": cfg.d_model, "n_layer": cfg.n_layer, "batch": batch_size,
            "dtype": cfg.dtype, "remat": cfg.remat, "params": prep.n_params,
            "tokens_per_step": tokens, "compile_s": prep.compile_s, "step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "flops_per_s": flops_per_token(cfg, training=True) * tokens / step_s,
            "peak_bytes": prep.peak}


def render(rows: list[dict], matmul: float, device: str) -> str:
    head = ("| arch | d_model | layers | dtype | remat | params | batch | tokens/step | tokens/s |"
            " step ms | GFLOP/s | of matmul | compile s | peak MiB |")
    lines = [f"device: {device}; {jax.local_device_count()} local device(s); jax {jax.__version__};"
             f" 2048^3 matmul {matmul / 1e9:.1f} GFLOP/s", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        lines.append(
            f"| {r['arch']} | {r['d_model']} | {r['n_layer']} | {r['dtype']} | "
            f"{'yes' if r['remat'] else 'no'} | {r['params'] / 1e6:.1f}M | {r['batch']} | "
            f"{r['tokens_per_step']} | {r['tokens_per_s']:.0f} | {r['step_s'] * 1e3:.0f} | "
            f"{r['flops_per_s'] / 1e9:.1f} | "
            f"{r['flops_per_s'] / matmul:.0%} | {r['compile_s']:.1f} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="all", choices=("all", *ARCHS))
    p.add_argument("--size", default="small,medium,large",
                   help=f"comma list of {', '.join(SIZES)}")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--remat", default="no", choices=("no", "yes", "both"))
    p.add_argument("--batch", default=str(BATCH),
                   help=f"comma list of global batch sizes in lanes (default {BATCH}); each must "
                        "split over the local devices")
    p.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = p.parse_args(argv)

    names = ARCHS if args.arch == "all" else (args.arch,)
    sizes = ["smoke"] if args.smoke else args.size.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"--size: unknown {unknown}; choose from {', '.join(SIZES)}")
    remats = {"no": [False], "yes": [True], "both": [False, True]}[args.remat]
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        p.error(f"--batch: expected a comma list of integers, got {args.batch!r}")
    bad = [b for b in batches if b <= 0 or b % jax.local_device_count()]
    if bad:
        p.error(f"--batch: {bad} must be positive multiples of the {jax.local_device_count()} "
                "local device(s)")
    span, vocab = (16, 64) if args.smoke else (SPAN, VOCAB)
    steps = 2 if args.smoke else args.steps
    matmul = matmul_flops(args.dtype, n=256 if args.smoke else 2048)

    rows = []
    for size in sizes:
        for arch in names:
            for remat in remats:
                for batch in batches:
                    cfg = model_config(arch, size, args.dtype, remat, span, vocab)
                    rows.append(measure(cfg, steps, batch))
                    print(f"  {arch} {size} remat={remat} batch={batch}: "
                          f"{rows[-1]['tokens_per_s']:.0f} tok/s", file=sys.stderr, flush=True)
    device = f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}, " \
             f"{os.cpu_count()} cpus)"
    print(render(rows, matmul, device))
    if args.json:
        out = {"device": device, "jax": jax.__version__, "matmul_flops_per_s": matmul,
               "rows": [dict(r, of_matmul=r["flops_per_s"] / matmul) for r in rows]}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
