"""Vanilla fixed context: strided evaluation and independent segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.models import vanilla_strided_nll
from longctx.models.vanilla import strided_plan
from tests.model_utils import forward, make

BASE = ModelConfig(arch="vanilla", n_token=29, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                   init_std=0.2, matmul_precision="highest").replace(vanilla=dict(ctx_len=5),
                                                                     xl=dict(tgt_len=5))

strided = jax.jit(vanilla_strided_nll, static_argnums=(0, 3, 4, 5))


def last_token_nll(model, params, context, target) -> float:
    logits = forward(model, params, context[None])[0][0, -1]
    return float(-jax.nn.log_softmax(logits)[target])


def test_stride_one_predicts_from_exactly_the_previous_ctx_len_tokens():
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(0), (17,), 0, cfg.n_token)
    nll = strided(model, params, tokens, cfg.vanilla.ctx_len, 1, 8)
    assert nll.shape == (16,)
    for t in range(1, 17):
        context = tokens[max(0, t - cfg.vanilla.ctx_len) : t]
        assert abs(float(nll[t - 1]) - last_token_nll(model, params, context, tokens[t])) < 1e-5


def test_stride_one_batched_rows_are_independent():
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(1), (3, 12), 0, cfg.n_token)
    nll = strided(model, params, tokens, cfg.vanilla.ctx_len, 1, 7)
    for b in range(3):
        one = strided(model, params, tokens[b], cfg.vanilla.ctx_len, 1, 7)
        np.testing.assert_allclose(nll[b], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_larger_strides_score_each_target_once_with_the_right_context(stride):
    starts, win, pos = strided_plan(seq_len=20, ctx_len=5, stride=stride)
    targets = np.arange(1, 20)
    ctx_start = starts[win]
    assert np.all(targets - ctx_start == pos + 1)
    assert np.all(pos + 1 <= 5)  # never more than ctx_len tokens of context
    later = targets >= 5
    assert np.all(pos[later] + 1 >= 5 - stride + 1)  # at least ctx_len - stride + 1 of context
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(2), (20,), 0, cfg.n_token)
    nll = strided(model, params, tokens, 5, stride, 4)
    for t in (1, 7, 13, 19):
        context = tokens[ctx_start[t - 1] : t]
        assert abs(float(nll[t - 1]) - last_token_nll(model, params, context, tokens[t])) < 1e-5


def test_long_inputs_are_independent_segments_of_ctx_len():
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(3), (2, 13), 0, cfg.n_token)
    whole = forward(model, params, tokens)[0]
    for s in range(0, 13, cfg.vanilla.ctx_len):
        part = forward(model, params, tokens[:, s : s + cfg.vanilla.ctx_len])[0]
        np.testing.assert_allclose(whole[:, s : s + cfg.vanilla.ctx_len], part, rtol=1e-5, atol=1e-5)


def test_vanilla_forward_is_plain_causal():
    cfg = BASE.replace(vanilla=dict(ctx_len=8))
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(4), (1, 8), 0, cfg.n_token)
    a = forward(model, params, tokens)[0]
    b = forward(model, params, tokens.at[0, 5].set((tokens[0, 5] + 1) % cfg.n_token))[0]
    np.testing.assert_array_equal(a[0, :5], b[0, :5])
    assert float(jnp.abs(a[0, 5:] - b[0, 5:]).min()) >= 0 and float(jnp.abs(a - b).max()) > 0
