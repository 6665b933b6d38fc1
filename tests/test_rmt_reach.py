"""experiments/rmt_reach.py: probe scoring through segment memories, and the K curriculum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.eval import metrics
from longctx.eval.probes import RecallItem
from longctx.eval.scoring import Request
from longctx.models import Decoder
from longctx.models.recurrent_memory import rmt_initial_memory, rmt_segment
from tests.conftest import load_script
from tests.model_utils import rmt_params

SEG = 8
# the reference stream's segment, jitted (run eagerly, each operation compiles on its own)
_segment = jax.jit(rmt_segment, static_argnums=0)


class _Conv:
    def __init__(self, ids):
        self.ids = ids


def _streamed_logprob(model, params, ids, pos, cand):
    """The candidate written into the stream at pos, the stream run segment by segment."""
    ids = np.concatenate([ids[:pos], cand])
    x, y = ids[:-1], ids[1:]
    mem, lps = rmt_initial_memory(params, 1), []
    for s in range(0, len(x), SEG):
        logits, mem = _segment(model, params, jnp.asarray(x[None, s : s + SEG]), mem)
        lp = np.asarray(jax.nn.log_softmax(logits[0]))
        lps.append(lp[np.arange(len(x[s : s + SEG])), y[s : s + SEG]])
    return float(np.concatenate(lps)[pos - 1 : pos - 1 + len(cand)].sum())


def test_probe_scores_match_the_streamed_model():
    reach = load_script("rmt_reach")
    cfg = ModelConfig(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                      dropout=0.0)
    model = Decoder(cfg)
    params = rmt_params(model, jax.random.PRNGKey(0), 3, SEG)
    rng = np.random.default_rng(0)
    convs = [_Conv(rng.integers(1, 50, n).astype(np.int32)) for n in (37, 50)]
    items = []
    for i, conv in enumerate(convs):
        # answers at a segment's first token, mid-segment, and in a later segment; one-token
        # candidates never cross a segment's end, so the scores match the stream exactly
        for pos in (5, 8, 9, 16, 17, 23, 30):
            cands = (conv.ids[pos : pos + 1], rng.integers(1, 50, 1).astype(np.int32),
                     rng.integers(1, 50, 1).astype(np.int32))
            items.append(RecallItem(Request(i, pos, cands), 0, "x"))
    scores = reach.candidate_logprobs(model, params, convs, items, SEG, 0, chunk=4)
    expect = [_streamed_logprob(model, params, convs[it.request.stream].ids, it.request.pos, c)
              for it in items for c in it.request.candidates]
    np.testing.assert_allclose(scores, expect, rtol=1e-4, atol=1e-4)
    credits = reach.score_probes(model, params, convs, items, SEG, 0, chunk=4)
    assert credits == [metrics.forced_choice_credit(expect[3 * j : 3 * j + 3], 0)
                       for j in range(len(items))]
    assert 0 < sum(credits) < len(credits)  # not all one way: the comparison has content


def test_k_schedule_shares_add_up():
    reach = load_script("rmt_reach")
    assert reach.k_schedule("4") == [(4, 1.0)]
    out = reach.k_schedule("1:0.25,2:0.25,4")
    assert [k for k, _ in out] == [1, 2, 4]
    assert [s for _, s in out] == pytest.approx([0.25, 0.25, 0.5])
