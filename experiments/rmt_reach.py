"""Does a recurrent memory reach past 2W on the synthetic dialogues? A small, direct trial.

Trains the recurrent memory tokens (`longctx.models.recurrent_memory`) on the README size's
data and model (2 layers, d_model 128, segments of W = 64 tokens), K segments per
optimiser step with gradients through the memory (truncated BPTT over K*W tokens; the
memory is carried from step to step without a gradient), optionally a curriculum over K,
or the ablation with the gradient stopped at every segment boundary. Then scores every
validation probe exactly as `longctx evaluate` picks them (same items, same seed) by
forced choice, and prints recall by distance in the reach study's fine buckets.

Each row is one conversation streamed segment by segment (a conversation starts a row
and reads the learnt initial memory; its last row is padded), so a step's B rows of K*W
tokens are B lanes of `longctx.data.make_lanes(mode='sequences')`.

    python experiments/rmt_reach.py --out runs/rmt_reach/a.json data.train_near_max=8
    python experiments/rmt_reach.py --k 2:0.25,4 --n-mem 16 --tokens 1200000 ...
    python experiments/rmt_reach.py summarise runs/rmt_reach/*.json --baseline XL.json
    python experiments/rmt_reach.py views runs/rmt_reach/D.json   # in view / through memory

Scoring a probe: the memory entering the segment whose input holds the token before the
answer, then that segment's tokens up to the answer and the candidate (a row up to W + 2
tokens long when the candidate crosses the segment's end).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = Path(__file__).resolve().parent


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def k_schedule(text: str) -> list[tuple[int, float]]:
    """'2:0.25,4' -> [(2, 0.25), (4, 0.75)]: K segments a step for a share of the tokens."""
    out, used = [], 0.0
    parts = text.split(",")
    for i, part in enumerate(parts):
        k, _, share = part.partition(":")
        share = float(share) if share else 1.0 - used
        if i == len(parts) - 1:
            share = 1.0 - used
        out.append((int(k), share))
        used += share
    return out


def train(cfg, ds, model, params, args, log):
    from longctx.data import make_lanes
    from longctx.models.memory import empty_memory
    from longctx.models.nll import token_nll
    from longctx.models.recurrent_memory import rmt_initial_memory, rmt_segments
    from longctx.models.segment_scan import xl_segments
    from longctx.train.optimizer import make_optimizer

    seg = args.seg or cfg.data.span
    sched = k_schedule(args.k)
    plan = []  # (K, batch, steps)
    for k, share in sched:
        batch = max(1, args.tokens_per_step // (k * seg))
        plan.append((k, batch, max(1, int(round(args.tokens * share / (batch * k * seg))))))
    total = sum(p[2] for p in plan)
    tx = make_optimizer(cfg.optim, total)
    opt_state = tx.init(params)

    def head(logits, extra):
        targets, mask = extra
        return jnp.sum(token_nll(logits, targets) * mask)

    def step(params, opt_state, memory, inputs, targets, mask, reset):
        def loss_fn(p):
            if args.arch == "xl":
                ys, mem = xl_segments(model, p, memory, inputs, seg, head, (targets, mask),
                                      reset=reset, memory_grad=not args.stop_grad)
            else:
                ys, mem = rmt_segments(model, p, memory, inputs, seg, head, (targets, mask),
                                       reset=reset, stop_gradient=args.stop_grad)
            return jnp.sum(ys) / jnp.maximum(jnp.sum(mask), 1.0), mem

        (loss, mem), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, jax.lax.stop_gradient(mem), loss

    step = jax.jit(step, donate_argnums=(0, 1))
    done, t0, tokens = 0, time.time(), 0
    curve = []
    for stage, (k, batch, steps) in enumerate(plan):
        lanes = make_lanes(ds, "train", batch, k * seg, mode="sequences", seed=args.seed + stage)
        memory = (empty_memory(model.cfg, batch) if args.arch == "xl"
                  else rmt_initial_memory(params, batch))
        losses = []
        for _ in range(steps):
            b = next(lanes)
            params, opt_state, memory, loss = step(
                params, opt_state, memory, jnp.asarray(b["inputs"]), jnp.asarray(b["targets"]),
                jnp.asarray(b["mask"]), jnp.asarray(b["reset"]))
            done += 1
            tokens += batch * k * seg
            losses.append(loss)
            if done % 100 == 0 or done == total:
                mean = float(np.mean(jax.device_get(losses)))
                losses = []
                curve.append({"step": done, "tokens": tokens, "K": k, "loss": mean})
                log(f"step {done}/{total} K={k} B={batch} tokens {tokens} loss {mean:.3f} "
                    f"{tokens / (time.time() - t0):.0f} tok/s")
    return params, {"plan": plan, "curve": curve, "train_s": time.time() - t0,
                    "tokens": tokens}


def segment_memories(model, params, streams: list[np.ndarray], seg: int, pad: int):
    """Memory entering every segment of every stream: [S, N, m, d] (S: the longest)."""
    from longctx.models.recurrent_memory import rmt_initial_memory, rmt_segment

    inputs = [s[:-1] for s in streams]
    n_seg = max(-(-len(x) // seg) for x in inputs)
    rows = np.full((len(inputs), n_seg * seg), pad, np.int32)
    for i, x in enumerate(inputs):
        rows[i, : len(x)] = x

    @jax.jit
    def run(params, rows):
        def body(mem, tok):
            _, new = rmt_segment(model, params, tok, mem)
            return new, mem.vectors

        xs = jnp.swapaxes(rows.reshape(rows.shape[0], n_seg, seg), 0, 1)
        _, mems = jax.lax.scan(body, rmt_initial_memory(params, rows.shape[0]), xs)
        return mems

    return np.asarray(run(params, jnp.asarray(rows)))


def candidate_logprobs(model, params, convs, items, seg: int, pad: int,
                       chunk: int = 256) -> np.ndarray:
    """Summed log-probability of every candidate of every item, items in order."""
    from longctx.models.recurrent_memory import MemoryTokens, rmt_segment

    mems = segment_memories(model, params, [c.ids for c in convs], seg, pad)
    length = seg + 4
    rows, tgts, masks, mem_idx, owner = [], [], [], [], []
    for j, it in enumerate(items):
        req = it.request
        ids = convs[req.stream].ids
        s = (req.pos - 1) // seg
        prefix = np.asarray(ids[s * seg : req.pos], np.int32)
        for cand in req.candidates:
            x = np.concatenate([prefix, cand[:-1]])
            t = np.zeros(length, np.int32)
            m = np.zeros(length, np.float32)
            t[len(prefix) - 1 : len(prefix) - 1 + len(cand)] = cand
            m[len(prefix) - 1 : len(prefix) - 1 + len(cand)] = 1.0
            r = np.full(length, pad, np.int32)
            r[: len(x)] = x
            rows.append(r), tgts.append(t), masks.append(m)
            mem_idx.append((s, req.stream)), owner.append(j)

    @jax.jit
    def logprob(params, tok, tgt, mask, vectors):
        logits, _ = rmt_segment(model, params, tok, MemoryTokens(vectors=vectors))
        lp = jax.nn.log_softmax(logits, axis=-1)
        return jnp.sum(jnp.take_along_axis(lp, tgt[..., None], -1)[..., 0] * mask, axis=1)

    scores = np.zeros(len(rows))
    for a in range(0, len(rows), chunk):
        sl = slice(a, a + chunk)
        n = len(rows[sl])
        pad_n = chunk - n
        tok = np.stack(rows[sl] + [rows[0]] * pad_n)
        tgt = np.stack(tgts[sl] + [tgts[0]] * pad_n)
        msk = np.stack(masks[sl] + [masks[0]] * pad_n)
        vec = np.stack([mems[s, i] for s, i in mem_idx[sl]] + [mems[0, 0]] * pad_n)
        scores[a : a + n] = np.asarray(logprob(params, tok, tgt, msk, vec))[:n]
    return scores


def score_probes(model, params, convs, items, seg: int, pad: int, chunk: int = 256):
    """Forced-choice credit of each item (its true candidate first)."""
    from longctx.eval import metrics

    scores = candidate_logprobs(model, params, convs, items, seg, pad, chunk)
    credits, k = [], 0
    for it in items:
        n = len(it.request.candidates)
        credits.append(metrics.forced_choice_credit(list(scores[k : k + n]), 0))
        k += n
    return credits


def probe_items(cfg, ds) -> tuple[list, list]:
    """The validation conversations and recall items `longctx evaluate` would score."""
    from longctx.data.render import value_ids
    from longctx.eval import probes
    from longctx.eval.evaluate import SEED

    convs = ds.conversations("validation")[: cfg.eval.max_conversations]
    cache: dict[str, list[np.ndarray]] = {}

    def value_tokens(slot):  # as `longctx evaluate` lists a slot's values
        if slot not in cache:
            cache[slot] = [value_ids(ds.tokenizer, v) for v in ds.slot_values(slot)]
        return cache[slot]

    items, _ = probes.recall_items(convs, value_tokens, cfg.eval.num_candidates,
                                   np.random.default_rng(SEED))
    return convs, items


def view_split(path: str) -> str:
    """Recall of an RMT result's probes split by whether the fact is in the answer's own
    segment (one attention step away) or only reachable through the memory."""
    from longctx.config import parse_overrides
    from longctx.data import prepare_dataset

    r = json.loads(Path(path).read_text())
    if r["args"].get("arch", "rmt") != "rmt":
        raise SystemExit(f"error: {path}: not an RMT result (XL's view: reach_study.direct_split)")
    cfg = parse_overrides(_module("dialogue_comparison").get_config(), r["args"]["overrides"])
    _, items = probe_items(cfg, prepare_dataset(cfg.data))
    d = np.asarray(r["probes"]["distance"])
    if d.tolist() != [it.distance for it in items]:
        raise SystemExit(f"error: {path}: its probes are not this dataset's; rebuild it")
    seg, span = r["args"].get("seg") or r["span"], r["span"]
    pos = np.asarray([it.request.pos for it in items])
    in_view = d <= (pos - 1) % seg + 1
    c = np.asarray(r["probes"]["credit"], float)
    rows = [f"{Path(path).stem} (segment {seg})"]
    for lo, hi in ((0, 1), (1, 2), (2, 4), (4, 8)):
        band = (d > lo * span) & (d <= hi * span)
        for name, sel in (("in view", band & in_view), ("through memory", band & ~in_view)):
            x = c[sel]
            if x.size > 1:
                rows.append(f"  {lo}-{hi}W {name}: {x.mean():.3f} ± "
                            f"{x.std(ddof=1) / np.sqrt(x.size):.3f} (n={x.size})")
    return "\n".join(rows)


def rmt_flops_per_token(c, seg: int, n_mem: int, training: bool) -> float:
    """Analytic FLOPs per predicted token of RMT, counted as `longctx.eval.flops` counts
    the others: a segment is seg + 2 n_mem rows under one dense causal mask (masked
    entries included), the output layer only on the seg token rows; training adds the
    backward (2x) and the rematerialised scan's second forward (1x): 4x in all."""
    n, hd = seg + 2 * n_mem, c.n_head * c.d_head
    per_layer = (2 * n * c.d_model * 3 * hd + 2 * n * c.d_model * hd  # qkv_net, r_net
                 + 3 * 2 * n * n * hd + 2 * n * hd * c.d_model  # scores, values, o_net
                 + 2 * n * 2 * c.d_model * c.d_inner)  # feed-forward
    forward = c.n_layer * per_layer + 2 * seg * c.d_model * c.n_token
    return float(forward * (4 if training else 1) / seg)


def cost_table(seg_mems: list[tuple[int, int]]) -> str:
    """Markdown: parameters and FLOPs per token of XL, XL through a rematerialised scan
    (gradients through memory), the window and RMT at (segment, memory tokens)."""
    from longctx.config import parse_overrides
    from longctx.eval.flops import flops_per_token

    cfg = parse_overrides(_module("dialogue_comparison").get_config(), ["model.n_token=2048"])
    m = cfg.model
    from longctx.models import Decoder

    shapes = jax.eval_shape(lambda k: Decoder(m).init(k, jnp.zeros((1, m.xl.tgt_len), jnp.int32)),
                            jax.random.PRNGKey(0))
    base = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    window = parse_overrides(cfg, ["model.arch=window"]).model
    rows = [("xl", base, flops_per_token(m, False), flops_per_token(m, True)),
            ("xl, gradient through memory (remat scan)", base, flops_per_token(m, False),
             flops_per_token(m, True) * 4 / 3),
            ("window", base, flops_per_token(window, False), flops_per_token(window, True))]
    from longctx.models.recurrent_memory import added_params

    for seg, n_mem in seg_mems:
        forward, training = (rmt_flops_per_token(m, seg, n_mem, t) for t in (False, True))
        rows.append((f"rmt seg {seg}, m {n_mem}", base + added_params(n_mem, m.d_model),
                     forward, training))
        # the gate (model.rmt.memory_gate): one [m, d] x [d, d] product per segment
        # (training: the same multiple of the forward as the rest of rmt's step)
        gate_flops = 2 * n_mem * m.d_model * m.d_model / seg
        rows.append((f"rmt seg {seg}, m {n_mem}, gated update",
                     base + added_params(n_mem, m.d_model, gate=True), forward + gate_flops,
                     training + gate_flops * training / forward))
    lines = ["| model | params | FLOPs/token (forward) | training FLOPs/token |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {p:,} | {f:.2e} | {t:.2e} |" for name, p, f, t in rows]
    return "\n".join(lines)


def pooled(result: dict, lo: float, hi: float) -> tuple[float, float, int]:
    """Mean credit, its standard error and count of the probes lo*W < d <= hi*W."""
    d = np.asarray(result["probes"]["distance"], float) / result["span"]
    c = np.asarray(result["probes"]["credit"], float)[(d > lo) & (d <= hi)]
    return float(c.mean()), float(c.std(ddof=1) / np.sqrt(c.size)), int(c.size)


def summarise(paths: list[str], baseline: str | None, chance: float = 0.125) -> str:
    """Markdown: each result's fine buckets and pooled 2-4W / 4-8W recall with z against
    chance and against `baseline` (a result file; z over the two standard errors)."""
    reach = _module("reach_study")
    names = reach.bucket_names()[:8]
    head = ["run", "tokens", *names, "2-4W", "z vs chance", "4-8W", "z vs chance"]
    base = json.loads(Path(baseline).read_text()) if baseline else None
    if base:
        head[-2:-2] = ["z vs base"]
        head.append("z vs base")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        r = json.loads(Path(path).read_text())
        cells = [Path(path).stem, f"{r['info']['tokens'] / 1e6:.1f}M"]
        cells += [f"{r['fine'][n]['accuracy']:.3f}" for n in names]
        for lo, hi in ((2, 4), (4, 8)):
            m, se, n = pooled(r, lo, hi)
            cells += [f"{m:.3f} ± {se:.3f} (n={n})", f"{(m - chance) / se:+.1f}"]
            if base:
                bm, bse, _ = pooled(base, lo, hi)
                cells.append(f"{(m - bm) / np.hypot(se, bse):+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["summarise"]:
        q = argparse.ArgumentParser(prog="rmt_reach.py summarise")
        q.add_argument("results", nargs="+")
        q.add_argument("--baseline", default=None, help="a result file to take z against")
        a = q.parse_args(argv[1:])
        print(summarise(a.results, a.baseline))
        return 0
    if argv[:1] == ["cost"]:
        print(cost_table([(64, 16), (128, 16)]))
        return 0
    if argv[:1] == ["views"]:
        for path in argv[1:]:
            print(view_split(path))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="result JSON (recall per probe and bucket)")
    p.add_argument("--tokens", type=int, default=1_200_000)
    p.add_argument("--tokens-per-step", type=int, default=512)
    p.add_argument("--k", default="4", help="segments a step, or a curriculum '2:0.25,4'")
    p.add_argument("--n-mem", type=int, default=16)
    p.add_argument("--seg", type=int, default=0,
                   help="rmt segment length (default: the span W; xl: its tgt_len = W)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=("rmt", "xl"), default="rmt",
                   help="xl: Transformer-XL (mem_len = W) over the same K-segment rows")
    p.add_argument("--stop-grad", action="store_true",
                   help="gradient stopped at every segment boundary (the ablation; for xl, "
                        "plain XL)")
    p.add_argument("--gate", type=float, default=None,
                   help="rmt: a gated memory update starting at sigmoid(GATE), i.e. "
                        "model.rmt.memory_gate=true model.rmt.memory_gate_bias=GATE "
                        "(default: the written memory replaces the read one)")
    p.add_argument("--init-from", default=None,
                   help="a run directory whose parameters start the model (warm start; "
                        "rmt keeps its fresh initial memory)")
    p.add_argument("overrides", nargs="*", help="config section.key=value (README size's)")
    args = p.parse_args(argv)
    if args.gate is not None and args.arch != "rmt":
        p.error("--gate is a gated update of rmt's memory; use it with --arch rmt")
    gate = ([] if args.gate is None else
            ["model.rmt.memory_gate=true", f"model.rmt.memory_gate_bias={args.gate!r}"])

    from longctx.config import parse_overrides
    from longctx.data import prepare_dataset
    from longctx.models import Decoder
    from longctx.models.recurrent_memory import rmt_init

    reach = _module("reach_study")
    cfg = parse_overrides(_module("dialogue_comparison").get_config(),
                          [f"train.seed={args.seed}", *gate, *args.overrides])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    ds = prepare_dataset(cfg.data)
    model = Decoder(replace(cfg.model, n_token=ds.vocab_size))
    key = jax.random.PRNGKey(args.seed)
    if args.arch == "xl":
        params = model.init(key, jnp.zeros((1, cfg.data.span), jnp.int32))["params"]
    else:
        params = rmt_init(model, key, args.n_mem, args.seg or cfg.data.span)  # gate: the knob
    if args.init_from:
        from longctx.rundir import load_run

        source = load_run(args.init_from).params
        params = {**params, **{k: v for k, v in source.items() if k in params}}
        log(f"warm start from {args.init_from}: {sorted(k for k in source if k in params)}")
    log(f"params {sum(x.size for x in jax.tree.leaves(params))}")
    params, info = train(cfg, ds, model, params, args, log)

    t0 = time.time()
    convs, items = probe_items(cfg, ds)
    if args.arch == "xl":
        from longctx.eval import metrics
        from longctx.eval.scoring import Scorer

        scorer = Scorer(model.cfg, params, cfg.eval.vanilla_stride)
        _, scored = scorer.stream_logprobs([c.ids for c in convs], [it.request for it in items])
        credits = [metrics.forced_choice_credit([lp.sum() for lp in s.logprobs], 0)
                   for s in scored]
    else:
        credits = score_probes(model, params, convs, items, args.seg or cfg.data.span,
                               ds.special_ids["pad"])
    distances = [int(it.distance) for it in items]
    fine = reach.fine_buckets(distances, credits, cfg.data.span)
    result = {"args": vars(args), "info": info, "eval_s": time.time() - t0,
              "span": cfg.data.span, "fine": fine,
              "probes": {"distance": distances, "credit": [float(c) for c in credits]}}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(out)
    print(" | ".join(f"{k} {v['accuracy']:.3f}±{v['stderr'] or 0:.3f} (n={v['count']})"
                     for k, v in fine.items() if v["accuracy"] is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
