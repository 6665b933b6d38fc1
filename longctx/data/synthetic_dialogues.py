"""The synthetic long-dialogue benchmark: two speakers over several sessions,
each with a persona of facts in the same slots; every fact is stated once and later asked
back by the OTHER speaker, at a planned distance.

Distances are planned in estimated tokens (characters / chars_per_token: a first guess,
then the ratio the dataset's tokenizer really has, see `builders/synthetic.py`); the exact
distance is measured on the token stream when the dataset is built (`render.py`).
A probe's target distance picks one of the four buckets of the span W (`buckets.py`)
uniformly (inside W, 1-2x, 2-4x, 4-12x) and is log-uniform inside it, so each bucket gets
roughly a quarter of the probes (16 a conversation). The filler between a fact and its question sets the
distance; the shortest reachable one is about 20 tokens (the rest of the statement, an
acknowledgement, the question), so "inside W" starts near W/3 at W = 64. `longctx data
stats` prints the histogram; >= 16 validation conversations give >= 50 probes in every
bucket (sizes and histograms in this package's README.md).

Everything is a pure function of (seed, split, conversation index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from longctx.data import filler
from longctx.data.buckets import bucket_ranges
from longctx.data.conversation import Conversation, Probe, Turn, validate
from longctx.data.slots import SLOTS, TRAIN_TEMPLATES, Slot

CHARS_PER_TOKEN = 3.3  # first planning estimate (the builder then measures its tokenizer's)
PLAN_RANGES = bucket_ranges(0.25, 12.0)  # target distances per bucket, in units of W
ASK_TOKENS = 22  # a question turn and the answer's lead-in, in tokens
HALF_EXCHANGE = 15  # about half an exchange of chat, in tokens
P_STATE = 0.5  # chance to state a new fact (rather than chat) while no answer is due
P_FOLLOW_UP = 0.6  # chance that chat continues its thread (or, if not, its topic)
SPLIT_CODES = {"train": 0, "validation": 1}
NUM_CANDIDATES = 8  # forced choice among 8: every value has >= 7 others of its token length


@dataclass
class _Fact:
    slot: Slot
    speaker: int
    value: str
    target: float  # planned distance in estimated tokens
    turn: int = -1
    chars: tuple[int, int] = (0, 0)
    value_end: float = 0.0  # estimated stream position just after the stated value


def _with_value(template: str, value: str) -> tuple[str, tuple[int, int]]:
    prefix, suffix = template.split("{v}")
    return prefix + value + suffix, (len(prefix), len(prefix) + len(value))


def sample_target(rng: np.random.Generator, span: int, near: float = 0.0,
                  near_max: float = 1.0) -> float:
    """A planned distance: a uniform bucket of W, log-uniform inside it; with probability
    `near`, log-uniform in [PLAN_RANGES[0][0], near_max] W instead."""
    inside = near > 0 and rng.random() < near  # no extra draw at 0: same conversations
    lo, hi = PLAN_RANGES[0 if inside else rng.integers(len(PLAN_RANGES))]
    hi = near_max if inside else hi
    return span * math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _contains(a: str, b: str) -> bool:
    return f" {a} " in f" {b} " or f" {b} " in f" {a} "


def _two_values(slot: Slot, pool: set[str] | None, rng: np.random.Generator
                ) -> tuple[str, str]:
    """Values of the two speakers: the first two of a seeded order of all the slot's values
    that are in `pool` (a value left out of the pool changes only the facts that drew it),
    where neither contains the other ('Biscuit', 'Sir Biscuit'), so each value is
    mentioned exactly twice in a conversation."""
    order = (slot.values[i] for i in rng.permutation(len(slot.values)))
    first = next(v for v in order if pool is None or v in pool)
    second = next(v for v in order if (pool is None or v in pool) and not _contains(first, v))
    return first, second


class _Dialogue:
    """Writes one conversation turn by turn, tracking the estimated stream position."""

    def __init__(self, span: int, chars_per_token: float, n_templates: int,
                 rng: np.random.Generator, echo: float = 0.0, ack: float = 0.0) -> None:
        self.span, self.cpt, self.n_templates, self.rng = span, chars_per_token, n_templates, rng
        self.echo, self.ack = echo, ack
        self.turns: list[Turn] = []
        self.headers: list[str] = []
        self.probes: list[Probe] = []
        self.pos = 1.0  # after <|bos|>
        self.session_start, self.session_len = 0.0, 0.0
        self.topic, self.thread, self.step, self.first = filler.TOPIC_NAMES[0], 0, 0, 0
        self.chatting = False  # the last exchange was chat (a follow-up may continue it)

    def say(self, speaker: int, text: str) -> int:
        self.turns.append(Turn(speaker, len(self.headers) - 1, text))
        self.pos += len(text) / self.cpt + 2  # + speaker and end-of-turn tokens
        return len(self.turns) - 1

    def new_session(self) -> None:
        """A session header (a gap in time) and a greeting exchange."""
        first = not self.headers
        header = "" if first else filler.session_header(self.rng)
        self.headers.append(header)
        self.pos += 1 + len(header) / self.cpt
        self.session_start = self.pos
        self.session_len = self.span * self.rng.uniform(3, 6)
        opener = 0 if first else int(self.rng.integers(2))
        for k, text in enumerate(filler.greeting(first, self.rng)):
            self.say(opener ^ k, text)
        self.chatting = False

    def state(self, fact: _Fact) -> None:
        """The owner states the fact; the other speaker acknowledges it (with probability
        `ack`, saying the value back)."""
        template = fact.slot.statements[self.rng.integers(self.n_templates)]
        text, fact.chars = _with_value(template, fact.value)
        before = self.pos
        fact.turn = self.say(fact.speaker, text)
        fact.value_end = before + 1 + fact.chars[1] / self.cpt
        if self.ack > 0 and self.rng.random() < self.ack:  # no extra draw at 0
            self.say(1 - fact.speaker, filler.value_acknowledgement(fact.value, self.rng))
        else:
            self.say(1 - fact.speaker, filler.acknowledgement(self.rng))
        self.chatting = False

    def ask(self, fact: _Fact) -> None:
        """The other speaker asks about the fact; the owner's answer states the value (with
        probability `echo`, in the very words of the statement)."""
        slot = fact.slot
        self.say(1 - fact.speaker, slot.questions[self.rng.integers(len(slot.questions))])
        text, chars = _with_value(slot.answers[self.rng.integers(len(slot.answers))],
                                  fact.value)
        if self.echo > 0 and self.rng.random() < self.echo:
            text, chars = self.turns[fact.turn].text, fact.chars
        turn = self.say(fact.speaker, text)
        self.probes.append(Probe(slot.name, fact.speaker, fact.value, fact.turn, turn,
                                 fact.chars, chars))
        self.chatting = False

    def chat(self) -> None:
        """A question-and-answer exchange: the next step of the current thread, another
        thread of the topic, or a new topic."""
        rng, threads = self.rng, filler.TOPICS[self.topic]
        if (self.chatting and self.step + 1 < len(threads[self.thread])
                and rng.random() < P_FOLLOW_UP):
            self.step += 1
        else:
            if self.chatting and rng.random() < P_FOLLOW_UP:
                self.thread = (self.thread + 1 + int(rng.integers(len(threads) - 1))) % len(
                    threads)
            else:
                names = [t for t in filler.TOPIC_NAMES if t != self.topic]
                self.topic = names[rng.integers(len(names))]
                self.thread = int(rng.integers(len(filler.TOPICS[self.topic])))
            self.step, self.first = 0, int(rng.integers(2))
        exchange = filler.filler_exchange(self.topic, self.thread, self.step, rng)
        for k, text in enumerate(exchange):
            self.say(self.first ^ k, text)
        self.chatting = True


def generate_conversation(conv_id: str, span: int, held_out_templates: bool,
                          rng: np.random.Generator,
                          values: dict[str, tuple[str, ...]] | None = None,
                          chars_per_token: float = CHARS_PER_TOKEN,
                          echo: float = 0.0, near: float = 0.0, ack: float = 0.0,
                          near_max: float = 1.0) -> Conversation:
    """One conversation with 2 x len(SLOTS) probes (both speakers have every slot);
    `values` restricts what each slot draws from (default: all its values);
    `chars_per_token` converts planned token distances to text; `echo` is the share of
    answers that repeat their statement word for word; `near` the share of facts planned
    inside W (up to `near_max` W); `ack` the share of acknowledgements that say the stated
    value back."""
    facts = []
    for slot in SLOTS:
        pool = set(values[slot.name]) if values else None
        for speaker, value in enumerate(_two_values(slot, pool, rng)):
            facts.append(_Fact(slot, speaker, value,
                               sample_target(rng, span, near, near_max)))
    # longest first: the conversation then lasts about the longest target + the exchanges
    to_state = sorted(facts, key=lambda f: -f.target)
    pending: list[_Fact] = []
    n_templates = len(SLOTS[0].statements) if held_out_templates else TRAIN_TEMPLATES
    d = _Dialogue(span, chars_per_token, n_templates, rng, echo, ack)
    d.new_session()
    while to_state or pending:
        if d.pos - d.session_start >= d.session_len:
            d.new_session()
        # where the answer's value would land if asked now (after a question and the
        # answer's lead-in); ask when that is nearer the target than after one more exchange
        answer_at = d.pos + ASK_TOKENS + HALF_EXCHANGE
        due = [f for f in pending if answer_at >= f.value_end + f.target]
        if due:
            fact = min(due, key=lambda f: f.value_end + f.target)
            pending.remove(fact)
            d.ask(fact)
        elif to_state and (not pending or rng.random() < P_STATE):
            fact = to_state.pop(0)
            d.state(fact)
            pending.append(fact)
        else:
            d.chat()
    probes = sorted(d.probes, key=lambda p: (p.answer_turn, p.fact_turn))
    return validate(Conversation(conv_id, d.turns, d.headers, probes))


def generate_split(split: str, num: int, span: int, seed: int,
                   values: dict[str, tuple[str, ...]] | None = None,
                   chars_per_token: float = CHARS_PER_TOKEN,
                   echo: float = 0.0, train_near: float = 0.0, train_ack: float = 0.0,
                   train_near_max: float = 1.0) -> list[Conversation]:
    """`num` conversations of `split`; validation also uses the held-out statement templates.
    `train_near` and `train_ack` (training split only) are the shares of facts planned
    near (up to `train_near_max` W) and of acknowledgements that say the stated value
    back."""
    code = SPLIT_CODES[split]
    near = train_near if split == "train" else 0.0
    ack = train_ack if split == "train" else 0.0
    return [
        generate_conversation(f"synthetic-{split}-{i:05d}", span, split == "validation",
                              np.random.default_rng([seed, code, i]), values, chars_per_token,
                              echo, near, ack, train_near_max)
        for i in range(num)
    ]

