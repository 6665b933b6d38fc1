"""Recurrence NLL: word finding and distances on a hand-made conversation, and a model that
copies from the whole history against one that can only copy from the last W tokens."""

import numpy as np
import pytest

from longctx.data import prepare_dataset
from longctx.data.conversation import Conversation, Turn
from longctx.data.render import render
from longctx.eval.recurrence import NEW, RECURRENCE_BUCKETS, WordTable, occurrences, recurrence_nll
from tests.data_fixtures import real_config


@pytest.fixture(scope="module")
def msc(data_dir):
    return prepare_dataset(real_config("msc", data_dir))


def test_words_distances_and_nll_by_hand(msc):
    tok = msc.tokenizer
    conv = render(Conversation("hand", [
        Turn(0, 0, "My zebra Bartholomew likes the Camargue."),
        Turn(1, 0, "Is the zebra happy there?"),
        Turn(0, 1, "Bartholomew, yes: he is so happy!"),
    ], ["", "2 days later"]), tok)
    table = WordTable(tok)
    turn = conv.turns[0]
    words = [w for _, _, w in table.words(conv.ids, turn.start, turn.end - 1)]
    assert words == ["my", "zebra", "bartholomew", "likes", "the", "camargue"]
    occ = occurrences(conv, table)  # stopwords ('my', 'the', 'there', ...) dropped
    found = [("".join(table.letters[int(i)] for i in conv.ids[a : b + 1]), d, s)
             for a, b, d, s in occ]
    names = [w for w, _, _ in found]
    assert names == ["zebra", "bartholomew", "likes", "camargue", "zebra", "happy",
                     "bartholomew", "happy"]
    assert [d is None for _, d, _ in found] == [True] * 4 + [False, True, False, False]
    # distance: last token of the previous occurrence to the first of this one
    first_zebra, second_zebra = occ[0], occ[4]
    assert second_zebra[2] == second_zebra[0] - first_zebra[1] > 0
    assert [s for _, _, s in found] == [0, 0, 0, 0, 0, 0, 1, 1]
    # the NLL of a word is the sum over its tokens of the stream's per-token NLL
    rng = np.random.default_rng(0)
    lp = -rng.uniform(0.1, 5.0, conv.ids.size - 1)

    def word_nll(o):
        return -lp[o[0] - 1 : o[1]].sum()

    res = recurrence_nll([conv], [lp], 1000, table)  # W = 1000: every recurrence inside
    inside = res["by_session"]["1"]["inside"]
    assert inside["count"] == 2 and inside["tokens"] == sum(o[1] - o[0] + 1 for o in occ[6:])
    assert inside["nll"] == pytest.approx(np.mean([word_nll(o) for o in occ[6:]]))
    assert res["buckets"][NEW]["nll"] == pytest.approx(
        np.mean([word_nll(o) for o in occ if o[2] is None]))
    res = recurrence_nll([conv], [lp], 4, table)  # W = 4: the same words, further buckets
    assert res["buckets"]["inside"]["count"] == 0
    assert sum(v["count"] for v in res["buckets"].values()) == len(occ)
    assert res["buckets"][NEW]["count"] == 5
    for s, buckets in res["by_session"].items():
        assert sum(v["count"] for v in buckets.values()) == sum(o[3] == int(s) for o in occ)


def _cache_logprobs(ids: np.ndarray, vocab: int, history: int | None) -> np.ndarray:
    """log p(ids[t+1]) of a cache model: mostly the frequencies of the tokens in the last
    `history` tokens (None: the whole conversation so far), smoothed by a uniform."""
    out = np.zeros(ids.size - 1)
    for t in range(1, ids.size):
        seen = ids[:t] if history is None else ids[max(0, t - history) : t]
        freq = np.count_nonzero(seen == ids[t]) / seen.size
        out[t - 1] = np.log(0.9 * freq + 0.1 / vocab)
    return out


def test_a_model_that_copies_beats_one_limited_to_w_beyond_w(msc):
    """Two cache language models on real MSC conversations: one copies from the whole
    history, the other only from the last W tokens (a window). They are the same model
    inside W, so recurrences inside W cost both about the same, and beyond W only the
    full-history one finds the earlier mention: its NLL there must be lower."""
    convs = msc.conversations("train")[:4]
    span = 64
    table = WordTable(msc.tokenizer)
    full = recurrence_nll(convs, [_cache_logprobs(c.ids, msc.vocab_size, None)
                                  for c in convs], span, table)["buckets"]
    window = recurrence_nll(convs, [_cache_logprobs(c.ids, msc.vocab_size, span)
                                    for c in convs], span, table)["buckets"]
    for b in RECURRENCE_BUCKETS:  # the same words are counted for both models
        assert full[b]["count"] == window[b]["count"] and full[b]["tokens"] == window[b]["tokens"]
    for b in ("1-2x", "2-4x", ">4x"):
        assert full[b]["count"] >= 20
        assert full[b]["nll"] < window[b]["nll"] - 1.0, (b, full[b], window[b])
    # beyond W the window model cannot tell a recurrence from a new word: about as bad
    assert window[">4x"]["nll_per_token"] > 0.7 * window[NEW]["nll_per_token"]
