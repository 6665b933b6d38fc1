"""Recurrence NLL: a memory metric for text nobody annotated.

Names, places and topics come back in a long conversation. For every content word of a
turn we find where the same word (case-folded) last occurred in the conversation and
report the model's NLL of the word by how far back that was, relative to the span W:
never seen before ('new'), inside W, 1-2x, 2-4x, >4x W. A model that can reach the
earlier mention (memory, or a context long enough) can copy it; one that cannot must
guess it like a new word. So memory that works shows as a lower NLL beyond W than a
window model of the same W, while 'new' words control for plain language modelling.

The unit is a WORD, not a token: a word is a run of letter tokens (byte-level BPE: a
token that starts with a letter or a space + letter, continued by tokens of letters only
with no space), case-folded. A content word has at least MIN_LETTERS letters and is not
a STOPWORD (function words, pronouns, auxiliaries, chat fillers): those recur everywhere
and would drown the signal in grammar. A word's NLL is the sum over its tokens (nats per
word), so every token of a name counts, first token (bringing it up) and the rest
(spelling it out, where copying helps most). The distance is the number of tokens from
the last token of the previous occurrence to the first token of this one, the convention
of the probes' distances (`render.ProbeSpan`): the query predicting the word's first token
sees the previous occurrence within W keys exactly when distance <= W.

Only turn content counts (speaker tokens, session headers and end-of-turn tokens are
neither occurrences nor scored). Everything is computed from the per-token NLLs the
evaluation already has: no forward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from longctx.data.buckets import BUCKET_NAMES, distance_bucket

NEW = "new"  # the word has not occurred before in the conversation
RECURRENCE_BUCKETS = (NEW, *BUCKET_NAMES)
MIN_LETTERS = 3

STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been
before being below between both but by can cannot could couldn did didn do does doesn
doing don down during each even ever few for from further get gets getting got had hadn
has hasn have haven having he her here hers herself him himself his how however if in
into is isn it its itself just let like ll me more most much must mustn my myself no nor
not now of off on once one only or other ought our ours ourselves out over own really
same say said shan she should shouldn so some such than that the their theirs them
themselves then there these they this those through to too under until up upon us very
was wasn we were weren what when where which while who whom why will with won would
wouldn yes yet you your yours yourself yourselves ve re oh ok okay yeah yep um uh hmm
mm well maybe think know going thing things lot lots sure right good great nice thanks
thank hey hi hello wow actually pretty quite something anything nothing everything
thats dont cant didnt doesnt isnt wasnt ive youre theyre
""".split())


class WordTable:
    """Per vocabulary id: whether a token can start a word, continue one, and its letters."""

    def __init__(self, tokenizer):
        vocab = len(tokenizer)
        strings = tokenizer.convert_ids_to_tokens(list(range(vocab)))
        decoder = tokenizer.backend_tokenizer.decoder
        specials = set(tokenizer.all_special_ids)
        self.starts = np.zeros(vocab, bool)  # ' abc' or 'abc'
        self.continues = np.zeros(vocab, bool)  # 'abc' (no space)
        self.ends_letter = np.zeros(vocab, bool)
        self.letters: list[str] = [""] * vocab
        for i, s in enumerate(strings):
            if i in specials or s is None:
                continue
            text = decoder.decode([s]) if decoder is not None else s
            body = text[1:] if text.startswith(" ") else text
            if body and body.isalpha():
                self.starts[i] = True
                self.continues[i] = not text.startswith(" ")
                self.letters[i] = body.lower()
            self.ends_letter[i] = bool(text) and text[-1].isalpha()

    def words(self, ids: np.ndarray, start: int, end: int) -> list[tuple[int, int, str]]:
        """(first, last, word) token positions of the words in ids[start:end]."""
        out: list[tuple[int, int, str]] = []
        p = start
        while p < end:
            t = int(ids[p])
            prev_letter = p > start and self.ends_letter[int(ids[p - 1])]
            if self.starts[t] and not (self.continues[t] and prev_letter):
                q, parts = p + 1, [self.letters[t]]
                while q < end and self.continues[int(ids[q])]:
                    parts.append(self.letters[int(ids[q])])
                    q += 1
                out.append((p, q - 1, "".join(parts)))
                p = q
            else:
                p += 1
        return out


def is_content(word: str) -> bool:
    """A word that may name something: long enough and not a function word."""
    return len(word) >= MIN_LETTERS and word not in STOPWORDS


def occurrences(conv, table: WordTable) -> list[tuple[int, int, int | None, int]]:
    """(first, last, distance or None when new, session) of every content word of `conv`'s
    turns, in stream order."""
    last_seen: dict[str, int] = {}
    out = []
    for turn in conv.turns:
        for first, last, word in table.words(conv.ids, turn.start, turn.end - 1):
            if not is_content(word):
                continue
            prev = last_seen.get(word)
            out.append((first, last, None if prev is None else first - prev, turn.session))
            last_seen[word] = last
    return out


def _summarise(nlls: list[float], tokens: list[int]) -> dict[str, Any]:
    if not nlls:
        return {"nll": None, "nll_per_token": None, "count": 0, "tokens": 0}
    return {"nll": float(np.mean(nlls)), "nll_per_token": float(np.sum(nlls) / np.sum(tokens)),
            "count": len(nlls), "tokens": int(np.sum(tokens))}


def recurrence_nll(convs: Sequence, lps: Sequence[np.ndarray], span: int,
                   table: WordTable) -> dict[str, Any]:
    """Mean NLL of content words by distance bucket, overall and per session, from the
    per-token log-probabilities `lps[i][t] = log p(ids[t+1] | ...)` of each conversation."""
    cells: dict[tuple[int | None, str], tuple[list[float], list[int]]] = {}
    for conv, lp in zip(convs, lps, strict=True):
        for first, last, dist, session in occurrences(conv, table):
            nll = -float(np.sum(lp[first - 1 : last]))
            bucket = NEW if dist is None else distance_bucket(dist, span)
            for key in ((None, bucket), (session, bucket)):
                n, t = cells.setdefault(key, ([], []))
                n.append(nll)
                t.append(last - first + 1)

    def buckets(session: int | None) -> dict[str, Any]:
        return {b: _summarise(*cells.get((session, b), ([], []))) for b in RECURRENCE_BUCKETS}

    sessions = sorted({s for s, _ in cells if s is not None})
    return {"unit": "word", "min_letters": MIN_LETTERS, "span": span,
            "buckets": buckets(None),
            "by_session": {str(s): buckets(s) for s in sessions}}
