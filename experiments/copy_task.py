"""The copy task of the Recurrent Memory Transformer paper, beside its published table.

Bulatov et al. 2022 (LM-RMT, `experiment_results/long_copy_reverse.csv`): a sequence of L
random symbols (8 values, so chance is 0.125) is followed by a start marker, and the model
must write the sequence out twice; the 3L tokens are cut into n equal segments, so the
copy must cross n/3 or more segment boundaries. The model is 4 layers, d_model 128 (922,890
parameters). Compared: Transformer-XL (memory rows as published), recurrent memory tokens
(`longctx.models.recurrent_memory`, gradients through the memory over all the segments
of a sample, as the anchor) and no memory; besides them, XL with gradients through its memory
(`xl_grad`) and the memory tokens with the gradient stopped at every boundary (`rmt_sg`).

Accuracy is the anchor's: the answer generated greedily (each predicted symbol fed back),
share of its 2L symbols right, on fresh test sequences. Training samples fresh sequences
every step; the loss is on the answer. A curriculum moves on when the training accuracy on
the answer reaches --advance (or after --stage-steps): `--curriculum segments` trains on
samples that fill 1, 2, ... of the n segments (a copy of a third of them);
`--curriculum length` fills all n segments with a copy of L/4, L/2, 3L/4 then L symbols
(the sequence first, a gap of 0s, the answer last), so the memory carries a few more
symbols over the same segments at each stage.

    python experiments/copy_task.py --size anchor --steps 4000               # the table
    python experiments/copy_task.py --size small --scale 5 --steps 3000      # a CPU budget
    python experiments/copy_task.py --report --out runs/copy_task             # table only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from longctx.config import ModelConfig
from longctx.models import build_model, count_params, init_memory
from longctx.models.recurrent_memory import rmt_init, rmt_initial_memory, rmt_segment, rmt_segments
from longctx.models.segment_scan import xl_segments
from longctx.models.transformer_xl import xl_forward

N_SYMBOLS = 8  # symbols 2..9; 0 pads, 1 marks the start of the answer
VOCAB = 2 + N_SYMBOLS


class Task(NamedTuple):
    length: int  # L symbols to copy (twice)
    segments: int  # the 3L tokens in this many segments
    memory: int  # XL memory rows and RMT memory tokens, as published


TASKS = {"copy120_3": Task(120, 3, 60), "copy120_6": Task(120, 6, 30),
         "copy120_9": Task(120, 9, 40), "copy240_6": Task(240, 6, 60)}
ARCHS = ("rmt", "xl", "none", "xl_grad", "rmt_sg")

# Test accuracy of every run in LM-RMT's long_copy_reverse.csv (4 layers, d_model 128;
# copy240's RMT list includes its two d_inner 512 runs, as the paper's figure does).
PUBLISHED = {
    ("copy120_3", "xl"): [0.889, 0.668, 0.889, 0.668], ("copy120_3", "rmt"): [1.0, 1.0],
    ("copy120_3", "none"): [0.127, 0.123, 0.127, 0.123],
    ("copy120_6", "xl"): [0.124, 0.126], ("copy120_6", "rmt"): [1.0],
    ("copy120_6", "none"): [0.123],
    ("copy120_9", "xl"): [0.159, 0.124, 0.125], ("copy120_9", "rmt"): [1.0, 1.0],
    ("copy120_9", "none"): [0.126],
    ("copy240_6", "xl"): [0.125, 0.125], ("copy240_6", "rmt"): [0.989, 0.978, 1.0, 0.563],
}
SIZES = {  # model shapes; 'anchor' is the published model
    "anchor": dict(n_layer=4, n_head=4, d_head=64, d_model=128, d_inner=256, dropout=0.1),
    "small": dict(n_layer=2, n_head=2, d_head=32, d_model=64, d_inner=128, dropout=0.0),
    "tiny": dict(n_layer=1, n_head=1, d_head=8, d_model=8, d_inner=16, dropout=0.0),
}


def scaled(task: Task, scale: int) -> Task:
    """The task with L and the memory divided by scale (the segments stay)."""
    length = task.length // scale
    if (3 * length) % task.segments:
        raise SystemExit(f"copy_task: --scale {scale} leaves {3 * length} tokens, which do "
                         f"not split into {task.segments} segments; pick another scale")
    return Task(length, task.segments, max(1, task.memory // scale))


def model_config(size: str, task: Task, arch: str) -> ModelConfig:
    seg_len = 3 * task.length // task.segments
    mem_len = task.memory if arch in ("xl", "xl_grad") else 0
    return ModelConfig(arch="xl", n_token=VOCAB, **SIZES[size]).replace(
        xl=dict(tgt_len=seg_len, mem_len=mem_len))


def stages(task: Task, curriculum: str) -> list[tuple[int, int]]:
    """The curriculum's (segments filled, symbols copied) stages; the last is the task."""
    seg_len, n = 3 * task.length // task.segments, task.segments
    if curriculum == "segments":
        return [(k, k * seg_len // 3) for k in range(1, n)] + [(n, task.length)]
    if curriculum == "length":
        return [(n, max(1, task.length * j // 4)) for j in range(1, 4)] + [(n, task.length)]
    return [(n, task.length)]


def make_batch(key, batch: int, task: Task, filled: int, length: int | None = None):
    """Samples that fill `filled` of the task's segments: [B, filled*T] inputs, targets,
    answer mask, and the position of the start marker. A copy of `length` symbols
    (default: the task's) shorter than the row leaves a gap of 0s between the sequence and
    the marker, so the sequence stays at the front and the answer at the back."""
    seg_len = 3 * task.length // task.segments
    n = filled * seg_len
    length = task.length if length is None else length
    seq = jax.random.randint(key, (batch, length), 2, VOCAB)
    gap = jnp.zeros((batch, n - 3 * length), seq.dtype)
    full = jnp.concatenate([seq, gap, jnp.ones((batch, 1), seq.dtype), seq, seq], axis=1)
    first = n - 2 * length
    answer = (jnp.arange(n) >= first)[None].repeat(batch, 0)
    return full[:, :-1], full[:, 1:], answer.astype(jnp.float32), first


class Runner:
    """One architecture on one task: init, the training loss, greedy generation."""

    def __init__(self, size: str, task: Task, arch: str):
        self.task, self.arch = task, arch
        self.cfg = model_config(size, task, arch)
        self.model = build_model(self.cfg)
        self.seg_len = self.cfg.xl.tgt_len

    def init(self, key):
        if self.arch.startswith("rmt"):
            return rmt_init(self.model, key, self.task.memory, self.seg_len)
        tokens = jnp.zeros((1, self.seg_len), jnp.int32)
        return self.model.init({"params": key}, tokens, init_memory(self.cfg, 1))["params"]

    def start(self, params, batch: int):
        if self.arch.startswith("rmt"):
            return rmt_initial_memory(params, batch)
        return init_memory(self.cfg, batch)

    def segments(self, params, inputs, extras, head, rng):
        """Training forward over all the sample's segments -> stacked head outputs."""
        memory = self.start(params, inputs.shape[0])
        kw = dict(deterministic=rng is None, rng=rng)  # no key: evaluation, no dropout
        if self.arch.startswith("rmt"):
            return rmt_segments(self.model, params, memory, inputs, self.seg_len, head, extras,
                                stop_gradient=self.arch == "rmt_sg", **kw)[0]
        return xl_segments(self.model, params, memory, inputs, self.seg_len, head, extras,
                           memory_grad=self.arch == "xl_grad", **kw)[0]

    def segment(self, params, memory, tokens):
        """One evaluation segment -> (logits, memory)."""
        if self.arch.startswith("rmt"):
            return rmt_segment(self.model, params, tokens, memory)
        return self.model.apply({"params": params}, tokens, memory, None, True,
                                method=xl_forward)

    def greedy(self, params, inputs, first: int):
        """Generate from position `first` on (each prediction is the next input) ->
        predictions [B, N] (those before `first` are teacher-forced)."""
        t, memory, preds = self.seg_len, self.start(params, inputs.shape[0]), []
        carry = None  # the prediction that becomes the first input of the next segment
        for k in range(inputs.shape[1] // t):
            seg = inputs[:, k * t : (k + 1) * t]
            if carry is not None:
                seg = seg.at[:, 0].set(carry)
            lo = max(0, first - k * t)

            def body(i, state, k=k, memory=memory):
                seg, out = state
                pred = jnp.argmax(self.segment(params, memory, seg)[0][:, i], -1)
                nxt = jnp.minimum(i + 1, t - 1)
                fed = jnp.where(i + 1 < t, pred, seg[:, nxt])
                return seg.at[:, nxt].set(fed.astype(seg.dtype)), out.at[:, i].set(pred)

            out = jnp.argmax(self.segment(params, memory, seg)[0], -1)
            if lo < t:
                seg, out = jax.lax.fori_loop(lo, t, body, (seg, out))
                carry = out[:, -1]
            memory = self.segment(params, memory, seg)[1]
            preds.append(out)
        return jnp.concatenate(preds, axis=1)


def nll_and_hits(logits, extra):
    targets, mask = extra
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    hits = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(hits * mask)


def train_run(size, task_name, arch, seed, steps, batch, lr, scale=1, curriculum="none",
              advance=0.9, stage_steps=0, deadline=0.0, chunk=50, n_test=256,
              log=print) -> dict:
    """Train one (task, arch, seed) for `steps` steps (or until `deadline` seconds of
    training, if > 0: the steps taken are recorded, and --steps of that many reproduces the
    run); evaluate greedily on fresh samples. Curriculum: one segment more when the
    training accuracy reaches `advance`, or after `stage_steps` steps in a stage (if > 0)."""
    task = scaled(TASKS[task_name], scale)
    run = Runner(size, task, arch)
    key = jax.random.key(seed)
    params = run.init(jax.random.fold_in(key, 0))
    schedule = optax.linear_schedule(0.0, lr, min(200, steps // 10 + 1))  # then constant
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = opt.init(params)

    @partial(jax.jit, static_argnums=(3, 4))
    def train_chunk(params, opt_state, step0, stage, n):
        def one(state, i):
            params, opt_state = state
            k = jax.random.fold_in(jax.random.fold_in(key, 1), step0 + i)
            inputs, targets, mask, _ = make_batch(k, batch, task, *stage)

            def loss(p):
                nll, hits = run.segments(p, inputs, (targets, mask), nll_and_hits,
                                         jax.random.fold_in(k, 1))
                count = jnp.sum(mask)
                return jnp.sum(nll) / count, jnp.sum(hits) / count

            (value, acc), grads = jax.value_and_grad(loss, has_aux=True)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (value, acc)

        (params, opt_state), (losses, accs) = jax.lax.scan(one, (params, opt_state),
                                                           jnp.arange(n))
        return params, opt_state, jnp.mean(losses), jnp.mean(accs)

    plan, at = stages(task, curriculum), 0
    curve, tokens, step, t0, stage_start = [], 0, 0, time.time(), 0
    while step < steps and not (deadline > 0 and time.time() - t0 > deadline):
        n = min(chunk, steps - step)
        filled, length = plan[at]
        params, opt_state, loss, acc = train_chunk(params, opt_state, step, plan[at], n)
        step += n
        tokens += n * batch * filled * run.seg_len
        curve.append(dict(step=step, tokens=tokens, filled=filled, length=length,
                          loss=round(float(loss), 4), train_acc=round(float(acc), 4)))
        log(f"{task_name} {arch} seed {seed}: step {step} segments {filled} copy {length} "
            f"loss {float(loss):.3f} acc {float(acc):.3f} ({time.time() - t0:.0f}s)")
        if at + 1 < len(plan) and (float(acc) >= advance or
                                   0 < stage_steps <= step - stage_start):
            at, stage_start = at + 1, step
    test = jax.random.fold_in(key, 2)
    inputs, targets, mask, first = make_batch(test, n_test, task, task.segments)
    preds = jax.jit(run.greedy, static_argnums=2)(params, inputs, first)
    greedy = float(jnp.sum((preds == targets) * mask) / jnp.sum(mask))
    forced = jax.jit(lambda p: run.segments(p, inputs, (targets, mask), nll_and_hits, None))
    tf_hits = float(jnp.sum(jax.tree.leaves(forced(params))[1]) / jnp.sum(mask))
    return dict(task=task_name, arch=arch, seed=seed, size=size, scale=scale,
                length=task.length, segments=task.segments,
                memory=0 if arch == "none" else task.memory,
                steps=step, batch=batch, lr=lr, curriculum=curriculum, advance=advance,
                stage_steps=stage_steps, final_stage=list(plan[at]), tokens=tokens,
                params=count_params(params), accuracy=greedy, teacher_forced=tf_hits,
                n_test=n_test, seconds=round(time.time() - t0, 1), curve=curve)


def tokens_to_solve(result: dict, level: float = 0.99) -> int | None:
    """Training tokens until the training accuracy on the full task first reached `level`
    (None if it never did)."""
    full = (result["segments"], result["length"])
    for point in result["curve"]:
        if (point.get("filled"), point.get("length", result["length"])) == full and \
                point["train_acc"] >= level:
            return point["tokens"]
    return None


def table(results: list[dict]) -> str:
    """One row per (task, arch): seeds, mean/best greedy accuracy, tokens, the anchor's."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        key = (r["task"], r["arch"], r["size"], r["scale"], str(r["curriculum"]), r["steps"])
        groups.setdefault(key, []).append(r)
    lines = ["| task | arch | size | L / segments / memory | params | curriculum | seeds "
             "| accuracy mean | best | teacher-forced | steps | tokens per run "
             "| solved (tokens to 0.99) | published mean (best, runs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {a: i for i, a in enumerate(ARCHS)}
    for (task, arch, size, scale, cur, steps), rs in sorted(
            groups.items(), key=lambda g: (g[0][0], order[g[0][1]], g[0][4], g[0][5])):
        acc = [r["accuracy"] for r in rs]
        pub = PUBLISHED.get((task, arch)) if scale == 1 and size == "anchor" else None
        pub_text = f"{np.mean(pub):.3f} ({max(pub):.3f}, {len(pub)})" if pub else "-"
        r0 = rs[0]
        solved = [t for t in (tokens_to_solve(r) for r in rs) if t is not None]
        solved_text = f"{len(solved)}/{len(rs)}" + (
            f" ({int(np.mean(solved)):,})" if solved else "")
        lines.append(
            f"| {task} | {arch} | {size}/{scale} | {r0['length']} / {r0['segments']} / "
            f"{r0['memory']} | {r0['params']:,} | {cur} | {len(rs)} | {np.mean(acc):.3f} | "
            f"{max(acc):.3f} | {np.mean([r['teacher_forced'] for r in rs]):.3f} | {steps:,} | "
            f"{int(np.mean([r['tokens'] for r in rs])):,} | {solved_text} | {pub_text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=tuple(SIZES), default="anchor")
    p.add_argument("--scale", type=int, default=1, help="divide L and the memory by this")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--archs", default="rmt,xl,none")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--curriculum", choices=("none", "segments", "length"), default="none")
    p.add_argument("--advance", type=float, default=0.9,
                   help="curriculum: training accuracy that moves to the next stage")
    p.add_argument("--stage-steps", type=int, default=0,
                   help="curriculum: next stage after this many steps anyway (0: never)")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="stop each run's training after this many seconds (0: --steps only)")
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--out", default="runs/copy_task")
    p.add_argument("--report", action="store_true", help="print the table of --out only")
    a = p.parse_args(argv)
    tasks, archs = a.tasks.split(","), a.archs.split(",")
    bad = [t for t in tasks if t not in TASKS] + [x for x in archs if x not in ARCHS]
    if bad:
        print(f"copy_task: unknown task or arch {bad[0]!r} (tasks: {', '.join(TASKS)}; "
              f"archs: {', '.join(ARCHS)})", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        for task in tasks:
            for arch in archs:
                for seed in (int(s) for s in a.seeds.split(",")):
                    path = out / f"{task}_{arch}_{a.size}_x{a.scale}_s{seed}.json"
                    if path.exists():
                        continue
                    result = train_run(a.size, task, arch, seed, a.steps, a.batch, a.lr,
                                       a.scale, a.curriculum, a.advance, a.stage_steps,
                                       a.deadline, n_test=a.n_test)
                    print(f"{task} {arch} seed {seed}: accuracy {result['accuracy']:.3f}",
                          flush=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(result))
                    tmp.replace(path)
    results = [json.loads(f.read_text()) for f in sorted(out.glob("*.json"))]
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
