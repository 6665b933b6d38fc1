"""Benchmark of chat decoding: ms per generated token and memory after long histories.

One process builds each architecture's small model (XL, sliding window; random weights: the
cost does not depend on them) and, for each history length (1k, 10k, 100k tokens) in
increasing order, feeds the history in segment mode (`Stream.feed`: whole XL segments /
window chunks at once) into a new conversation state. Generated tokens are then timed one
by one exactly as chat makes them (`reply_step` + reading the token on the host), taking
turns between every (architecture, history) in rounds of 10 tokens, so that a change in the
shared machine's load hits all of them alike and `x window` (XL's median over the window's
at the same history) compares like with like. The table gives medians and p90. Memory: the
decode state's size, and how much the process's resident memory grew while that history
was fed. The cost per token must not grow with history: `x 1st` is each row's median over
the same architecture's shortest history (<= 1.2 expected); XL's must stay within 1.1x the
window's at the same span.

    python experiments/bench_generate.py            # the full table (a few minutes on 2 cores)
    python experiments/bench_generate.py --smoke    # a tiny model and short histories (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FULL = dict(n_layer=4, n_head=4, d_model=256, d_head=64, d_inner=1024, n_token=2048,
            xl=dict(tgt_len=128, mem_len=256), window=dict(window=256))
SMOKE = dict(n_layer=2, n_head=2, d_model=32, d_head=16, d_inner=64, n_token=512,
             xl=dict(tgt_len=16, mem_len=32), window=dict(window=32))


def _rss_mib() -> float:
    """The process's current resident memory (Linux; the running peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prepare(arch: str, histories: list[int], shape: dict) -> list[dict]:
    """Build `arch`'s model and feed each history into a fresh state; one timing slot per
    history (its row, and the live token / state / key to decode from)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from longctx.config import ModelConfig
    from longctx.generate.sampler import SamplerSettings
    from longctx.generate.streaming import Stream
    from longctx.models import archs, build_model, init_memory

    cfg = ModelConfig(arch=arch, dropout=0.0).replace(**shape)
    model = build_model(cfg)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(0)},
                                 jnp.zeros((1, 8), jnp.int32), init_memory(cfg, 1), None)["params"]
    stream = Stream(cfg, params)
    knobs = SamplerSettings(temperature=0.8, top_k=50).knobs()
    rng = np.random.default_rng(0)
    # compile the feed paths on a throwaway state so the history timing is steady-state
    stream.feed(stream.init(), rng.integers(20, cfg.n_token, stream.chunk + 3, np.int32))
    slots = []
    for history in sorted(histories):
        ids = rng.integers(20, cfg.n_token, size=history).astype(np.int32)
        rss = _rss_mib()
        start = time.perf_counter()
        logits, state = stream.feed(stream.init(), ids)
        logits.block_until_ready()
        feed_s = time.perf_counter() - start
        token, key = stream.sample(logits, jax.random.PRNGKey(1), knobs)
        for _ in range(5):  # warm-up (compiles once, for the first history only)
            token, state, key, _ = stream.reply_step(state, token, key, knobs)
        int(token[0])
        row = {"arch": arch, "history": history, "span": archs.span(cfg),
               "history_feed_tok_per_s": history / feed_s,
               "state_mib": sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20,
               "rss_growth_mib": _rss_mib() - rss}
        slots.append({"row": row, "stream": stream, "knobs": knobs,
                      "live": [token, state, key], "times": []})
    return slots


def measure(archs: list[str], histories: list[int], tokens: int, shape: dict) -> list[dict]:
    """Rows for every (arch, history), timed in turn in this process: `tokens` generated
    tokens each, round-robin in rounds of 10."""
    import numpy as np

    slots = [slot for arch in archs for slot in _prepare(arch, histories, shape)]
    for _ in range(-(-tokens // 10)):
        for slot in slots:
            stream, knobs, times = slot["stream"], slot["knobs"], slot["times"]
            token, state, key = slot["live"]
            for _ in range(10):
                t0 = time.perf_counter()
                token, state, key, _ = stream.reply_step(state, token, key, knobs)
                int(token[0])  # chat reads every token on the host to print it
                times.append(time.perf_counter() - t0)
            slot["live"] = [token, state, key]
    rows = []
    for slot in slots:
        row, times = slot["row"], slot["times"]
        row.update(generated=len(times), ms_per_token_median=1e3 * float(np.median(times)),
                   ms_per_token_p90=1e3 * float(np.percentile(times, 90)),
                   compiled=slot["stream"].compiled_variants())
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table; `x 1st` = median over the same architecture's shortest history,
    `x window` = median over the window's at the same history."""
    first, window = {}, {r["history"]: r["ms_per_token_median"] for r in rows
                         if r["arch"] == "window"}
    out = ["| arch | span | history | ms/token (median) | p90 | x 1st | x window | "
           "decode state MiB | RSS growth MiB | history feed tok/s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms_per_token_median"]
        first.setdefault(r["arch"], ms)
        vs_window = f"{ms / window[r['history']]:.2f}" if r["history"] in window else "–"
        out.append(f"| {r['arch']} | {r['span']} | {r['history']:,} | {ms:.2f} | "
                   f"{r['ms_per_token_p90']:.2f} | {ms / first[r['arch']]:.2f} | {vs_window} | "
                   f"{r['state_mib']:.2f} | {r['rss_growth_mib']:.0f} | "
                   f"{r['history_feed_tok_per_s']:,.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, short histories")
    p.add_argument("--histories", default=None, help="comma-separated history lengths")
    p.add_argument("--tokens", type=int, default=None, help="generated tokens timed (>= 50)")
    p.add_argument("--archs", default="xl,window", help="comma-separated architectures")
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    shape = SMOKE if args.smoke else FULL
    tokens = args.tokens or (50 if args.smoke else 200)
    histories = [int(h) for h in (args.histories or
                                  ("100,1000" if args.smoke else "1000,10000,100000")).split(",")]
    rows = measure(args.archs.split(","), histories, tokens, shape)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
