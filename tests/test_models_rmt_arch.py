"""The `rmt` architecture and `bptt_segments` (XL and RMT over several
segments per call): shapes, parameters, causality, resets, the gradient across segments and
its ablation, the scan equal to a loop of segments, determinism, the gated memory update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.models import archs, build_model, count_params, init_memory
from longctx.models.recurrent_memory import GATE_PARAM, MEMORY_PARAM, MemoryTokens
from tests.model_utils import forward, make

CFG = ModelConfig(arch="rmt", n_token=11, n_layer=2, n_head=2, d_model=16, d_head=8,
                  d_inner=32, init_std=0.2, matmul_precision="highest").replace(
    xl=dict(tgt_len=4, mem_len=4, bptt_segments=3),
    rmt=dict(seg_len=4, n_mem_tokens=3, bptt_segments=3))
SEG, K = 4, 3


def tokens(batch=2, n=K * SEG, seed=1):
    return jax.random.randint(jax.random.key(seed), (batch, n), 0, CFG.n_token)


@pytest.fixture(scope="module")
def rmt():
    return make(CFG)


def test_shapes_and_parameters(rmt):
    model, params = rmt
    state = init_memory(CFG, 2)
    assert isinstance(state, MemoryTokens) and state.batch_axes() == MemoryTokens(0, 0)
    logits, new = forward(model, params, tokens(n=SEG), state)
    assert logits.shape == (2, SEG, CFG.n_token) and logits.dtype == jnp.float32
    assert new.vectors.shape == (2, CFG.rmt.n_mem_tokens, CFG.d_model) and not new.fresh.any()
    # the shared decoder's tree, identical to every other architecture's, plus the memory
    _, xl_params = make(CFG.replace(arch="xl"))
    without = {k: v for k, v in params.items() if k != MEMORY_PARAM}
    assert jax.tree.map(jnp.shape, without) == jax.tree.map(jnp.shape, xl_params)
    arch = archs.get(CFG)
    assert arch.extra_params(CFG) == 3 * 16
    assert count_params(params) == count_params(xl_params) + arch.extra_params(CFG)
    assert arch.tokens_per_step(CFG) == K * SEG and arch.segments_per_step(CFG) == K
    # registered, but not in the comparison studies' default list until it reaches
    assert "rmt" in archs.names() and "rmt" not in archs.studied()
    assert archs.studied()[:3] == ("xl", "window", "vanilla")


def test_anchor_model_size():
    """LM-RMT's copy-task model: 922,890 parameters, 930,570 with 60 memory tokens."""
    cfg = ModelConfig(arch="rmt", n_token=10, n_layer=4, n_head=4, d_model=128, d_head=64,
                      d_inner=256).replace(rmt=dict(seg_len=8, n_mem_tokens=60))
    model = build_model(cfg)
    shapes = jax.eval_shape(lambda k: model.init({"params": k}, jnp.zeros((1, 8), jnp.int32),
                                                 init_memory(cfg, 1))["params"],
                            jax.random.key(0))
    assert count_params(shapes) == 930_570
    assert count_params(shapes) - archs.get(cfg).extra_params(cfg) == 922_890


def test_causal_reads_and_writes(rmt):
    """A token's logits never depend on later tokens; the written memory depends on the
    whole segment, its last token included; the read memory reaches every token."""
    model, params = rmt
    state = init_memory(CFG, 1)
    seg = tokens(batch=1, n=SEG)
    changed = seg.at[0, -1].set((seg[0, -1] + 1) % CFG.n_token)
    a_logits, a_mem = forward(model, params, seg, state)
    b_logits, b_mem = forward(model, params, changed, state)
    np.testing.assert_array_equal(a_logits[:, :-1], b_logits[:, :-1])
    assert float(jnp.max(jnp.abs(a_mem.vectors - b_mem.vectors))) > 1e-4
    c_logits, _ = forward(model, params, seg, a_mem)
    assert float(jnp.min(jnp.max(jnp.abs(c_logits - a_logits), axis=-1))) > 1e-4


def test_reset_and_fresh_rows_read_the_initial_memory(rmt):
    model, params = rmt
    seg = tokens(n=SEG)
    fresh, carried = forward(model, params, seg, init_memory(CFG, 2))
    mixed, _ = forward(model, params, seg, carried, reset=jnp.array([True, False]))
    kept, _ = forward(model, params, seg, carried)
    np.testing.assert_allclose(mixed[0], fresh[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mixed[1], kept[1], rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(kept[0] - fresh[0]))) > 1e-4


@pytest.mark.parametrize("arch", ["rmt", "xl"])
def test_segments_per_call_equal_a_loop(arch):
    cfg = CFG.replace(arch=arch)
    model, params = make(cfg)
    x = tokens()
    logits, last = forward(model, params, x, init_memory(cfg, 2))
    state, outs = init_memory(cfg, 2), []
    for k in range(K):
        lg, state = forward(model, params, x[:, k * SEG : (k + 1) * SEG], state)
        outs.append(lg)
    np.testing.assert_allclose(logits, jnp.concatenate(outs, 1), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _last_segment_grad(cfg, params, x, array, make_state):
    """Gradient of the last segment's loss w.r.t. `array`, the floats of the state the
    first segment reads (make_state(array) -> the state)."""
    model = build_model(cfg)

    def loss(a):
        logits, _ = forward(model, params, x[:, :-1], make_state(a))
        nll = (jax.nn.logsumexp(logits, -1)
               - jnp.take_along_axis(logits, x[:, 1:, None], -1)[..., 0])
        return jnp.sum(nll[:, -SEG:])

    return jax.jit(jax.grad(loss))(array)


@pytest.mark.parametrize("stop", [False, True])
def test_rmt_gradient_crosses_segments(rmt, stop):
    """The last segment's loss reaches the first segment's memory only through K-1 memory
    writes: nonzero with gradients through memory, exactly zero with the ablation."""
    _, params = rmt
    cfg = CFG.replace(rmt=dict(bptt_stop_gradient=stop))
    x = tokens(n=K * SEG + 1)
    vectors = jax.random.normal(jax.random.key(3), (2, 3, 16))
    g = _last_segment_grad(cfg, params, x, vectors,
                           lambda v: MemoryTokens(vectors=v, fresh=jnp.zeros((2,), bool)))
    g = float(jnp.max(jnp.abs(g)))
    assert (g == 0.0) if stop else (g > 1e-6)


@pytest.mark.parametrize("stop", [False, True])
def test_xl_gradient_through_memory(stop):
    """XL with bptt_segments = 3 (mem_len = tgt_len): the last segment sees the first
    segment's memory only through two memory updates; its loss's gradient w.r.t. that
    memory is nonzero unless bptt_stop_gradient. Three layers: XL's memory at layer i
    feeds layer i+1 of the next segment, so a memory reaches at most n_layer segments on."""
    cfg = CFG.replace(arch="xl", n_layer=3, xl=dict(bptt_stop_gradient=stop))
    _, params = make(cfg)
    x = tokens(n=K * SEG + 1)
    start = init_memory(cfg, 2)
    hidden = jax.random.normal(jax.random.key(4), start.hidden.shape)
    g = _last_segment_grad(cfg, params, x, hidden, lambda h: start.replace(
        hidden=h, valid=jnp.full((2,), cfg.xl.mem_len, jnp.int32)))
    g = float(jnp.max(jnp.abs(g)))
    assert (g == 0.0) if stop else (g > 1e-6)


def test_xl_splits_a_call_only_with_bptt_segments():
    """bptt_segments = 1 (the default): a longer call is still one XL segment; with 2, two
    segments (which differ here: the second sees only mem_len = 2 of the first's rows)."""
    cfg = CFG.replace(arch="xl", xl=dict(bptt_segments=1, mem_len=2))
    model, params = make(cfg)
    x = tokens(n=8)
    one, _ = forward(model, params, x, init_memory(cfg, 2))
    split, _ = forward(build_model(cfg.replace(xl=dict(bptt_segments=2))), params, x,
                     init_memory(cfg, 2))
    assert float(jnp.max(jnp.abs(one - split))) > 1e-4  # 2 segments of 4 differ from 1 of 8


def test_determinism_and_dropout_keys(rmt):
    model_drop = build_model(CFG.replace(dropout=0.3))
    _, params = rmt
    x = tokens()
    state = init_memory(CFG, 2)
    a = forward(model_drop, params, x, state, deterministic=False, rng=jax.random.key(9))[0]
    b = forward(model_drop, params, x, state, deterministic=False, rng=jax.random.key(9))[0]
    c = forward(model_drop, params, x, state, deterministic=False, rng=jax.random.key(8))[0]
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-4
    again = make(CFG)[1]
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(p, q)


def test_bad_settings_are_refused():
    from longctx.config import ConfigError

    with pytest.raises(ConfigError, match="model.rmt.n_mem_tokens"):
        build_model(CFG.replace(rmt=dict(n_mem_tokens=0)))
    with pytest.raises(ConfigError, match="model.rmt.memory_gate_bias': must be a finite"):
        build_model(CFG.replace(rmt=dict(memory_gate=True, memory_gate_bias=float("nan"))))
    model, params = make(CFG)
    with pytest.raises(ValueError, match="does not split into segments of 4"):
        forward(model, params, tokens(n=6), init_memory(CFG, 2))


def test_memory_gate_adds_its_parameters_and_interpolates(rmt):
    """model.rmt.memory_gate: d_model^2 + d_model more parameters (the estimate says so),
    made after the others, which stay as drawn without it; the next memory is read +
    sigmoid(b) (written - read) while w = 0: the mean at b = 0, the memory read at b = -30
    (the gate closed); off (the default) there is no gate parameter."""
    from longctx.train.memory_fit import num_params

    model, params = rmt
    assert GATE_PARAM not in params
    gated_cfg = CFG.replace(rmt=dict(memory_gate=True))
    gated_model, gated = make(gated_cfg)
    d = CFG.d_model
    assert count_params(gated) - count_params(params) == d * d + d == 272
    assert archs.get(gated_cfg).extra_params(gated_cfg) == 3 * d + d * d + d
    assert num_params(gated_cfg, CFG.n_token) == count_params(gated)
    assert num_params(CFG, CFG.n_token) == count_params(params)
    np.testing.assert_array_equal(gated[GATE_PARAM]["w"], np.zeros((d, d)))
    np.testing.assert_array_equal(gated[GATE_PARAM]["b"], np.zeros(d))
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(
            {k: v for k, v in gated.items() if k != GATE_PARAM}), strict=True):
        np.testing.assert_array_equal(p, q)

    seg = tokens(n=SEG)
    read = MemoryTokens(vectors=jax.random.normal(jax.random.key(5), (2, 3, d)),
                        fresh=jnp.array([True, False]))
    start = jnp.where(read.fresh[:, None, None], params[MEMORY_PARAM][None], read.vectors)
    logits, written = forward(model, params, seg, read)
    gated_logits, half = forward(gated_model, gated, seg, read)
    np.testing.assert_array_equal(gated_logits, logits)  # the gate acts on the memory only
    np.testing.assert_allclose(half.vectors, (start + written.vectors) / 2, rtol=1e-6,
                               atol=1e-6)
    closed_cfg = CFG.replace(rmt=dict(memory_gate=True, memory_gate_bias=-30.0))
    _, closed = make(closed_cfg)
    _, kept = forward(build_model(closed_cfg), closed, seg, read)
    np.testing.assert_array_equal(kept.vectors, start)
