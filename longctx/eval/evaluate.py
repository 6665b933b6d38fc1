"""`longctx evaluate`: the coherence suite over a run's latest checkpoint.

Writes `DIR/eval.json` (schema and metric definitions: docs/eval_json.md). Every number is
stored with the count of items behind it; everything except the `speed` section is a
deterministic function of the checkpoint, the dataset and the eval config (fixed seed,
fixed batch shapes), so evaluating twice gives identical numbers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import Config
from longctx.errors import UserError
from longctx.eval import context_curve, metrics, probes, shuffle, speed
from longctx.eval.corpus import load_corpus
from longctx.eval.flops import flops_per_token
from longctx.eval.recurrence import WordTable, recurrence_nll
from longctx.eval.scoring import Request, Scorer
from longctx.models import archs

SCHEMA_VERSION = 2
SEED = 20240601  # every random choice of the suite (distractors, shuffles, targets)
CONTEXT_TARGETS = 256  # target tokens of the context curve
PARTS = 4  # perplexity.by_part: each conversation's turn tokens in this many equal parts


def perplexity(convs, lps: list[np.ndarray]) -> dict[str, Any]:
    """Turn-token NLL overall, by turn index, by session index and by part (the turn
    tokens of each conversation cut into PARTS equal consecutive parts: position within a
    single-session meeting)."""
    nll, by_turn, by_session, by_part = [], [], [], []
    for conv, lp in zip(convs, lps, strict=True):
        turn_key = np.full(conv.ids.size, -1)
        session_key = np.full(conv.ids.size, -1)
        for t in conv.turns:
            turn_key[t.start : t.end] = t.turn_index
            session_key[t.start : t.end] = t.session
        part_key = np.full(conv.ids.size - 1, -1)
        inside = np.nonzero(turn_key[1:] >= 0)[0]
        part_key[inside] = np.arange(inside.size) * PARTS // max(inside.size, 1)
        nll.append(-lp)
        by_turn.append(turn_key[1:])
        by_session.append(session_key[1:])
        by_part.append(part_key)
    nll_all, turn_all = np.concatenate(nll), np.concatenate(by_turn)
    return {
        "overall": metrics.summarise_nll(nll_all[turn_all >= 0]),
        "by_turn": metrics.perplexity_by_key(nll_all, turn_all),
        "by_session": metrics.perplexity_by_key(nll_all, np.concatenate(by_session)),
        "by_part": metrics.perplexity_by_key(nll_all, np.concatenate(by_part)),
    }


def recall(items: list[probes.RecallItem], scored, skipped: int, span: int, n: int):
    """Forced-choice recall and greedy exact match by distance bucket (None without probes)."""
    if not items and not skipped:
        return None
    credits = [metrics.forced_choice_credit([lp.sum() for lp in s.logprobs], 0) for s in scored]
    exact = [bool(s.greedy[0].all()) for s in scored]
    distances = [int(it.distance) for it in items]
    buckets = metrics.recall_by_bucket(credits, exact, distances, span)
    # per probe, so that finer distance buckets (experiments/reach_study.py) need no re-run
    per_probe = {"distance": distances, "position": [int(it.request.pos) for it in items],
                 "credit": [float(c) for c in credits], "exact": [int(e) for e in exact]}
    return {"num_candidates": n, "chance": 1.0 / n, "skipped": skipped, "buckets": buckets,
            "probes": per_probe}


def hits(scored, n: int) -> dict[str, Any]:
    """Next-utterance hits@1 by length-normalised log-likelihood."""
    scores = [[metrics.length_normalised(lp.sum(), lp.size) for lp in s.logprobs]
              for s in scored]
    res = metrics.hits_at_1(scores, [0] * len(scores))
    return {**res, "num_candidates": n, "chance": 1.0 / n}


def curve(scorer: Scorer, convs, lengths: tuple[int, ...]) -> dict[str, Any]:
    """NLL of fixed target tokens given exactly c tokens of context, for each usable c."""
    longest = max(c.ids.size for c in convs)
    usable = sorted(c for c in set(lengths) if c < longest)
    empty = {"context_lengths": [], "num_targets": 0, "fingerprint": "", "mean_nll": [],
             "nll": []}
    if not usable:
        return empty
    targets = context_curve.select_targets([c.ids.size for c in convs], usable[-1],
                                           CONTEXT_TARGETS, SEED)
    if not targets:
        return empty
    rows = []
    for c in usable:
        streams = [convs[i].ids[p - c : p] for i, p in targets]
        reqs = [Request(k, c, (convs[i].ids[p : p + 1],)) for k, (i, p) in enumerate(targets)]
        _, scored = scorer.stream_logprobs(streams, reqs, with_stream=False)
        rows.append([-float(s.logprobs[0][0]) for s in scored])
    fp = context_curve.fingerprint([(convs[i].conv_id, p, int(convs[i].ids[p]))
                                    for i, p in targets])
    return {"context_lengths": usable, "num_targets": len(targets), "fingerprint": fp,
            "mean_nll": [float(np.mean(r)) for r in rows], "nll": rows}


def _summary(workdir: Path) -> dict[str, Any]:
    path = workdir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSON and UTF-8
        summary = exc
    if not isinstance(summary, dict):
        logging.getLogger(__name__).warning(
            f"{path}: unreadable ({str(summary)[:120]}); train_tokens is left out of eval.json")
        return {}
    return summary


def evaluate(run, dataset: str | None = None, split: str = "validation",
             with_speed: bool = True, source: str | None = None) -> dict[str, Any]:
    """Run the whole suite on `run` (longctx.rundir.Run); return eval.json's dict."""
    from longctx.models import count_params

    start = time.perf_counter()
    cfg: Config = run.cfg
    ev, m = cfg.eval, cfg.model
    n = ev.num_candidates
    corpus = load_corpus(run, dataset, split, ev.max_conversations, source)
    name, convs, value_tokens = corpus.name, corpus.convs, corpus.value_tokens
    rng = np.random.default_rng(SEED)
    scorer = Scorer(m, run.params, ev.vanilla_stride)

    recall_items, skipped = probes.recall_items(convs, value_tokens, n, rng)
    hit_items = probes.hits_items(convs, n, rng)
    requests = [it.request for it in recall_items] + hit_items
    lps, scored = scorer.stream_logprobs([c.ids for c in convs], requests)
    pairs = shuffle.shuffle_pairs(convs, ev.shuffle_window_turns, rng)
    pair_lps, _ = scorer.stream_logprobs([w for pair in pairs for w in pair])
    summary = _summary(Path(run.workdir))
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "workdir": str(run.workdir), "name": cfg.name, "arch": m.arch, "step": run.step,
            "span": archs.span(m), "num_params": count_params(run.params),
            "train_tokens": summary.get("train_tokens"),
            "init_from": summary.get("init_from"),  # the run it started from, or None
            "flops_per_token": {"train": flops_per_token(m, True),
                                "eval": flops_per_token(m, False)},
        },
        "dataset": {"name": name, "split": split, "source": corpus.source,
                    "conversations": len(convs),
                    "tokens": int(sum(c.ids.size for c in convs)),
                    "probes": int(sum(len(c.probes) for c in convs))},
        "settings": {"num_candidates": n, "vanilla_stride": ev.vanilla_stride,
                     "streaming": speed.describe(m, ev.vanilla_stride),
                     "shuffle_window_turns": ev.shuffle_window_turns,
                     "hits_max_tokens": probes.HITS_MAX_TOKENS,
                     "context_lengths": list(ev.context_lengths), "seed": SEED},
        "perplexity": perplexity(convs, lps),
        "recurrence": recurrence_nll(convs, lps, archs.span(m), WordTable(corpus.tokenizer)),
        "recall": recall(recall_items, scored[: len(recall_items)], skipped, archs.span(m), n),
        "shuffle": metrics.shuffle_accuracy([float(lp.sum()) for lp in pair_lps[0::2]],
                                            [float(lp.sum()) for lp in pair_lps[1::2]]),
        "hits_at_1": hits(scored[len(recall_items) :], n),
        "context_curve": curve(scorer, convs, ev.context_lengths),
    }
    if with_speed:
        out["speed"] = speed.measure(m, run.params, ev.vanilla_stride,
                                     [c.ids for c in convs], ev.speed_tokens)
    out["seconds"] = time.perf_counter() - start
    return out


def write(result: dict[str, Any], where: str | Path) -> Path:
    """Write eval.json (into `where` if it is a directory, else to that file) atomically
    (a temporary file renamed into place)."""
    path = Path(where) / "eval.json" if Path(where).is_dir() else Path(where)
    if not path.parent.is_dir():
        raise UserError(f"--out '{path}': folder {path.parent} does not exist")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    return path
