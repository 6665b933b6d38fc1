"""A conversation as text (before tokenization), shared by every source, and its checks.

Synthetic dialogues and real corpora are first turned into `Conversation`s; rendering to
one token stream happens once the dataset's tokenizer exists (`render.py`). Probes point
at character offsets inside turn texts so they survive any tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import pairwise

from longctx.errors import UserError


@dataclass(frozen=True)
class Turn:
    """One utterance: who spoke (0-based index), in which session (0-based), what was said."""

    speaker: int
    session: int
    text: str


@dataclass(frozen=True)
class Probe:
    """A fact stated in turn `fact_turn` and recalled in the answer turn `answer_turn`.

    `fact_chars` / `answer_chars` are (start, end) character offsets of `value` inside
    those turns' texts (end exclusive). `speaker` owns the fact (and answers).
    """

    slot: str
    speaker: int
    value: str
    fact_turn: int
    answer_turn: int
    fact_chars: tuple[int, int]
    answer_chars: tuple[int, int]


@dataclass(frozen=True)
class Conversation:
    """Turns in order, one header per session ('' for none: e.g. '3 days later'), probes."""

    conv_id: str
    turns: list[Turn]
    session_headers: list[str]
    probes: list[Probe] = field(default_factory=list)

    def to_json(self) -> dict:
        """Plain JSON types (faster than dataclasses.asdict on thousands of turns)."""
        return {
            "conv_id": self.conv_id,
            "turns": [{"speaker": t.speaker, "session": t.session, "text": t.text}
                      for t in self.turns],
            "session_headers": list(self.session_headers),
            "probes": [asdict(p) for p in self.probes],
        }

    @classmethod
    def from_json(cls, raw: dict) -> Conversation:
        probes = [Probe(**{**p, "fact_chars": tuple(p["fact_chars"]),
                           "answer_chars": tuple(p["answer_chars"])}) for p in raw["probes"]]
        return cls(raw["conv_id"], [Turn(**t) for t in raw["turns"]],
                   list(raw["session_headers"]), probes)


_WORD_CHAR = re.compile(r"\w")


def _check_value_at(conv: Conversation, probe: Probe, turn: int, chars: tuple[int, int],
                    what: str) -> None:
    where = f"conversation '{conv.conv_id}', probe {probe.slot!r} of speaker {probe.speaker}"
    if not 0 <= turn < len(conv.turns):
        raise UserError(f"{where}: {what} turn {turn} is not a turn of the conversation")
    text = conv.turns[turn].text
    start, end = chars
    if text[start:end] != probe.value:
        raise UserError(f"{where}: value {probe.value!r} is not in the {what} turn {turn} "
                        f"at characters {start}:{end} (found {text[start:end]!r})")
    # The value must be its own word(s) after a space, so its tokens do not depend on context.
    if start == 0 or text[start - 1] != " " or (end < len(text) and _WORD_CHAR.match(text[end])):
        raise UserError(f"{where}: value {probe.value!r} in the {what} turn {turn} must follow "
                        "a space and end at a word boundary")


def validate(conv: Conversation) -> Conversation:
    """Raise UserError naming the conversation and the problem; return it unchanged otherwise."""
    if not conv.turns:
        raise UserError(f"conversation '{conv.conv_id}': has no turns")
    sessions = [t.session for t in conv.turns]
    if sessions[0] != 0 or any(b - a not in (0, 1) for a, b in pairwise(sessions)):
        raise UserError(f"conversation '{conv.conv_id}': sessions must count up from 0 in order")
    if len(conv.session_headers) != sessions[-1] + 1:
        raise UserError(f"conversation '{conv.conv_id}': {len(conv.session_headers)} session "
                        f"headers for {sessions[-1] + 1} sessions")
    for probe in conv.probes:
        _check_value_at(conv, probe, probe.fact_turn, probe.fact_chars, "fact")
        _check_value_at(conv, probe, probe.answer_turn, probe.answer_chars, "answer")
        if probe.answer_turn <= probe.fact_turn:
            raise UserError(f"conversation '{conv.conv_id}': probe {probe.slot!r} is answered "
                            f"(turn {probe.answer_turn}) before its fact (turn {probe.fact_turn})")
    return conv
