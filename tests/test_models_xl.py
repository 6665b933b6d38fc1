"""Transformer-XL: streaming == one masked pass, memory semantics, resets, decoding."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ConfigError, ModelConfig
from longctx.models import (
    Decoder,
    build_model,
    init_memory,
    xl_decode_feed,
    xl_decode_from_memory,
    xl_decode_init,
    xl_decode_segment,
    xl_decode_step,
)
from longctx.models.cache_layout import from_cache
from tests.model_utils import forward, make, masked, rel

BASE = ModelConfig(arch="xl", n_token=37, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, init_std=0.2,
                   matmul_precision="highest").replace(xl=dict(tgt_len=4, mem_len=6))


def stream_segments(model, params, tokens, cfg):
    """Logits of [B, n*tgt_len] tokens fed segment by segment with memory."""
    memory = init_memory(cfg, tokens.shape[0])
    outs = []
    for s in range(tokens.shape[1] // cfg.xl.tgt_len):
        seg = tokens[:, s * cfg.xl.tgt_len : (s + 1) * cfg.xl.tgt_len]
        logits, memory = forward(model, params, seg, memory)
        outs.append(logits)
    return jnp.concatenate(outs, axis=1), memory


def xl_equivalent_mask(seq_len: int, cfg: ModelConfig) -> jnp.ndarray:
    """Query t of segment s sees keys u with s*tgt_len - mem_len <= u <= t (and t-u < mem_len
    with same_length)."""
    t = np.arange(seq_len)[:, None]
    u = np.arange(seq_len)[None, :]
    start = (t // cfg.xl.tgt_len) * cfg.xl.tgt_len - cfg.xl.mem_len
    ok = (u <= t) & (u >= start)
    if cfg.xl.same_length:
        ok &= t - u < cfg.xl.mem_len
    return jnp.asarray(ok[None])


@pytest.mark.parametrize(
    "changes",
    [dict(xl=dict(mem_len=3, tgt_len=5)), dict(xl=dict(mem_len=9, tgt_len=4)),
     dict(xl=dict(mem_len=5, tgt_len=3, same_length=True), pre_lnorm=True, clamp_len=4,
          untie_r=True)],
)
def test_streaming_equals_one_pass_with_visibility_mask(changes):
    cfg = BASE.replace(**changes)
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(1), (2, 4 * cfg.xl.tgt_len), 0, cfg.n_token)
    streamed, _ = stream_segments(model, params, tokens, cfg)
    mask = xl_equivalent_mask(tokens.shape[1], cfg)
    one_pass = masked(model, params, tokens, mask)
    assert rel(streamed, one_pass) < 1e-5
    # and the memory actually matters: without it later segments differ
    plain = forward(model, params, tokens[:, cfg.xl.tgt_len : 2 * cfg.xl.tgt_len])[0]
    assert rel(plain, streamed[:, cfg.xl.tgt_len : 2 * cfg.xl.tgt_len]) > 1e-3


def test_memory_is_right_aligned_last_rows_and_valid_counts():
    cfg = BASE.replace(xl=dict(mem_len=6, tgt_len=4))
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(2), (2, 8), 0, cfg.n_token)
    memory = init_memory(cfg, 2)
    _, m1 = forward(model, params, tokens[:, :4], memory)
    assert m1.valid.tolist() == [4, 4]
    assert float(jnp.abs(m1.hidden[:, :, :2]).max()) == 0.0  # invalid rows stay empty
    emb = params["word_emb"]["embedding"][tokens[:, :4]] * np.sqrt(cfg.d_model)
    np.testing.assert_allclose(m1.hidden[0, :, 2:], emb, rtol=1e-6, atol=1e-6)
    _, m2 = forward(model, params, tokens[:, 4:], m1)
    assert m2.valid.tolist() == [6, 6]
    np.testing.assert_array_equal(m2.hidden[:, :, :2], m1.hidden[:, :, 4:])
    assert m2.hidden.shape == memory.hidden.shape and m2.hidden.dtype == jnp.float32


def test_no_gradient_flows_into_memory():
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(3), (2, cfg.xl.tgt_len), 0, cfg.n_token)
    _, memory = forward(model, params, tokens, init_memory(cfg, 2))

    def loss_wrt_memory(hidden):
        mem = dataclasses.replace(memory, hidden=hidden)
        return model.apply({"params": params}, tokens, mem, None)[0].sum()

    g = jax.jit(jax.grad(loss_wrt_memory))(memory.hidden)
    assert float(jnp.abs(g).max()) == 0.0

    def new_memory_sum(p):
        return model.apply({"params": p}, tokens, memory, None)[1].hidden.sum()

    gp = jax.jit(jax.grad(new_memory_sum))(params)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(gp)) == 0.0
    # while the logits do depend on the memory
    other = dataclasses.replace(memory, hidden=memory.hidden + 1.0)
    a = forward(model, params, tokens, memory)[0]
    b = forward(model, params, tokens, other)[0]
    assert rel(a, b) > 1e-3


def test_reset_row_matches_a_fresh_model():
    cfg = BASE.replace(xl=dict(same_length=True))
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(4), (2, 3 * cfg.xl.tgt_len), 0, cfg.n_token)
    _, memory = stream_segments(model, params, tokens[:, : 2 * cfg.xl.tgt_len], cfg)
    seg = tokens[:, 2 * cfg.xl.tgt_len :]
    logits, new_mem = forward(model, params, seg, memory, jnp.array([True, False]))
    fresh, fresh_mem = forward(model, params, seg[:1], init_memory(cfg, 1))
    np.testing.assert_allclose(logits[0], fresh[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(new_mem.hidden[:, 0], fresh_mem.hidden[:, 0], atol=1e-6, rtol=0)
    assert new_mem.valid.tolist() == [cfg.xl.tgt_len, cfg.xl.mem_len]
    kept = forward(model, params, seg, memory, jnp.array([False, False]))[0]
    np.testing.assert_array_equal(logits[1], kept[1])
    assert rel(kept[0], fresh[0]) > 1e-3


def test_same_length_without_memory_is_refused():
    cfg = BASE.replace(xl=dict(same_length=True, mem_len=0))
    with pytest.raises(ConfigError, match="same_length"):
        build_model(cfg)
    with pytest.raises(ConfigError, match="same_length"):
        Decoder(cfg)


@pytest.mark.parametrize(
    "changes",
    [dict(xl=dict(mem_len=3, tgt_len=5)),
     dict(xl=dict(mem_len=7, tgt_len=3, same_length=True), pre_lnorm=True, clamp_len=2)],
)
def test_incremental_decoding_reproduces_segment_mode(changes):
    cfg = BASE.replace(**changes)
    model, params = make(cfg)
    n = 3 * cfg.xl.tgt_len + 2
    tokens = jax.random.randint(jax.random.key(5), (2, 3 * cfg.xl.tgt_len + cfg.xl.tgt_len), 0,
                                cfg.n_token)
    seg_logits, seg_memory = stream_segments(model, params, tokens, cfg)
    traces = []  # one trace = one compiled version
    step = jax.jit(lambda *a: traces.append(1) or xl_decode_step(*a), static_argnums=0)
    state = xl_decode_init(cfg, 2)
    outs = []
    for t in range(n):
        logits, state = step(model, params, tokens[:, t], state)
        outs.append(logits)
    assert len(traces) == 1  # no recompilation per step
    stepped = jnp.stack(outs, axis=1)
    assert rel(stepped, seg_logits[:, :n]) < 1e-5
    # feed the rest with the scan version; the rolled memory equals segment mode's
    rest, state = jax.jit(xl_decode_feed, static_argnums=0)(model, params, tokens[:, n:], state)
    assert rel(rest, seg_logits[:, n:]) < 1e-5
    assert int(state.pos) % cfg.xl.tgt_len == 0 and state.valid.tolist() == seg_memory.valid.tolist()
    # the cached memory rows equal segment mode's memory projected once (both in order)
    from_memory = jax.jit(xl_decode_from_memory, static_argnums=0)(model, params, seg_memory)
    size = cfg.xl.mem_len + cfg.xl.tgt_len
    for layer in range(cfg.n_layer):
        got = from_cache(state.k[layer], state.v[layer])  # [B, K, H, D] in slot order
        want = from_cache(from_memory.k[layer], from_memory.v[layer])
        for g, w in zip(got, want, strict=True):
            g = jnp.roll(g, -(int(state.pos) % size), axis=1)[:, cfg.xl.tgt_len:]
            assert rel(g, w[:, cfg.xl.tgt_len:]) < 1e-5


def test_decoding_continues_a_segment_memory_in_whole_segments_and_steps():
    cfg = BASE.replace(xl=dict(mem_len=7, tgt_len=3))  # memory spans several segments
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(6), (2, 5 * cfg.xl.tgt_len), 0, cfg.n_token)
    segs = [tokens[:, s * cfg.xl.tgt_len : (s + 1) * cfg.xl.tgt_len] for s in range(5)]
    memory, want = init_memory(cfg, 2), []
    for s, seg in enumerate(segs):  # row 0 restarts at segment 1: rows hold unequal memories
        logits, memory = forward(model, params, seg, memory, jnp.array([s == 1, False]))
        want.append(logits)
        if s == 1:
            after_1 = memory
    assert after_1.valid.tolist() == [3, 6]
    state = jax.jit(xl_decode_from_memory, static_argnums=0)(model, params, after_1)
    segment = jax.jit(xl_decode_segment, static_argnums=0)
    a, state = segment(model, params, segs[2], state)
    b, state = jax.jit(xl_decode_feed, static_argnums=0)(model, params, segs[3], state)
    c, state = segment(model, params, segs[4], state)
    assert rel(jnp.concatenate([a, b, c], 1), jnp.concatenate(want[2:], 1)) < 1e-5
    assert state.valid.tolist() == memory.valid.tolist() == [7, 7]
    with pytest.raises(ValueError, match="tgt_len=3"):
        segment(model, params, tokens[:, :4], state)


def test_a_decode_step_projects_no_cached_row():
    """The cost of a step grows with the cached rows only by attention's per-key work, far
    below what projecting each row through qkv_net (2 d_model 3HD flops) would add."""

    def step_flops(mem_len: int) -> float:
        cfg = BASE.replace(xl=dict(mem_len=mem_len, tgt_len=4))
        model, params = make(cfg, batch=1)
        lowered = jax.jit(xl_decode_step, static_argnums=0).lower(
            model, params, jnp.zeros((1,), jnp.int32), xl_decode_init(cfg, 1))
        cost = lowered.compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    c = BASE
    per_row_and_layer = (step_flops(40) - step_flops(8)) / 32 / c.n_layer
    projection = 2 * c.d_model * 3 * c.n_head * c.d_head
    assert 0 < per_row_and_layer < projection / 4, (per_row_and_layer, projection)
