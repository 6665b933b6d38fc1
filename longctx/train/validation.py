"""Validation while training: every `train.eval_every_steps` steps and at the last step,
score the run's current parameters on the validation split of its own dataset.

A pass reports the turn-token loss and perplexity (every dataset) and, where the dataset
plants facts (synthetic), forced-choice recall by distance bucket. It scores through the
evaluation suite's own code (`longctx.eval.corpus`, `scoring`, `probes`, `evaluate`), so a
pass over the whole split at the last step gives the numbers `longctx evaluate` writes to
eval.json (perplexity.overall, recall.buckets).

Cost, bounded before training starts: a pass scores the first validation conversations
whose cost, in forward-pass tokens the scorer computes (`pass_cost`: streams, vanilla's
recompute windows, every recall candidate's row, padding included), fits
`train.eval_tokens`. By default (0) that budget is a tenth of the training compute between
two passes (a trained token costs about three forward tokens: forward and backward), never
less than one conversation (the start line says when even that is over, and how often to
validate instead). The row records the seconds a pass took; the progress line says what
share of the training time since the previous pass that was.

Exact resume: the conversations and probes are fixed when the run starts (a fixed seed),
and a pass is a pure function of the parameters, so the rows are the same whether or not
the run was interrupted. A pass at step s runs before the checkpoint of step s is written,
so every saved step's row exists; rows past the restored step are dropped on resume like
training rows (`longctx.train.metrics.truncate_jsonl`). In a multi-process run every
process scores the same pass (so none waits inside the next step's collective for the
others) and only the primary writes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import Config

log = logging.getLogger(__name__)

SHARE_OF_TRAINING = 0.1  # default budget: this share of the training compute between passes
FORWARDS_PER_TRAINED_TOKEN = 3  # forward + backward (twice the forward)
KIND = "validation"  # the `kind` of a validation row in metrics.jsonl


@dataclass
class _Items:
    """What one pass scores: conversations, their recall items, and what they cost."""

    convs: list
    recall_items: list
    skipped: int
    cost: int  # estimated forward tokens of one pass


def training_forwards(cfg: Config) -> int:
    """The training compute between two passes, in forward-pass tokens."""
    from longctx.models import archs

    trained = cfg.train.eval_every_steps * cfg.train.batch_size * archs.tokens_per_step(cfg.model)
    return FORWARDS_PER_TRAINED_TOKEN * trained


def default_budget(cfg: Config) -> int:
    """Forward tokens a pass may cost when train.eval_tokens is 0 (see the module doc)."""
    return int(SHARE_OF_TRAINING * training_forwards(cfg))


def pass_cost(cfg: Config, convs: list, items: list) -> int:
    """Forward-pass tokens the scorer computes to score `convs` and their recall `items`,
    padding included, as the architecture's `ScoringPlan` drives `longctx.eval.scoring`:
    streams carrying a state go in lanes of ROWS conversations, padded to the longest,
    chunk by chunk; continuations from the state are scored per chunk in calls of ROWS
    rows; continuations on context rows, and a fixed context's recompute windows, are rows
    of a fixed length in calls of rows_per_call rows)."""
    from longctx.eval.scoring import ROWS, _bucket, rows_per_call
    from longctx.models import archs

    m = cfg.model
    plan = archs.get(m).scoring(m)
    if not convs:
        return 0
    predicted = [int(c.ids.size) - 1 for c in convs]
    cands = [(it.request.stream, it.request.pos, int(c.size))
             for it in items for c in it.request.candidates]
    lmax = max((size for _, _, size in cands), default=1)

    def calls(rows: int, per: int, length: int) -> int:
        return -(-rows // per) * per * length

    if plan.chunk is None:  # a fixed context recomputed per window (vanilla)
        ctx = plan.context
        stride = max(1, min(cfg.eval.vanilla_stride, ctx))
        windows = sum(-(-n // stride) for n in predicted if n > 0)
        per = rows_per_call(ctx)
        stream = calls(windows, per, ctx)
    else:
        seg = plan.chunk
        stream = sum(ROWS * -(-max(predicted[b : b + ROWS]) // seg) * seg
                     for b in range(0, len(convs), ROWS))
    if plan.per_token:  # one row of the context for every candidate token
        return stream + calls(sum(s for *_, s in cands), rows_per_call(plan.context),
                              plan.context)
    if plan.context is not None:  # one row of bounded left context per candidate
        length = _bucket(plan.context + lmax)
        return stream + calls(len(cands), rows_per_call(length), length)
    groups: dict[tuple[int, int], int] = {}  # (lane block, segment) -> candidate rows
    for conv, pos, _ in cands:
        key = (conv // ROWS, (pos - 1) // seg)
        groups[key] = groups.get(key, 0) + 1
    length = _bucket(seg + lmax)
    return stream + sum(calls(rows, ROWS, length) for rows in groups.values())


def select(cfg: Config, corpus: Any) -> _Items:
    """The first validation conversations within the budget, and their recall items (the
    evaluation suite's items: same seed, same distractors)."""
    from longctx.eval import probes
    from longctx.eval.evaluate import SEED

    budget = cfg.train.eval_tokens or default_budget(cfg)
    rng = np.random.default_rng(SEED)
    items, skipped = probes.recall_items(corpus.convs, corpus.value_tokens,
                                         cfg.eval.num_candidates, rng)
    keep = 1
    while keep < len(corpus.convs) and pass_cost(cfg, corpus.convs[: keep + 1], [
            it for it in items if it.request.stream <= keep]) <= budget:
        keep += 1
    kept_items = [it for it in items if it.request.stream < keep]
    total = pass_cost(cfg, corpus.convs[:keep], kept_items)
    return _Items(corpus.convs[:keep], kept_items, skipped, total)


class Validation:
    """Validation passes of one training session; `due(step)` says when, `run` scores."""

    def __init__(self, cfg: Config, workdir: Path, writer: Any, num_steps: int) -> None:
        from longctx.eval.corpus import load_corpus
        from longctx.rundir import Run

        self.cfg, self.writer, self.num_steps = cfg, writer, num_steps
        run = Run(workdir, cfg, params=None, step=0, tokenizer=None)  # the dataset's tokenizer
        corpus = load_corpus(run, split="validation", max_conversations=cfg.eval.max_conversations)
        self.dataset = corpus.name
        self.items = select(cfg, corpus)
        self.last_end = time.time()
        split_size = len(corpus.convs)
        if writer.enabled:
            log.info(f"validation every {cfg.train.eval_every_steps} steps: "
                     f"{len(self.items.convs)} of {split_size} {self.dataset} validation "
                     f"conversations, {len(self.items.recall_items)} recall probes, about "
                     f"{self.items.cost:,} forward tokens a pass "
                     f"({self.items.cost / max(training_forwards(cfg), 1):.0%} of the training "
                     f"compute between passes){self._advice()}")

    def _advice(self) -> str:
        """When the least a pass scores (one conversation) is over the default budget."""
        from longctx.models import archs

        cfg = self.cfg
        if cfg.train.eval_tokens or self.items.cost <= default_budget(cfg):
            return ""
        per_step = SHARE_OF_TRAINING * FORWARDS_PER_TRAINED_TOKEN * cfg.train.batch_size \
            * archs.tokens_per_step(cfg.model)
        return (f"; one conversation is the least a pass scores: for a tenth, validate "
                f"every {math.ceil(self.items.cost / per_step)} steps or more")

    def due(self, step: int) -> bool:
        return step % self.cfg.train.eval_every_steps == 0 or step == self.num_steps

    def run(self, step: int, params: Any) -> dict[str, Any]:
        """Score `params` (host arrays); write and return the validation row of `step`."""
        from longctx.eval.evaluate import perplexity, recall
        from longctx.eval.scoring import Scorer
        from longctx.models import archs

        start = time.time()
        convs, items = self.items.convs, self.items.recall_items
        scorer = Scorer(self.cfg.model, params, self.cfg.eval.vanilla_stride)
        lps, scored = scorer.stream_logprobs([c.ids for c in convs],
                                             [it.request for it in items])
        overall = perplexity(convs, lps)["overall"]
        row: dict[str, Any] = {
            "step": step, "kind": KIND, "dataset": self.dataset,
            "loss": overall["nll"], "perplexity": overall["ppl"], "tokens": overall["tokens"],
            "conversations": len(convs),
        }
        rec = recall(items, scored, self.items.skipped, archs.span(self.cfg.model),
                     self.cfg.eval.num_candidates)
        if rec is not None:
            row["recall"] = {b: v["accuracy"] for b, v in rec["buckets"].items()}
            row["probes"] = {b: v["count"] for b, v in rec["buckets"].items()}
        end = time.time()
        row["seconds"] = round(end - start, 3)
        training = max(start - self.last_end, 1e-9)
        self.last_end = end
        self.writer.write_validation(row, _line(row, training))
        return row


def _line(row: dict[str, Any], training_seconds: float) -> str:
    """The progress line of a validation row."""
    recall = row.get("recall") or {}
    cells = "".join(f" {b} {v:.3f}" for b, v in recall.items() if v is not None)
    loss = "–" if row["loss"] is None else f"{row['loss']:.4f}"
    ppl = "–" if row["perplexity"] is None or not math.isfinite(row["perplexity"]) \
        else f"{row['perplexity']:.2f}"
    return (f"validation at step {row['step']}: loss {loss}  ppl {ppl}"
            + (f"  recall{cells}" if cells else "")
            + f"  ({row['conversations']} conversation{'s' * (row['conversations'] != 1)}, "
              f"{row['seconds']:.1f} s, "
              f"{row['seconds'] / training_seconds:.0%} of the training time since the last)")


def for_run(cfg: Config, workdir: Path, writer: Any, num_steps: int) -> Validation | None:
    """The run's validation passes, or None when train.eval_every_steps is 0."""
    if cfg.train.eval_every_steps <= 0:
        return None
    return Validation(cfg, workdir, writer, num_steps)
