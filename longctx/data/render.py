"""Render a text `Conversation` to ONE token stream, keeping token offsets of turns,
sessions and probe values; and its flat record form for the TFDS datasets.

Stream layout (every conversation)::

    <|bos|>
    per session:  <|session|> header tokens (none when the header is '')
        per turn: <|spkS|> content tokens <|eot|>
    <|eos|>

Each turn's text is tokenized on its own, so a turn's tokens never depend on its
neighbours. Text is always tokenized as text (`encode_text`): a turn that spells
'<|eot|>' gets byte tokens, never a control token id; control tokens come only from the
layout above. A probe value always follows a space in its turn, so its tokens are exactly
`encode(' ' + value)` wherever it appears (`value_ids`): distractors tokenized the same way
are comparable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longctx.data.conversation import Conversation
from longctx.data.tokenizer import MAX_SPEAKERS, encode_text, encode_texts, special_ids
from longctx.errors import UserError


@dataclass(frozen=True)
class TurnSpan:
    """Token span [start, end) of a turn: its content tokens and its closing <|eot|>.

    ids[start - 1] is the turn's speaker token, ids[end - 1] its <|eot|>; an empty turn has
    end == start + 1. `speaker` is the true speaker index (the token caps at <|spk7|>).
    """

    start: int
    end: int
    speaker: int
    session: int
    turn_index: int


@dataclass(frozen=True)
class ProbeSpan:
    """A probe in token positions (value spans are [start, end) into the stream).

    `distance` = answer_value_span[0] - (fact_value_span[1] - 1): positions from the last
    token of the stated value to the first token of the answer's value. The query that
    predicts the answer's first value token (at answer_value_span[0] - 1) sees the stated
    value within a span of W keys (i-W+1 .. i) exactly when distance <= W.
    """

    slot: str
    speaker: int
    value: str
    fact_turn: int
    answer_turn: int
    fact_value_span: tuple[int, int]
    answer_value_span: tuple[int, int]
    distance: int


@dataclass(frozen=True)
class TokenizedConversation:
    """A conversation as one int32 token stream (layout in this module's docstring).

    `sessions[k]` = [start, end) token span of session k, from its <|session|> token to
    the end of its last turn. Training pairs are inputs ids[:-1] and targets ids[1:], so
    the last target is <|eos|> and no target reaches into another conversation.
    """

    conv_id: str
    ids: np.ndarray
    turns: list[TurnSpan]
    probes: list[ProbeSpan]
    sessions: list[tuple[int, int]] = field(default_factory=list)


def value_ids(tokenizer, value: str) -> np.ndarray:
    """The tokens of a slot value as it appears inside a turn (after a space)."""
    return np.asarray(encode_text(tokenizer, " " + value).ids, np.int32)


def _value_span(conv: Conversation, enc, base: int, chars: tuple[int, int], value: str,
                tokenizer) -> tuple[int, int]:
    """Token span of the value at `chars` in a turn encoded as `enc` starting at `base`."""
    start, end = chars
    first = [i for i, (a, _) in enumerate(enc.offsets) if a == start - 1]
    last = [i for i, (_, b) in enumerate(enc.offsets) if b == end]
    want = value_ids(tokenizer, value).tolist()
    if first and last and enc.ids[first[0]:last[-1] + 1] == want:
        return base + first[0], base + last[-1] + 1
    raise UserError(f"conversation '{conv.conv_id}': value {value!r} does not tokenize "
                    f"on its own at characters {start}:{end}")


def render(conv: Conversation, tokenizer) -> TokenizedConversation:
    """Tokenize `conv` into one stream; raise UserError if a probe value cannot be located."""
    sp = special_ids(tokenizer)
    texts = encode_texts(tokenizer, [t.text for t in conv.turns])
    headers = [encode_text(tokenizer, h).ids if h else [] for h in conv.session_headers]
    ids: list[int] = [sp["bos"]]
    turns: list[TurnSpan] = []
    sessions: list[tuple[int, int]] = []
    for index, (turn, enc) in enumerate(zip(conv.turns, texts, strict=True)):
        if index == 0 or turn.session != conv.turns[index - 1].session:
            if sessions:
                sessions[-1] = (sessions[-1][0], len(ids))
            sessions.append((len(ids), -1))
            ids.append(sp["session"])
            ids.extend(headers[turn.session])
        ids.append(sp[f"spk{min(turn.speaker, MAX_SPEAKERS - 1)}"])
        start = len(ids)
        ids.extend(enc.ids)
        ids.append(sp["eot"])
        turns.append(TurnSpan(start, len(ids), turn.speaker, turn.session, index))
    sessions[-1] = (sessions[-1][0], len(ids))
    ids.append(sp["eos"])
    probes = []
    for p in conv.probes:
        fact = _value_span(conv, texts[p.fact_turn], turns[p.fact_turn].start, p.fact_chars,
                           p.value, tokenizer)
        answer = _value_span(conv, texts[p.answer_turn], turns[p.answer_turn].start,
                             p.answer_chars, p.value, tokenizer)
        probes.append(ProbeSpan(p.slot, p.speaker, p.value, p.fact_turn, p.answer_turn,
                                fact, answer, answer[0] - (fact[1] - 1)))
    return TokenizedConversation(conv.conv_id, np.asarray(ids, np.int32), turns, probes,
                                 sessions)


# ----------------------------------------------------------------------------- records


def to_record(conv: Conversation, tc: TokenizedConversation) -> dict[str, Any]:
    """The flat record stored in the TFDS dataset (numbers as arrays, text as JSON)."""
    turns = np.asarray([[t.start, t.end, t.speaker, t.session, t.turn_index] for t in tc.turns],
                       np.int32).reshape(-1, 5)
    probes = np.asarray([[p.speaker, p.fact_turn, p.answer_turn, *p.fact_value_span,
                          *p.answer_value_span] for p in tc.probes], np.int32).reshape(-1, 7)
    return {
        "conv_id": conv.conv_id,
        "ids": tc.ids,
        "turns": turns,
        "sessions": np.asarray(tc.sessions, np.int32).reshape(-1, 2),
        "probes": probes,
        "text": json.dumps(conv.to_json(), ensure_ascii=False, sort_keys=True),
    }


def _str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def from_record(rec: dict[str, Any]) -> TokenizedConversation:
    """Inverse of `to_record` (token-level view; the text is in `record_text(rec)`)."""
    text = record_text(rec)
    turns = [TurnSpan(*map(int, row)) for row in rec["turns"]]
    probes = []
    for row, p in zip(rec["probes"], text.probes, strict=True):
        speaker, fact_turn, answer_turn, fs, fe, as_, ae = map(int, row)
        probes.append(ProbeSpan(p.slot, speaker, p.value, fact_turn, answer_turn,
                                (fs, fe), (as_, ae), as_ - (fe - 1)))
    sessions = [(int(a), int(b)) for a, b in rec["sessions"]]
    return TokenizedConversation(_str(rec["conv_id"]), np.asarray(rec["ids"], np.int32),
                                 turns, probes, sessions)


def record_text(rec: dict[str, Any]) -> Conversation:
    """The text-level conversation stored in a record."""
    return Conversation.from_json(json.loads(_str(rec["text"])))
