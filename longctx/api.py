"""longctx from Python (notebooks, scripts): the calls the commands are made of, by name.

    import longctx.api as lc

    lc.configure_logging()                            # progress lines; library notes hidden
    run = lc.load_run("runs/smoke")                   # config, tokenizer, parameters
    conv = lc.validation_conversations(run, 1)[0]     # or lc.conversation(["hi", "hello"])
    score = lc.score_conversation(run, conv)          # per-turn NLL, recall probes
    chat = lc.chat(run, temperature=0)                # the run's memory across turns
    lc.stream_reply(chat, "hello", on_text=print)     # pieces as they are sampled
    table = lc.read_results(["runs/a", "runs/b"])     # eval.json files -> rows (or pandas)
    curves = lc.read_metrics("runs/a")                # metrics.jsonl: training + validation

Everything here calls the same code as the `longctx` commands (`longctx.rundir`,
`longctx.eval`, `longctx.generate`, `longctx.train`), so numbers agree with theirs.
Documented with an example in docs/api.md; examples/quickstart.py runs it end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longctx.config import Config, load_experiment, parse_overrides
from longctx.errors import UserError
from longctx.log import configure as configure_logging
from longctx.rundir import Run, load_run

__all__ = ["ConversationScore", "Run", "chat", "configure_logging", "conversation",
           "evaluate", "load_config", "load_run", "read_metrics", "read_results",
           "score_conversation", "stream_reply", "train", "validation_conversations"]


# ----------------------------------------------------------------------------- runs


def load_config(experiment: str | Path, *overrides: str) -> Config:
    """An experiment file's config with `section.key=value` overrides (as the CLI takes)."""
    return parse_overrides(load_experiment(experiment), list(overrides))


def train(cfg: Config, workdir: str | Path) -> dict:
    """Train (or resume) `cfg` in `workdir`; returns summary.json's dict."""
    from longctx.train.loop import train as train_run

    return train_run(cfg, workdir)


def evaluate(run: Run, write: bool = True, with_speed: bool = False, **kwargs: Any) -> dict:
    """The coherence suite on `run` (eval.json's dict); written to RUN/eval.json when
    `write`, holding the run's lock as `longctx evaluate` does (one writer per run).
    kwargs: dataset, split, source, as `longctx evaluate` takes them."""
    from longctx.eval import evaluate as suite
    from longctx.rundir.lock import RunLock

    if not write:
        return suite.evaluate(run, with_speed=with_speed, **kwargs)
    with RunLock(run.workdir, "evaluate", create=False):
        result = suite.evaluate(run, with_speed=with_speed, **kwargs)
        suite.write(result, Path(run.workdir) / "eval.json")
    return result


# ----------------------------------------------------------------------------- conversations


def validation_conversations(run: Run, limit: int = 0) -> list:
    """The first `limit` (0: all) validation conversations of the run's own dataset, token
    streams with turn spans and, on the synthetic dataset, planted probes."""
    from longctx.eval.corpus import load_corpus

    return load_corpus(run, split="validation", max_conversations=limit).convs


def conversation(turns: Sequence[str | tuple[int, str]], conv_id: str = "conversation",
                 session_headers: Sequence[str] = ("",)) -> Any:
    """A text conversation: each turn a string (speakers alternate 0, 1, 0, ...) or a
    (speaker, text) pair; one session unless turns give (speaker, text, session)."""
    from longctx.data.conversation import Conversation, Turn

    out = []
    for k, t in enumerate(turns):
        if isinstance(t, str):
            out.append(Turn(k % 2, 0, t))
        else:
            speaker, text, *session = t
            out.append(Turn(int(speaker), int(session[0]) if session else 0, str(text)))
    if not out:
        raise UserError("conversation: give at least one turn")
    sessions = max(t.session for t in out) + 1
    headers = list(session_headers) + [""] * (sessions - len(session_headers))
    return Conversation(conv_id, out, headers[:sessions])


@dataclass
class ConversationScore:
    """Per-turn NLL and recall probes of one conversation, in the model's streaming mode."""

    turns: list[dict[str, Any]]  # turn, speaker, session, tokens, nll, ppl
    probes: list[dict[str, Any]] = field(default_factory=list)  # slot, distance, bucket, ...
    token_logprobs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ids[1:]

    @property
    def nll(self) -> float:
        """Mean NLL over every turn token."""
        n = sum(t["tokens"] for t in self.turns)
        return sum(t["nll"] * t["tokens"] for t in self.turns) / max(n, 1)


def score_conversation(run: Run, conv: Any) -> ConversationScore:
    """Score a conversation (text `conversation(...)` or a tokenized one from
    `validation_conversations`) with `run`: each turn's NLL given everything before it, and
    each planted probe's forced-choice recall (items drawn as the evaluation suite draws
    them, with its seed, from this conversation alone)."""
    from longctx.data.buckets import distance_bucket
    from longctx.data.render import TokenizedConversation, render
    from longctx.eval import metrics, probes
    from longctx.eval.evaluate import SEED
    from longctx.eval.scoring import Scorer
    from longctx.models import archs

    if not isinstance(conv, TokenizedConversation):
        if run.tokenizer is None:
            raise UserError(f"{run.workdir}: no tokenizer/ folder; score a tokenized "
                            "conversation (validation_conversations) instead")
        conv = render(conv, run.tokenizer)
    items: list = []
    if conv.probes:
        values = _value_encoder(run)
        items, _ = probes.recall_items([conv], values, run.cfg.eval.num_candidates,
                                       np.random.default_rng(SEED))
    scorer = Scorer(run.cfg.model, run.params, run.cfg.eval.vanilla_stride)
    (lp,), scored = scorer.stream_logprobs([conv.ids], [it.request for it in items])
    turns = []
    for t in conv.turns:
        got = lp[t.start - 1 : t.end - 1]  # lp[k] scores ids[k + 1]
        nll = float(-got.mean()) if got.size else float("nan")
        turns.append({"turn": t.turn_index, "speaker": t.speaker, "session": t.session,
                      "tokens": int(got.size), "nll": nll, "ppl": float(np.exp(nll))})
    out = []
    for it, s in zip(items, scored, strict=True):
        totals = [float(x.sum()) for x in s.logprobs]
        out.append({"slot": it.slot, "distance": int(it.distance),
                    "bucket": distance_bucket(int(it.distance), archs.span(run.cfg.model)),
                    "credit": metrics.forced_choice_credit(totals, 0),
                    "exact": bool(s.greedy[0].all()), "chosen": int(np.argmax(totals))})
    return ConversationScore(turns, out, lp)


def _value_encoder(run: Run) -> Callable[[str], list[np.ndarray]]:
    """Each slot's values as tokens, drawn from as `longctx evaluate` draws distractors."""
    from longctx.eval.corpus import load_corpus

    return load_corpus(run, split="validation", max_conversations=1).value_tokens


# ----------------------------------------------------------------------------- chat


def chat(run: Run, temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
         max_new_tokens: int = 64, seed: int = 0) -> Any:
    """A conversation with `run` whose memory (XL) or KV cache (window) carries across
    turns (`longctx.generate.chat.Chat`: send, plant, new_session, save, load, stats)."""
    from longctx.generate.chat import Chat
    from longctx.generate.sampler import SamplerSettings, check_seed

    settings = SamplerSettings(temperature=temperature, top_k=top_k, top_p=top_p,
                               max_new_tokens=max_new_tokens)
    return Chat(run, settings, seed=check_seed(seed))


def stream_reply(chat_: Any, text: str, on_text: Callable[[str], None] | None = None) -> str:
    """Send a user turn; the reply's text reaches `on_text` piece by piece as it is
    sampled (e.g. `lambda s: print(s, end="", flush=True)`); returns the whole reply."""
    return chat_.send(text, on_text)


# ----------------------------------------------------------------------------- results


def read_results(paths: Sequence[str | Path], dataframe: bool = False) -> Any:
    """One row per eval.json (a run directory or an evaluation file): the run, its seed and
    dataset, and every column of `longctx compare`'s table (per run, not averaged over
    seeds). A list of dicts, or a pandas DataFrame with `dataframe=True`."""
    from longctx.eval.compare import add_recl, columns, dataset_key, load_result

    results = [load_result(p) for p in paths]
    add_recl(results)
    rows = []
    for r in results:
        row: dict[str, Any] = {"workdir": str(r.workdir), "name": r.config.get("name"),
                               "arch": (r.ev.get("run") or {}).get("arch"),
                               "seed": (r.config.get("train") or {}).get("seed"),
                               "dataset": dataset_key(r),
                               "step": (r.ev.get("run") or {}).get("step")}
        for header, getter, _ in columns():
            row[header] = getter(r)[0]
        rows.append(row)
    return _frame(rows) if dataframe else rows


def read_metrics(workdir: str | Path, dataframe: bool = False) -> Any:
    """metrics.jsonl's rows: training steps (`kind` 'train') and validation passes (`kind`
    'validation'); a list of dicts, or a pandas DataFrame with `dataframe=True`."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: missing; train the run first (longctx train)")
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a row cut by a kill mid-write
        if isinstance(row, dict):
            rows.append({"kind": "train", **row})
    return _frame(rows) if dataframe else rows


def _frame(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise UserError("dataframe=True needs pandas (pip install pandas); without it the "
                        "rows come back as a list of dicts") from None
    return pd.DataFrame(rows)
