"""Forced-choice items: fact-recall probes and next-utterance (hits@1) candidates.

Each item is a `Request` (continuations of one conversation at one position, the true one
first) plus what the metric needs to know about it. Every random choice comes from the
generator passed in, so the same dataset and seed give the same items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from longctx.eval.scoring import Request

HITS_PER_CONVERSATION = 4  # next-utterance items per conversation
HITS_MAX_TOKENS = 48  # candidate turns are cut to this many tokens (true and distractors)


@dataclass(frozen=True)
class RecallItem:
    request: Request
    distance: int
    slot: str


def recall_items(convs: Sequence, value_tokens: Callable[[str], Sequence[np.ndarray]],
                 num_candidates: int, rng: np.random.Generator) -> tuple[list[RecallItem], int]:
    """One item per probe: the true value and N-1 other values of its slot with the same
    number of tokens (`value_tokens(slot)` lists every value's tokens). Returns the items
    and how many probes were skipped for lack of such distractors."""
    items, skipped = [], 0
    for i, conv in enumerate(convs):
        for p in conv.probes:
            a, b = p.answer_value_span
            true = np.asarray(conv.ids[a:b], np.int32)
            pool = [v for v in value_tokens(p.slot)
                    if v.size == true.size and not np.array_equal(v, true)]
            unique = list({v.tobytes(): v for v in pool}.values())
            if len(unique) < num_candidates - 1:
                skipped += 1
                continue
            pick = rng.choice(len(unique), size=num_candidates - 1, replace=False)
            cands = (true, *(unique[k] for k in sorted(pick)))
            items.append(RecallItem(Request(i, a, cands), p.distance, p.slot))
    return items, skipped


def turn_content(conv, turn, max_tokens: int = HITS_MAX_TOKENS) -> np.ndarray:
    """A turn's content tokens and its end-of-turn token, cut to max_tokens."""
    return np.asarray(conv.ids[turn.start : turn.end][:max_tokens], np.int32)


def hits_items(convs: Sequence, num_candidates: int, rng: np.random.Generator,
               per_conversation: int = HITS_PER_CONVERSATION) -> list[Request]:
    """Next-utterance items: at a turn (not the first) of each conversation, its true
    content against N-1 turns drawn from other conversations (true first)."""
    if len(convs) < 2:
        return []
    items = []
    for i, conv in enumerate(convs):
        later = [t for t in conv.turns if t.turn_index >= 1]
        if not later:
            continue
        chosen = rng.choice(len(later), size=min(per_conversation, len(later)), replace=False)
        for k in sorted(chosen):
            turn = later[k]
            true = turn_content(conv, turn)
            others: list[np.ndarray] = []
            for _ in range(100 * num_candidates):
                if len(others) == num_candidates - 1:
                    break
                j = int(rng.integers(len(convs) - 1))
                j = j + 1 if j >= i else j
                other = convs[j]
                cand = turn_content(other, other.turns[int(rng.integers(len(other.turns)))])
                if not np.array_equal(cand, true):
                    others.append(cand)
            if len(others) == num_candidates - 1:
                items.append(Request(i, turn.start, (true, *others)))
    return items
