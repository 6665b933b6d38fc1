"""The synthetic generator at the text level: slots, templates, personas, determinism."""

import re

import numpy as np
import pytest

from longctx.data import synthetic_dialogues
from longctx.data.conversation import Conversation, Probe, Turn, validate
from longctx.data.slots import SLOTS, TRAIN_TEMPLATES
from longctx.data.synthetic_dialogues import generate_split
from longctx.errors import UserError


def _template_index(slot, fact_text: str, value: str) -> int:
    return slot.statements.index(fact_text.replace(value, "{v}", 1))


def test_slots_are_large_and_paraphrased():
    assert len(SLOTS) >= 8
    for slot in SLOTS:
        assert len(set(slot.values)) >= 200, slot.name
        assert TRAIN_TEMPLATES >= 5 and len(slot.statements) > TRAIN_TEMPLATES, slot.name
        for template in (*slot.statements, *slot.answers):
            assert template.count("{v}") == 1 and " {v}" in template, template
        assert all("{v}" not in q for q in slot.questions)


def test_same_seed_same_conversations_other_seed_differs():
    a = generate_split("validation", 3, 32, seed=5)
    assert a == generate_split("validation", 3, 32, seed=5)
    assert a != generate_split("validation", 3, 32, seed=6)
    assert a != generate_split("train", 3, 32, seed=5)


@pytest.fixture(scope="module")
def convs():
    return {split: generate_split(split, 12, 32, seed=0) for split in ("train", "validation")}


def test_both_speakers_have_every_slot_with_different_values(convs):
    for conv in convs["train"] + convs["validation"]:
        by_slot = {}
        for p in conv.probes:
            by_slot.setdefault(p.slot, {})[p.speaker] = p.value
        assert set(by_slot) == {s.name for s in SLOTS}
        for slot, values in by_slot.items():
            assert set(values) == {0, 1} and values[0] != values[1], (conv.conv_id, slot)


def test_fact_stated_once_then_asked_by_the_other_speaker(convs):
    for conv in convs["validation"]:
        for p in conv.probes:
            pattern = re.compile(rf"(?<!\w){re.escape(p.value)}(?!\w)")
            mentions = [i for i, t in enumerate(conv.turns) if pattern.search(t.text)]
            assert mentions == [p.fact_turn, p.answer_turn], (conv.conv_id, p)
            question = conv.turns[p.answer_turn - 1]
            assert question.speaker == 1 - p.speaker
            assert conv.turns[p.fact_turn].speaker == conv.turns[p.answer_turn].speaker == p.speaker


def test_held_out_templates_only_in_validation(convs):
    used = {"train": set(), "validation": set()}
    for split, items in convs.items():
        for conv in items:
            for p in conv.probes:
                slot = next(s for s in SLOTS if s.name == p.slot)
                used[split].add(_template_index(slot, conv.turns[p.fact_turn].text, p.value))
    assert max(used["train"]) < TRAIN_TEMPLATES
    assert max(used["validation"]) >= TRAIN_TEMPLATES


def test_several_sessions_with_time_headers(convs):
    for conv in convs["train"]:
        assert len(conv.session_headers) >= 2
        assert conv.session_headers[0] == ""
        assert all(h.endswith("later") or h == "the next day" for h in conv.session_headers[1:])


def test_probe_value_not_in_answer_is_an_error():
    turns = [Turn(0, 0, "My dog is called Rex."), Turn(1, 0, "What is his name?"),
             Turn(0, 0, "His name is Max.")]
    bad = Conversation("c-7", turns, [""], [Probe("pet", 0, "Rex", 0, 2, (17, 20), (12, 15))])
    with pytest.raises(UserError, match=r"c-7.*'Rex' is not in the answer turn 2"):
        validate(bad)
    with pytest.raises(UserError, match="c-8.*no turns"):
        validate(Conversation("c-8", [], [""]))


def test_echo_answers_repeat_the_statement_and_zero_echo_changes_nothing():
    plain = generate_split("validation", 3, 64, seed=5)
    assert generate_split("validation", 3, 64, seed=5, echo=0.0) == plain
    echoed = generate_split("validation", 3, 64, seed=5, echo=1.0)
    for conv in echoed:
        for p in conv.probes:
            stated, answer = conv.turns[p.fact_turn].text, conv.turns[p.answer_turn].text
            assert answer == stated and p.answer_chars == p.fact_chars
            assert answer[slice(*p.answer_chars)] == p.value
    paraphrased = sum(c.turns[p.answer_turn].text != c.turns[p.fact_turn].text
                      for c in plain for p in c.probes)
    assert paraphrased > 0.9 * sum(len(c.probes) for c in plain)


def _estimated_distance(conv, probe) -> float:
    """Tokens from the stated value's end to the answer's value, estimated from characters
    (as the generator plans them): the rest of the fact turn, the turns between, the lead-in."""
    cpt = synthetic_dialogues.CHARS_PER_TOKEN
    turns = conv.turns
    gap = (len(turns[probe.fact_turn].text) - probe.fact_chars[1] + probe.answer_chars[0]) / cpt
    return gap + 2 + sum(len(turns[k].text) / cpt + 2
                         for k in range(probe.fact_turn + 1, probe.answer_turn))


def test_train_near_moves_training_facts_inside_w_and_leaves_validation_alone():
    assert generate_split("train", 3, 64, seed=3, train_near=0.0) == generate_split(
        "train", 3, 64, seed=3)
    assert generate_split("validation", 3, 64, seed=3, train_near=1.0) == generate_split(
        "validation", 3, 64, seed=3)
    share = {}
    for near in (0.0, 1.0):
        convs = generate_split("train", 20, 64, seed=3, train_near=near)
        dist = [_estimated_distance(c, p) for c in convs for p in c.probes]
        share[near] = np.mean(np.asarray(dist) <= 64)
    assert share[0.0] < 0.4 and share[1.0] > 0.9, share


def test_train_near_max_spreads_training_facts_to_2w():
    convs = generate_split("train", 20, 64, seed=3, train_near=1.0, train_near_max=2.0)
    dist = np.asarray([_estimated_distance(c, p) for c in convs for p in c.probes])
    beyond = np.mean((dist > 64) & (dist <= 2 * 64 + 16))
    assert 0.2 < beyond < 0.6 and np.mean(dist <= 2 * 64 + 16) > 0.95, beyond
    assert generate_split("validation", 3, 64, seed=3, train_near=1.0, train_near_max=2.0) == (
        generate_split("validation", 3, 64, seed=3))


def test_train_ack_says_the_value_back_in_training_only():
    assert generate_split("validation", 3, 64, seed=3, train_ack=1.0) == generate_split(
        "validation", 3, 64, seed=3)
    for ack, expected in ((1.0, True), (0.0, False)):
        for conv in generate_split("train", 5, 64, seed=3, train_ack=ack):
            for p in conv.probes:
                reply = conv.turns[p.fact_turn + 1]
                assert reply.speaker != p.speaker
                # a value follows a space, so it is tokenized as in the statement
                assert (f" {p.value}" in reply.text) is expected, (reply.text, p.value)
