"""Benchmark of chat decoding: ms per generated token and peak memory after long histories.

Per architecture (XL, sliding window) a fresh process builds a small model (random weights:
the cost does not depend on them) and, for each history length (1k, 10k, 100k tokens) in
increasing order, feeds the history in segment mode (`Stream.feed`: whole XL segments /
window chunks at once) into a new conversation state. Generated tokens are then timed one
by one exactly as chat makes them (`reply_step` + reading the token on the host), taking
turns between the histories in rounds of 10 tokens so that the shared machine's changing
load hits them alike; the table gives the median. Memory: the decode state's size, and the
process's peak RSS right after each history was fed (a running peak: histories go in
increasing order, so each value bounds that history's). The cost per token must not grow
with history: `x 1st` is each row's median over the shortest history's (<= 1.2 expected).

    python experiments/bench_generate.py            # the full table (a few minutes on 2 cores)
    python experiments/bench_generate.py --smoke    # a tiny model and short histories (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FULL = dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024, n_token=2048,
            tgt_len=128, mem_len=256, window=256)
SMOKE = dict(n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64, n_token=512,
             tgt_len=16, mem_len=32, window=32)


def measure(arch: str, histories: list[int], tokens: int, shape: dict) -> list[dict]:
    """Rows for one architecture (this process): feed each history in segment mode, then time
    `tokens` generated tokens after each, round-robin in rounds of 10 so that a change in
    the machine's background load hits every history alike."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from longctx.config import ModelConfig
    from longctx.generate.sampler import SamplerSettings
    from longctx.generate.streaming import Stream
    from longctx.models import build_model, init_memory

    cfg = ModelConfig(arch=arch, dropout=0.0, **shape)
    model = build_model(cfg)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(0)},
                                 jnp.zeros((1, 8), jnp.int32), init_memory(cfg, 1), None)["params"]
    stream = Stream(cfg, params)
    knobs = SamplerSettings(temperature=0.8, top_k=50).knobs()
    rng = np.random.default_rng(0)
    # compile the feed paths on a throwaway state so the history timing is steady-state
    stream.feed(stream.init(), rng.integers(20, cfg.n_token, stream.chunk + 3, np.int32))
    rows, live = [], []
    for history in sorted(histories):
        ids = rng.integers(20, cfg.n_token, size=history).astype(np.int32)
        start = time.perf_counter()
        logits, state = stream.feed(stream.init(), ids)
        logits.block_until_ready()
        feed_s = time.perf_counter() - start
        token, key = stream.sample(logits, jax.random.PRNGKey(1), knobs)
        for _ in range(5):  # warm-up (compiles once, for the first history only)
            token, state, key, _ = stream.reply_step(state, token, key, knobs)
        int(token[0])
        rows.append({
            "arch": arch, "history": history, "generated": tokens,
            "history_feed_tok_per_s": history / feed_s,
            "state_mib": sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "span": cfg.span,
        })
        live.append([token, state, key, []])
    for _ in range(-(-tokens // 10)):
        for slot in live:
            token, state, key, times = slot
            for _ in range(10):
                t0 = time.perf_counter()
                token, state, key, _ = stream.reply_step(state, token, key, knobs)
                int(token[0])  # chat reads every token on the host to print it
                times.append(time.perf_counter() - t0)
            slot[:3] = token, state, key
    for row, (*_, times) in zip(rows, live, strict=True):
        row["ms_per_token_median"] = 1e3 * float(np.median(times))
        row["ms_per_token_p90"] = 1e3 * float(np.percentile(times, 90))
        row["compiled"] = stream.compiled_variants()
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table; `x 1st` = median over the same architecture's shortest history."""
    base = {}
    out = ["| arch | history | ms/token (median) | p90 | x 1st | decode state MiB | "
           "peak RSS MiB | history feed tok/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base.setdefault(r["arch"], r["ms_per_token_median"])
        ratio = r["ms_per_token_median"] / base[r["arch"]]
        out.append(f"| {r['arch']} | {r['history']:,} | {r['ms_per_token_median']:.2f} | "
                   f"{r['ms_per_token_p90']:.2f} | {ratio:.2f} | {r['state_mib']:.2f} | "
                   f"{r['peak_rss_mib']:.0f} | {r['history_feed_tok_per_s']:,.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, short histories, in-process")
    p.add_argument("--histories", default=None, help="comma-separated history lengths")
    p.add_argument("--tokens", type=int, default=None, help="generated tokens timed (>= 50)")
    p.add_argument("--archs", default="xl,window")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--one", metavar="ARCH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = SMOKE if args.smoke else FULL
    tokens = args.tokens or (50 if args.smoke else 200)
    histories = [int(h) for h in (args.histories or
                                  ("100,1000" if args.smoke else "1000,10000,100000")).split(",")]
    if args.one:
        print(json.dumps(measure(args.one, histories, tokens, shape)))
        return 0
    rows = []
    for arch in args.archs.split(","):
        if args.smoke:  # in-process: seconds, for the tests
            rows.extend(measure(arch, histories, tokens, shape))
            continue
        cmd = [sys.executable, __file__, "--one", arch, "--tokens", str(tokens),
               "--histories", ",".join(map(str, histories))]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows.extend(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{arch}: done", file=sys.stderr, flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
