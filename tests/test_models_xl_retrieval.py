"""The `xl_retrieval` architecture: XL's parameters exactly, equal to XL until rows leave
its memory, the store filled FIFO and emptied at conversation starts, top-k equal to a
dense reference over the chosen rows, decoding equal to the segment forward, its cost and
its config rules; with bptt_segments K > 1 a call of K segments equals a loop of them and
the gradient reaches the stored keys within the row (none with bptt_stop_gradient)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ConfigError, ModelConfig
from longctx.models import archs, build_model, count_params, init_memory
from longctx.models.primitives import sinusoid
from longctx.models.retrieval import RetrievalState, far_distance
from tests.model_utils import forward, make

XL = ModelConfig(arch="xl", n_token=13, n_layer=2, n_head=2, d_model=16, d_head=8,
                 d_inner=32, init_std=0.2, matmul_precision="highest").replace(
    xl=dict(tgt_len=4, mem_len=4))
CFG = XL.replace(arch="xl_retrieval", xl_retrieval=dict(retrieval_k=3, store_len=8))
SEG = 4


def tokens(batch=2, segments=5, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, segments * SEG), 0, CFG.n_token)


@pytest.fixture(scope="module")
def params():
    return make(XL)[1]  # XL's parameters: retrieval runs them as they are


def stream(cfg, params, x, state=None, first_reset=True):
    """Feed x segment by segment -> (logits [B, T, V], states after each segment)."""
    model = build_model(cfg)
    state = init_memory(cfg, x.shape[0]) if state is None else state
    out, states = [], []
    for s in range(x.shape[1] // SEG):
        reset = jnp.full((x.shape[0],), s == 0 and first_reset)
        logits, state = forward(model, params, x[:, s * SEG:(s + 1) * SEG], state, reset)
        out.append(logits)
        states.append(state)
    return jnp.concatenate(out, axis=1), states


def test_same_parameters_and_cost():
    model_params = make(CFG)[1]
    xl_params = make(XL)[1]
    assert jax.tree.map(jnp.shape, model_params) == jax.tree.map(jnp.shape, xl_params)
    arch = archs.get(CFG)
    assert count_params(model_params) == count_params(xl_params) and arch.extra_params(CFG) == 0
    assert arch.keys_per_query(CFG) == 4 + 4 + 3 and arch.span(CFG) == 4
    # the store scan: one score per stored row per query per head, on top of XL's count
    xl_flops = archs.get(XL).flops_per_token(XL, training=False)
    scan = 2 * CFG.n_layer * CFG.xl_retrieval.store_len * CFG.n_head * CFG.d_head
    assert arch.flops_per_token(CFG, training=False) > xl_flops + scan
    assert "xl_retrieval" in archs.names() and "xl_retrieval" not in archs.studied()


def test_equals_xl_until_rows_leave_memory_then_differs(params):
    x = tokens()
    xl, _ = stream(XL, params, x)
    got, states = stream(CFG, params, x)
    # segments 0 and 1: nothing has left XL's memory yet, the store is empty
    np.testing.assert_allclose(got[:, :2 * SEG], xl[:, :2 * SEG], rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[:, 2 * SEG:], xl[:, 2 * SEG:], atol=1e-4)
    assert [int(s.filled[0]) for s in states] == [0, 4, 8, 8, 8]  # FIFO, capped at store_len
    assert [int(s.xl.valid[0]) for s in states] == [4, 4, 4, 4, 4]


def test_store_holds_the_keys_that_left_memory_fifo(params):
    """After 5 segments the store holds the keys of segments 2 and 3 (0 and 1 fell out)."""
    x = tokens(segments=5)
    _, states = stream(CFG, params, x)
    model = build_model(XL)
    _, xl_states = stream(XL, params, x)
    layer0_keys = []
    for s in (2, 3):  # the memory after segment s holds segment s's inputs
        hidden = xl_states[s].hidden[0]  # embeddings of the segment, layer 0's input

        def keys(mod, h):
            return mod.layers[0].project(h)[1]

        layer0_keys.append(model.apply({"params": params}, hidden, method=keys))
    want = jnp.concatenate(layer0_keys, axis=1)  # [B, S, H, D]
    np.testing.assert_allclose(states[-1].keys[0].transpose(0, 3, 1, 2), want, rtol=1e-5,
                               atol=1e-6)


def test_reset_empties_memory_and_store(params):
    x = tokens()
    _, states = stream(CFG, params, x)
    model = build_model(CFG)
    reset = jnp.asarray([True, False])
    fresh_x = tokens(seed=7)[:, :SEG]
    logits, after = forward(model, params, fresh_x, states[-1], reset)
    assert int(after.filled[0]) == 0 and int(after.filled[1]) == 8
    alone, _ = forward(model, params, fresh_x, init_memory(CFG, 2), jnp.ones(2, bool))
    np.testing.assert_allclose(logits[0], alone[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits[1], alone[1], atol=1e-4)


def test_top_k_equals_dense_attention_over_the_chosen_rows(params):
    """With a store of S rows and k = S every row is chosen; the result is a dense
    attention over memory + segment + every stored row at the far distance. With k < S
    the k rows of highest content score: the same with the others masked."""
    x = tokens(segments=5)
    cfg_all = CFG.replace(xl_retrieval=dict(retrieval_k=8))
    _, states = stream(cfg_all, params, x[:, :4 * SEG])
    state = states[-1]
    seg = x[:, 4 * SEG:]
    model = build_model(cfg_all)
    want_all = _dense(model, params, seg, state, k=None)
    got_all, _ = forward(model, params, seg, state, jnp.zeros(2, bool))
    np.testing.assert_allclose(got_all, want_all, rtol=1e-5, atol=1e-5)
    got_k, _ = forward(build_model(CFG), params, seg, state, jnp.zeros(2, bool))
    np.testing.assert_allclose(got_k, _dense(model, params, seg, state,
                                             k=CFG.xl_retrieval.retrieval_k),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(got_k, got_all, atol=1e-4)


def _dense(model, params, seg, state: RetrievalState, k):
    """A reference written out: per layer and head, scores over memory + segment (the
    relative positions) and the store (content score + the far distance's positional
    score), stored rows outside the top k by content masked, one softmax."""
    cfg = model.cfg

    def run(mod):
        from longctx.models.primitives import descending_pos_emb
        rw, rr = mod.r_w_bias, mod.r_r_bias
        h = mod.embed(seg, True)
        m, t, s = cfg.xl.mem_len, seg.shape[1], cfg.xl_retrieval.store_len
        far = sinusoid(jnp.asarray([far_distance(cfg)]), cfg.d_model)
        for i, layer in enumerate(mod.layers):
            src = jnp.concatenate([state.xl.hidden[i], h], axis=1)
            q, kk, vv = layer.project(src, n_query=t)
            r = layer.rel_proj(descending_pos_emb(cfg, m + t))
            r_far = layer.rel_proj(far)[0]
            out = np.zeros(q.shape, np.float32)
            for b in range(q.shape[0]):
                for hh in range(cfg.n_head):
                    for qi in range(t):
                        dist = m + qi - np.arange(m + t)
                        local = ((q[b, qi, hh] + rw[hh]) @ kk[b, :, hh].T
                                 + np.array([(q[b, qi, hh] + rr[hh]) @ r[m + t - 1 - d, hh]
                                             if d >= 0 else 0.0 for d in dist]))
                        local = np.where(dist >= 0, local, -np.inf)
                        content = (q[b, qi, hh] + rw[hh]) @ state.keys[i, b, hh]
                        keep = np.ones(s, bool) if k is None else np.zeros(s, bool)
                        if k is not None:
                            keep[np.argsort(-np.asarray(content))[:k]] = True
                        stored = np.where(keep, content + (q[b, qi, hh] + rr[hh]) @ r_far[hh],
                                          -np.inf)
                        score = np.concatenate([local, stored]) / np.sqrt(cfg.d_head)
                        p = np.exp(score - score.max())
                        p /= p.sum()
                        vals = np.concatenate([vv[b, :, hh], state.values[i, b, hh]])
                        out[b, qi, hh] = p @ vals
            h = layer.finish(h, jnp.asarray(out), True)
        return mod.output(h, True)

    return model.apply({"params": params}, method=run)


def test_decode_matches_segment_forward(params):
    """Token-by-token chat decoding gives the segment forward's logits, store included."""
    x = tokens(batch=1, segments=5)
    want, _ = stream(CFG, params, x)
    arch, model = archs.get(CFG), build_model(CFG)
    state = arch.decode_init(CFG, 1)
    step = jax.jit(lambda p, tok, st: arch.decode_step(model, p, tok, st))
    got = []
    for t in range(x.shape[1]):
        logits, state = step(params, x[:, t], state)
        got.append(logits)
    np.testing.assert_allclose(jnp.stack(got, axis=1), want, rtol=1e-4, atol=1e-4)
    assert arch.decode_stats(CFG, state)["store_rows"] == 8


def test_deterministic(params):
    x = tokens()
    a, _ = stream(CFG, params, x)
    b, _ = stream(CFG, params, x)
    assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("change,key", [
    (dict(xl_retrieval=dict(retrieval_k=9)), "model.xl_retrieval.retrieval_k"),
    (dict(xl=dict(attention_impl="pallas")), "model.xl.attention_impl"),
    (dict(xl=dict(same_length=True)), "model.xl.same_length"),
])
def test_config_rules(change, key):
    with pytest.raises(ConfigError, match=key):
        build_model(CFG.replace(**change))


def test_segments_per_call_equal_a_loop(params):
    """bptt_segments = 3: one call of 3 segments gives the logits and state of 3 calls of
    one segment (the store filling within the call as across calls)."""
    cfg = CFG.replace(xl=dict(bptt_segments=3))
    x = tokens(segments=3)
    reset = jnp.ones((2,), bool)
    got, last = forward(build_model(cfg), params, x, init_memory(cfg, 2), reset)
    want, states = stream(CFG, params, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(states[-1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert archs.tokens_per_step(cfg) == 3 * SEG and archs.get(cfg).segments_per_step(cfg) == 3


@pytest.mark.parametrize("arch,stop,reaches", [("xl_retrieval", False, True),
                                               ("xl_retrieval", True, False),
                                               ("xl", False, False)])
def test_gradient_reaches_the_store_within_a_row(arch, stop, reaches):
    """One layer, 3 segments per call, a full memory at the start: those rows leave the
    memory into the store in segment 1 and segment 3 retrieves them. One layer's memory
    feeds only the next segment, so the store is the only path from them to segment 3's
    loss: its gradient w.r.t. them is nonzero for xl_retrieval, exactly zero with
    bptt_stop_gradient and for XL with gradients through its memory."""
    cfg = CFG.replace(arch=arch, n_layer=1, xl=dict(bptt_segments=3, bptt_stop_gradient=stop))
    params = make(cfg)[1]
    model = build_model(cfg)
    x = tokens(segments=3)
    y = tokens(segments=3, seed=5)
    start = init_memory(cfg, 2)
    memory = start.xl if arch == "xl_retrieval" else start
    hidden = jax.random.normal(jax.random.key(4), memory.hidden.shape)

    def loss(h):
        full = memory.replace(hidden=h, valid=jnp.full((2,), cfg.xl.mem_len, jnp.int32))
        state = start.replace(xl=full) if arch == "xl_retrieval" else full
        logits, _ = model.apply({"params": params}, x, state, None, deterministic=True)
        nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[..., None], -1)[..., 0]
        return jnp.sum(nll[:, -SEG:])

    g = float(jnp.max(jnp.abs(jax.jit(jax.grad(loss))(hidden))))
    assert (g > 1e-6) if reaches else (g == 0.0)
