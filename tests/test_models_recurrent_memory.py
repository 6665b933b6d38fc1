"""Recurrent memory tokens and gradients through memory: shapes, parameters, causality,
the gradient across segments (and its ablation), scan == a loop, determinism."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.models import build_model, count_params, init_memory
from longctx.models.recurrent_memory import (
    MEMORY_PARAM,
    MemoryTokens,
    added_params,
    decoder_params,
    rmt_init,
    rmt_initial_memory,
    rmt_segment,
    rmt_segments,
)
from longctx.models.segment_scan import join_segments, split_segments, xl_segments
from tests.model_utils import forward, make, rmt_params

CFG = ModelConfig(arch="xl", n_token=11, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, init_std=0.2,
                  matmul_precision="highest").replace(xl=dict(tgt_len=4, mem_len=4))
N_MEM = 3
SEG = 4
K = 3


@pytest.fixture(scope="module")
def rmt():
    model = build_model(CFG)
    return model, rmt_params(model, jax.random.key(0), N_MEM, SEG)


def tokens(batch=2, n=K * SEG, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, n), 0, CFG.n_token)


def nll_head(logits, targets):
    """Per-token NLL of each segment (what a training loss sums)."""
    return (jax.nn.logsumexp(logits, -1)
            - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0])


def test_shapes_and_parameters(rmt):
    model, params = rmt
    memory = rmt_initial_memory(params, 2)
    logits, new = rmt_segment(model, params, tokens(n=SEG), memory)
    assert logits.shape == (2, SEG, CFG.n_token) and logits.dtype == jnp.float32
    assert new.vectors.shape == (2, N_MEM, CFG.d_model)
    assert new.batch_axes() == MemoryTokens(vectors=0)
    # the decoder's own tree, identical to every other architecture's, plus the memory
    _, xl_params = make(CFG)
    assert (jax.tree.map(jnp.shape, decoder_params(params))
            == jax.tree.map(jnp.shape, xl_params))
    assert count_params(params) == count_params(xl_params) + added_params(N_MEM, CFG.d_model)
    assert added_params(N_MEM, CFG.d_model) == N_MEM * CFG.d_model == 48


def test_anchor_model_size():
    """LM-RMT's copy-task model: 922,890 parameters, 930,570 with 60 memory tokens."""
    cfg = ModelConfig(arch="xl", n_token=10, n_layer=4, n_head=4, d_model=128, d_head=64,
                      d_inner=256).replace(xl=dict(tgt_len=8, mem_len=8))
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda k: rmt_init(model, k, 60, 8), jax.random.key(0))
    assert count_params(decoder_params(shapes)) == 922_890
    assert count_params(shapes) == 930_570


def test_causal_reads_and_writes(rmt):
    """A token's logits never depend on later tokens; the written memory depends on the
    whole segment, its last token included; the read memory reaches every token."""
    model, params = rmt
    memory = rmt_initial_memory(params, 1)
    seg = tokens(batch=1, n=SEG)
    changed = seg.at[0, -1].set((seg[0, -1] + 1) % CFG.n_token)
    a_logits, a_mem = rmt_segment(model, params, seg, memory)
    b_logits, b_mem = rmt_segment(model, params, changed, memory)
    np.testing.assert_array_equal(a_logits[:, :-1], b_logits[:, :-1])
    assert float(jnp.max(jnp.abs(a_mem.vectors - b_mem.vectors))) > 1e-4
    other = MemoryTokens(vectors=memory.vectors + 1.0)
    c_logits, _ = rmt_segment(model, params, seg, other)
    assert float(jnp.min(jnp.max(jnp.abs(c_logits - a_logits), axis=-1))) > 1e-4


def test_reset_reads_initial_memory(rmt):
    model, params = rmt
    seg = tokens(n=SEG)
    start = rmt_initial_memory(params, 2)
    _, carried = rmt_segment(model, params, seg, start)
    fresh, _ = rmt_segment(model, params, seg, start)
    mixed, _ = rmt_segment(model, params, seg, carried, reset=jnp.array([True, False]))
    kept, _ = rmt_segment(model, params, seg, carried)
    np.testing.assert_allclose(mixed[0], fresh[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mixed[1], kept[1], rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(kept[0] - fresh[0]))) > 1e-4


def test_scan_equals_segment_loop(rmt):
    model, params = rmt
    x = tokens()
    memory = rmt_initial_memory(params, 2)
    logits, last = rmt_segments(model, params, memory, x, SEG, lambda lg, _: lg)
    mem, outs = memory, []
    for k in range(K):
        lg, mem = rmt_segment(model, params, x[:, k * SEG : (k + 1) * SEG], mem)
        outs.append(lg)
    np.testing.assert_allclose(join_segments(logits), jnp.concatenate(outs, 1), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(last.vectors, mem.vectors, rtol=1e-5, atol=1e-5)
    assert split_segments(x, SEG).shape == (K, 2, SEG)
    np.testing.assert_array_equal(join_segments(split_segments(x, SEG)), x)


def _last_segment_loss_rmt(model, x, stop_gradient, remat, params, memory):
    nll, _ = rmt_segments(model, params, memory, x[:, :-1], SEG, nll_head,
                          x[:, 1:], stop_gradient=stop_gradient, remat=remat)
    return jnp.sum(nll[-1])


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_rmt_gradient_crosses_segments(rmt, stop_gradient):
    """The last segment's loss reaches the first segment's memory (and the learnt initial
    memory) only through K-1 memory writes: nonzero with BPTT, exactly zero when the
    gradient is stopped at every boundary (the ablation)."""
    model, params = rmt
    x = tokens(n=K * SEG + 1)
    memory = MemoryTokens(vectors=jax.random.normal(jax.random.key(3), (2, N_MEM, CFG.d_model)))
    loss = partial(_last_segment_loss_rmt, model, x, stop_gradient, True)
    g_params, g_mem = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, memory)
    g_init = float(jnp.max(jnp.abs(g_params[MEMORY_PARAM])))
    g_read = float(jnp.max(jnp.abs(g_mem.vectors)))
    if stop_gradient:
        assert g_init == 0.0 and g_read == 0.0
    else:
        assert g_read > 1e-6
    # the learnt initial memory reaches only rows that reset
    reset = jnp.array([True, False])

    def from_reset(p):
        nll, _ = rmt_segments(model, p, memory, x[:, :-1], SEG, nll_head, x[:, 1:],
                              reset=reset, stop_gradient=stop_gradient)
        return jnp.sum(nll[-1])

    g = float(jnp.max(jnp.abs(jax.jit(jax.grad(from_reset))(params)[MEMORY_PARAM])))
    assert (g == 0.0) if stop_gradient else (g > 1e-6)


def test_remat_changes_no_gradient(rmt):
    model, params = rmt
    x = tokens(n=K * SEG + 1)
    memory = rmt_initial_memory(params, 2)
    grads = [jax.jit(jax.grad(partial(_last_segment_loss_rmt, model, x, False, remat)))(
        params, memory) for remat in (True, False)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_determinism(rmt):
    model, _ = rmt
    a = rmt_init(model, jax.random.key(5), N_MEM, SEG)
    b = rmt_init(model, jax.random.key(5), N_MEM, SEG)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    x = tokens(n=K * SEG + 1)
    memory = rmt_initial_memory(a, 2)

    def run():
        nll, mem = rmt_segments(model, a, memory, x[:, :-1], SEG, nll_head, x[:, 1:],
                                deterministic=False, rng=jax.random.key(9))
        return nll, mem.vectors

    first, second = run(), run()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    other = rmt_segments(model, a, memory, x[:, :-1], SEG, nll_head, x[:, 1:],
                         deterministic=True)[0]
    model_drop = build_model(CFG.replace(dropout=0.3))
    dropped = rmt_segments(model_drop, a, memory, x[:, :-1], SEG, nll_head, x[:, 1:],
                           deterministic=False, rng=jax.random.key(9))[0]
    assert float(jnp.max(jnp.abs(dropped - other))) > 1e-4  # the key does reach dropout


# ------------------------------------------------------------------ Transformer-XL


def test_xl_segments_match_plain_xl():
    """Gradients through memory change no forward value: the scan's logits equal the
    segment-by-segment XL forward's."""
    model, params = make(CFG)
    x = tokens()
    memory = init_memory(CFG, 2)
    logits, last = xl_segments(model, params, memory, x, SEG, lambda lg, _: lg)
    mem, outs = memory, []
    for k in range(K):
        lg, mem = forward(model, params, x[:, k * SEG : (k + 1) * SEG], mem)
        outs.append(lg)
    np.testing.assert_allclose(join_segments(logits), jnp.concatenate(outs, 1), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(last.hidden, mem.hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(last.valid, mem.valid)


@pytest.mark.parametrize("memory_grad", [True, False])
def test_xl_gradient_through_memory(memory_grad):
    """mem_len = tgt_len: the last of 3 segments sees the first segment's memory only
    through two memory updates. Its loss's gradient w.r.t. that memory is nonzero with
    memory_grad and exactly zero without (XL's stop-gradient). Three layers: XL's memory
    at layer i feeds layer i+1 of the next segment, so a memory reaches at most n_layer
    segments on."""
    cfg = CFG.replace(n_layer=3)
    model, params = make(cfg)
    x = tokens(n=K * SEG + 1)
    start = init_memory(cfg, 2)
    hidden0 = jax.random.normal(jax.random.key(4), start.hidden.shape)

    def loss(hidden):
        mem = start.replace(hidden=hidden, valid=jnp.full((2,), CFG.xl.mem_len, jnp.int32))
        nll, _ = xl_segments(model, params, mem, x[:, :-1], SEG, nll_head, x[:, 1:],
                             memory_grad=memory_grad)
        return jnp.sum(nll[-1])

    g = float(jnp.max(jnp.abs(jax.jit(jax.grad(loss))(hidden0))))
    assert (g > 1e-6) if memory_grad else (g == 0.0)


def test_xl_reset_empties_memory():
    model, params = make(CFG)
    x = tokens()
    full = init_memory(CFG, 2)
    full = full.replace(hidden=jax.random.normal(jax.random.key(4), full.hidden.shape),
                        valid=jnp.full((2,), CFG.xl.mem_len, jnp.int32))
    reset_logits, _ = xl_segments(model, params, full, x, SEG, lambda lg, _: lg,
                                  reset=jnp.array([True, False]))
    fresh_logits, _ = xl_segments(model, params, init_memory(CFG, 2), x, SEG,
                                  lambda lg, _: lg)
    np.testing.assert_allclose(reset_logits[:, 0], fresh_logits[:, 0], rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(reset_logits[0, 1] - fresh_logits[0, 1]))) > 1e-4


def test_gated_update_interpolates_between_read_and_written(rmt):
    """With a gate (zero weights, bias b), the next memory is read + sigmoid(b) (written -
    read), `written` being the ungated segment's memory; the logits are the ungated ones;
    the gate's parameters are not the decoder's. `rmt_init` adds them when the config says
    model.rmt.memory_gate (bias memory_gate_bias), the rest drawn as without them."""
    from longctx.models.recurrent_memory import GATE_PARAM, gate_params

    model, params = rmt
    gated = rmt_params(build_model(CFG.replace(rmt=dict(memory_gate=True, memory_gate_bias=0.7))),
                       jax.random.key(0), N_MEM, SEG)
    expect = {**params, GATE_PARAM: gate_params(CFG.d_model, bias=0.7)}
    assert jax.tree.structure(gated) == jax.tree.structure(expect)
    for a, b in zip(jax.tree.leaves(gated), jax.tree.leaves(expect), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(decoder_params(gated)) == jax.tree.structure(
        decoder_params(params))
    read = MemoryTokens(vectors=jax.random.normal(jax.random.key(3), (2, N_MEM, CFG.d_model)))
    x = tokens(n=SEG)
    logits, written = rmt_segment(model, params, x, read)
    g_logits, g_new = rmt_segment(model, gated, x, read)
    np.testing.assert_array_equal(g_logits, logits)
    g = jax.nn.sigmoid(0.7)
    np.testing.assert_allclose(g_new.vectors, read.vectors + g * (written.vectors - read.vectors),
                               rtol=1e-5, atol=1e-6)
    # the gate's weights make it depend on what is written
    w = {**gated[GATE_PARAM], "w": jnp.eye(CFG.d_model)}
    _, other = rmt_segment(model, {**gated, GATE_PARAM: w}, x, read)
    assert not np.allclose(other.vectors, g_new.vectors)
