"""Cost table of the memory mechanisms at the README size, against the sliding window.

    python experiments/bench_mechanisms.py            # the README size (4 minutes, loaded 2 cores)
    python experiments/bench_mechanisms.py --smoke    # the smoke model (compiles dominate)

Rows: xl, window, vanilla (the README comparison: `presets.COMPARISON["readme"]`, 2 layers,
d_model 128, W = 64, vocab 2048, 512 tokens per step), rmt with segments of 128 tokens, 16
memory tokens and gradients through memory over 4 segments per row, XL with gradients
through its memory over 4 segments per row, and XL with a retrieval store (top 32 of 2,048
stored rows per layer) alone and with gradients through memory and store over 4 segments
per row; each at the batch that makes its tokens per step 512 (`presets.batch_overrides`).
Columns:
- params: counted from the initialised parameters;
- FLOPs per token, forward and training: `longctx.eval.flops` (each `Arch`'s count;
  training is 3x the forward, 4x under gradients through memory, whose rematerialised scan
  runs each segment's forward again in the backward pass);
- peak training memory: XLA's memory analysis of the compiled training step (temporaries +
  arguments + outputs, as bench_attention.py; the donated state is counted in arguments and
  outputs both);
- training tokens/s: the median step of `longctx.train.step.make_train_step` pmapped and
  donated as `longctx train` runs it (bench_train.py's `Prepared`), after a warm-up, the
  models timed in turn in rounds so that the shared machine's load hits all alike;
- chat ms per generated token: `longctx.generate.streaming.Stream.reply_step` (what
  `longctx chat` calls for every reply token, the token read on the host), after a history
  of 1024 tokens and a warm-up, median (and mean) over the timed tokens, in rounds of 10.
Weights are random (the cost does not depend on them). The machine line gives the CPU, its
cores, jax and the load (`uptime`) before and after: on a shared machine the absolute
figures move with the load; the `x window` ratios, measured in the same rounds, less so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "experiments"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from longctx.config import Config, parse_overrides  # noqa: E402
from longctx.eval.flops import flops_per_token  # noqa: E402
from longctx.models import archs, build_model, init_memory  # noqa: E402
from longctx.train import presets  # noqa: E402

# (architecture, its own overrides on top of the README size, and on top of the smoke size)
K4, K2 = ("model.xl.bptt_segments=4",), ("model.xl.bptt_segments=2",)
SMOKE_STORE = ("model.xl_retrieval.retrieval_k=8", "model.xl_retrieval.store_len=64")
MECHANISMS = (
    ("xl", (), ()),
    ("window", (), ()),
    ("vanilla", (), ()),
    ("rmt", ("model.rmt.seg_len=128", "model.rmt.n_mem_tokens=16", "model.rmt.bptt_segments=4"),
     ("model.rmt.seg_len=16", "model.rmt.n_mem_tokens=4", "model.rmt.bptt_segments=2")),
    ("xl", K4, K2),
    ("xl_retrieval", (), SMOKE_STORE),
    ("xl_retrieval", K4, (*K2, *SMOKE_STORE)),
)
SMOKE = ("model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.d_head=16",
         "model.d_inner=64", "model.xl.mem_len=16", "model.window.window=16",
         "model.vanilla.ctx_len=16", "model.xl.tgt_len=16", "model.window.seq_len=32",
         "data.span=16", "data.vocab_size=512")


def configs(smoke: bool) -> list[tuple[str, Config]]:
    """Each mechanism's validated config (vocabulary = the dataset's), batch for equal
    tokens per step."""
    preset = presets.COMPARISON["readme"]
    size = [*preset.overrides(), *(SMOKE if smoke else ())]
    tokens_per_step = 64 if smoke else preset.tokens_per_step
    out = []
    for arch, full_extra, smoke_extra in MECHANISMS:
        extra = smoke_extra if smoke else full_extra
        overrides = [*size, f"model.arch={arch}", *extra]
        overrides += presets.batch_overrides(Config(), arch, tokens_per_step, overrides)
        cfg = parse_overrides(Config(name="bench_mechanisms"), overrides)  # applied in place
        cfg.model = cfg.model.replace(n_token=cfg.data.vocab_size)
        archs.check_run(cfg)
        out.append((label(cfg.model), cfg))
    return out


def label(m) -> str:
    """The row's name: the architecture and its memory knobs where they differ from XL's."""
    if m.arch == "rmt":
        return f"rmt seg {m.rmt.seg_len}, m {m.rmt.n_mem_tokens}, K {m.rmt.bptt_segments}"
    name = m.arch
    if m.arch == "xl_retrieval":
        name += f" k {m.xl_retrieval.retrieval_k}, store {m.xl_retrieval.store_len}"
    segments = archs.get(m).segments_per_step(m)
    if segments > 1:
        return f"{name}, gradient through memory K {segments}"
    return name


def peak_bytes(compiled) -> dict[str, int] | None:
    """XLA's memory analysis of a compiled function: temp + arguments + outputs (and the
    aliased bytes, donated inputs reused as outputs)."""
    try:
        ma = compiled.memory_analysis()
        ma = ma[0] if isinstance(ma, list | tuple) else ma
        return {"peak": int(ma.temp_size_in_bytes + ma.argument_size_in_bytes
                            + ma.output_size_in_bytes),
                "alias": int(ma.alias_size_in_bytes)}
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def train_rows(cfgs: list[tuple[str, Config]], rounds: int, steps: int) -> list[dict]:
    """Compile every training step, then time them in turn: `rounds` x `steps` steps each."""
    from bench_train import Prepared

    preps = [Prepared(cfg.model, cfg.train.batch_size) for _, cfg in cfgs]
    times: list[list[float]] = [[] for _ in preps]
    for _ in range(rounds):
        for prep, t in zip(preps, times, strict=True):
            t.extend(prep.run(steps))
    rows = []
    for (label, cfg), prep, t in zip(cfgs, preps, times, strict=True):
        m = cfg.model
        tokens = cfg.train.batch_size * archs.tokens_per_step(m)
        mem = peak_bytes(prep.compiled)
        rows.append({"mechanism": label, "arch": m.arch, "batch": cfg.train.batch_size,
                     "tokens_per_step": tokens, "span": archs.span(m), "params": prep.n_params,
                     "flops_forward": flops_per_token(m, training=False),
                     "flops_train": flops_per_token(m, training=True),
                     "peak_train_bytes": mem and mem["peak"],
                     "alias_bytes": mem and mem["alias"], "compile_s": prep.compile_s,
                     "timed_steps": len(t), "step_s_median": statistics.median(t),
                     "train_tokens_per_s": tokens / statistics.median(t)})
    return rows


def chat_times(cfgs: list[tuple[str, Config]], history: int, warmup: int,
               tokens: int) -> list[list[float] | None]:
    """Seconds of each timed reply token, per mechanism, in rounds of 10 (None: the
    architecture does not decode, `Arch.no_decode`)."""
    from longctx.generate.sampler import SamplerSettings
    from longctx.generate.streaming import Stream

    knobs = SamplerSettings(temperature=0.8, top_k=50).knobs()
    rng = np.random.default_rng(0)
    live: list[list | None] = []
    for _, cfg in cfgs:
        m = cfg.model
        if archs.get(m).no_decode is not None:
            live.append(None)
            continue
        model = build_model(m)
        params = jax.jit(model.init)({"params": jax.random.PRNGKey(0)},
                                     np.zeros((1, archs.tokens_per_step(m)), np.int32),
                                     init_memory(m, 1), None)["params"]
        stream = Stream(m, params)
        logits, state = stream.feed(stream.init(),
                                    rng.integers(20, m.n_token, history).astype(np.int32))
        token, key = stream.sample(logits, jax.random.PRNGKey(1), knobs)
        for _ in range(warmup):
            token, state, key, _ = stream.reply_step(state, token, key, knobs)
        int(token[0])
        live.append([stream, token, state, key])
    times: list[list[float] | None] = [None if s is None else [] for s in live]
    for _ in range(-(-tokens // 10)):
        for slot, t in zip(live, times, strict=True):
            if slot is None:
                continue
            stream, token, state, key = slot
            for _ in range(10):
                t0 = time.perf_counter()
                token, state, key, _ = stream.reply_step(state, token, key, knobs)
                int(token[0])  # chat reads every token on the host to print it
                t.append(time.perf_counter() - t0)
            slot[1:] = [token, state, key]
    return times


def machine() -> str:
    """CPU model, cores, jax version and backend."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on "
            f"{jax.devices()[0].device_kind}")


def load() -> str:
    """`uptime`'s line (load averages over 1, 5, 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load averages " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[dict]) -> str:
    """Markdown; `x window` = the row's figure over the window's."""
    win = next(r for r in rows if r["arch"] == "window")
    out = ["| mechanism | batch x tokens | params | FLOPs/token fwd | FLOPs/token train | "
           "peak train MiB | x window | train tok/s | x window | chat ms/token (median) | "
           "mean | x window |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = r["peak_train_bytes"]
        peak_s = "n/a" if peak is None else f"{peak / 2**20:.1f}"
        peak_x = ("n/a" if peak is None or not win["peak_train_bytes"]
                  else f"{peak / win['peak_train_bytes']:.2f}")
        chat = ("n/a (no decode) | | " if r["chat_ms_median"] is None else
                f"{r['chat_ms_median']:.2f} | {r['chat_ms_mean']:.2f} | "
                f"{r['chat_ms_median'] / win['chat_ms_median']:.2f}")
        out.append(
            f"| {r['mechanism']} | {r['batch']} x {r['tokens_per_step'] // r['batch']} | "
            f"{r['params']:,} | {r['flops_forward']:.3g} | {r['flops_train']:.3g} | "
            f"{peak_s} | {peak_x} | {r['train_tokens_per_s']:,.0f} | "
            f"{r['train_tokens_per_s'] / win['train_tokens_per_s']:.2f} | "
            f"{chat} |")
    return "\n".join(out)


def _ms(seconds: float) -> float | None:
    return None if np.isnan(seconds) else 1e3 * seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="the smoke model, a few steps")
    p.add_argument("--rounds", type=int, default=None, help="training rounds (default 10)")
    p.add_argument("--steps", type=int, default=3, help="training steps per round")
    p.add_argument("--tokens", type=int, default=None,
                   help="chat tokens timed per mechanism (default 300)")
    p.add_argument("--json", default=None, help="also write the rows and the machine here")
    args = p.parse_args(argv)
    rounds = args.rounds or (2 if args.smoke else 10)
    tokens = args.tokens or (20 if args.smoke else 300)
    history, warmup = (64, 5) if args.smoke else (1024, 30)

    before = load()
    cfgs = configs(args.smoke)
    rows = train_rows(cfgs, rounds, args.steps)
    for row, t in zip(rows, chat_times(cfgs, history, warmup, tokens), strict=True):
        t = t or [float("nan")]
        row.update(chat_tokens=len(t), chat_ms_median=_ms(statistics.median(t)),
                   chat_ms_mean=_ms(statistics.fmean(t)),
                   chat_ms_p90=_ms(float(np.percentile(t, 90))))
    after = load()
    size = "smoke model" if args.smoke else "README size (2 layers, d_model 128, W = 64, vocab 2048)"
    print(f"# {size}; {rows[0]['tokens_per_step']} tokens per training step; training: median of "
          f"{rows[0]['timed_steps']} steps each after a warm-up; chat: {tokens} tokens each after "
          f"a {history}-token history")
    print(f"# machine: {machine()}")
    print(f"# load before: {before}")
    print(f"# load after:  {after}")
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "load_before": before,
                                               "load_after": after, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
