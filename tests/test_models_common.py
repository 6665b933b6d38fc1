"""What all three architectures share: the API, parameter counts, dtypes, dropout, remat."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ConfigError, ModelConfig
from longctx.models import (
    Memory,
    NoState,
    archs,
    build_model,
    count_params,
    init_memory,
    window_decode_init,
    xl_decode_init,
)
from tests.model_utils import forward, make, rel

BASE = ModelConfig(n_token=23, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32, init_std=0.2,
                   matmul_precision="highest").replace(
    xl=dict(tgt_len=4, mem_len=4), window=dict(window=4, seq_len=8), vanilla=dict(ctx_len=4))


@pytest.mark.parametrize("untie_r", [False, True])
def test_matched_configs_have_identical_parameter_trees(untie_r):
    shapes, counts = [], []
    for arch in ("xl", "window", "vanilla"):
        _, params = make(dataclasses.replace(BASE, arch=arch, untie_r=untie_r))
        shapes.append(jax.tree.map(jnp.shape, params))
        counts.append(count_params(params))
    assert shapes[0] == shapes[1] == shapes[2]
    assert counts[0] == counts[1] == counts[2] > 0
    c = BASE
    per_layer = (3 + 1 + 1) * c.d_model * c.n_head * c.d_head + 2 * c.d_model * c.d_inner \
        + c.d_inner + c.d_model + 4 * c.d_model
    biases = 2 * c.n_head * c.d_head
    expected = c.n_token * c.d_model + c.n_token + c.n_layer * per_layer + biases * (
        c.n_layer if untie_r else 1)
    assert counts[0] == expected


@pytest.mark.parametrize("arch", ["xl", "window", "vanilla"])
def test_api_shapes_and_memory_structure(arch):
    cfg = dataclasses.replace(BASE, arch=arch)
    model, params = make(cfg)
    memory = init_memory(cfg, 3)
    if archs.get(cfg).has_memory:
        assert isinstance(memory, Memory) and memory.valid.shape == (3,)
        assert memory.hidden.shape == (cfg.n_layer + 1, 3, cfg.xl.mem_len, cfg.d_model)
    else:
        assert isinstance(memory, NoState) and jax.tree.leaves(memory) == []
    tokens = jnp.ones((3, 8), jnp.int32)
    logits, new = forward(model, params, tokens, memory, jnp.zeros((3,), bool))
    assert logits.shape == (3, 8, cfg.n_token) and logits.dtype == jnp.float32
    assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, memory)
    assert jax.tree.map(lambda x: x.dtype, new) == jax.tree.map(lambda x: x.dtype, memory)


def test_n_token_must_be_positive():
    with pytest.raises(ConfigError, match="n_token"):
        build_model(dataclasses.replace(BASE, n_token=0))


@pytest.mark.parametrize("arch", ["xl", "window"])
def test_bfloat16_compute_runs_with_float32_params_and_logits(arch):
    cfg32 = dataclasses.replace(BASE, arch=arch)
    cfg16 = dataclasses.replace(cfg32, dtype="bfloat16")
    model16, params = make(cfg16)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, cfg16.n_token)
    logits16, mem = forward(model16, params, tokens, init_memory(cfg16, 2))
    assert logits16.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mem)
               if jnp.issubdtype(x.dtype, jnp.floating))  # the state stays float32
    assert bool(jnp.all(jnp.isfinite(logits16)))
    logits32, _ = forward(build_model(cfg32), params, tokens, init_memory(cfg32, 2))
    assert 0 < rel(logits16, logits32) < 0.1


def test_determinism_and_dropout():
    cfg = dataclasses.replace(BASE, dropout=0.3, dropatt=0.2)
    model, p1 = make(cfg, seed=5)
    _, p2 = make(cfg, seed=5)
    _, p3 = make(cfg, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True))
    assert not np.array_equal(p1["out_bias"], p3["out_bias"]) or not np.array_equal(
        p1["word_emb"]["embedding"], p3["word_emb"]["embedding"])
    tokens = jax.random.randint(jax.random.key(1), (2, 4), 0, cfg.n_token)
    mem = init_memory(cfg, 2)
    key = jax.random.key(9)
    a = forward(model, p1, tokens, mem, deterministic=False, rng=key)[0]
    b = forward(model, p1, tokens, mem, deterministic=False, rng=key)[0]
    c = forward(model, p1, tokens, mem, deterministic=False, rng=jax.random.key(10))[0]
    d = forward(model, p1, tokens, mem, deterministic=True)[0]
    e = forward(model, p1, tokens, mem, deterministic=True)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(d, e)
    assert rel(a, c) > 1e-3 and rel(a, d) > 1e-3


def test_remat_gives_the_same_loss_and_gradients():
    cfg = dataclasses.replace(BASE, arch="window", dropout=0.1, dropatt=0.1)
    model, params = make(cfg)
    remat_model = build_model(dataclasses.replace(cfg, remat=True))
    tokens = jax.random.randint(jax.random.key(2), (2, 8), 0, cfg.n_token)
    mem = init_memory(cfg, 2)

    def loss(p, m):
        logits, _ = m.apply({"params": p}, tokens, mem, None, deterministic=False,
                            rngs={"dropout": jax.random.key(3)})
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    g1 = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, model)
    g2 = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, remat_model)
    np.testing.assert_allclose(g1[0], g2[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1[1]), jax.tree.leaves(g2[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_state_pytrees_know_their_batch_axes():
    """A row subset of the XL memory (`take_rows`) continues as those rows do in the batch;
    every decode-state leaf's batch axis has the batch size, and the shared ones none."""
    cfg = dataclasses.replace(BASE, arch="xl")
    model, params = make(cfg, batch=3)
    tokens = jax.random.randint(jax.random.key(1), (3, cfg.xl.tgt_len), 0, cfg.n_token)
    _, memory = forward(model, params, tokens, init_memory(cfg, 3))
    logits, _ = forward(model, params, tokens, memory)
    idx = jnp.array([2, 0])
    part, _ = forward(model, params, tokens[idx], memory.take_rows(idx))
    np.testing.assert_allclose(part, logits[idx], rtol=1e-5, atol=1e-6)
    for state in (memory, xl_decode_init(cfg, 3), window_decode_init(cfg, 3)):
        axes = jax.tree.leaves(state.batch_axes(), is_leaf=lambda a: a is None)
        rows = state.take_rows(idx)
        for a, x, y in zip(axes, jax.tree.leaves(state), jax.tree.leaves(rows), strict=True):
            assert (x.ndim == 0) if a is None else (x.shape[a] == 3), (type(state), a, x.shape)
            np.testing.assert_array_equal(y, x if a is None else np.take(np.asarray(x), idx, axis=a))
