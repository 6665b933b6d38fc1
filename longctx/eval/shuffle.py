"""Shuffle discrimination items: a dialogue window in true order and with its turns'
contents permuted among turns of the same speaker.

A window is `turns_per_window` consecutive turns; both versions start at the first turn's
speaker token (given as context) and keep every speaker token, session header and
end-of-turn position pattern, so only the order of what was said differs. The true order
should be more likely (chance 50%).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WINDOWS_PER_CONVERSATION = 4


def permute_within_speaker(speakers: Sequence[int], rng: np.random.Generator) -> list[int]:
    """A permutation of turn positions that maps each turn to one of the same speaker."""
    perm = list(range(len(speakers)))
    for spk in sorted(set(speakers)):
        idx = [i for i, s in enumerate(speakers) if s == spk]
        for src, dst in zip(idx, rng.permutation(idx), strict=True):
            perm[src] = int(dst)
    return perm


def shuffled_window(ids: np.ndarray, turns: Sequence, perm: Sequence[int]) -> np.ndarray:
    """Tokens from the first turn's speaker token to the last turn's end, with turn k's
    span [start, end) filled by the span of turn perm[k]."""
    out = [ids[turns[0].start - 1 : turns[0].start]]
    for k, turn in enumerate(turns):
        src = turns[perm[k]]
        out.append(ids[src.start : src.end])
        nxt = turns[k + 1].start if k + 1 < len(turns) else turn.end
        out.append(ids[turn.end : nxt])  # speaker token / session header between turns
    return np.concatenate(out).astype(np.int32)


def shuffle_pairs(convs: Sequence, turns_per_window: int, rng: np.random.Generator,
                  per_conversation: int = WINDOWS_PER_CONVERSATION
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(true window, shuffled window) pairs: non-overlapping windows per conversation whose
    shuffle actually changes the tokens (windows where it cannot are left out)."""
    pairs = []
    for conv in convs:
        n = len(conv.turns) // turns_per_window
        if n == 0:
            continue
        starts = sorted(rng.choice(n, size=min(per_conversation, n), replace=False))
        for w in starts:
            turns = conv.turns[w * turns_per_window : (w + 1) * turns_per_window]
            true = shuffled_window(conv.ids, turns, list(range(len(turns))))
            for _ in range(10):  # retry permutations that leave the tokens unchanged
                perm = permute_within_speaker([t.speaker for t in turns], rng)
                fake = shuffled_window(conv.ids, turns, perm)
                if not np.array_equal(fake, true):
                    pairs.append((true, fake))
                    break
    return pairs
