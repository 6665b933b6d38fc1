"""Sliding window: blocked == dense band, exact receptive field, ring-buffer/chunk streaming."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.models import (
    window_decode_init,
    window_decode_step,
    window_feed,
    window_stream_logits,
    window_stream_nll,
)
from longctx.models.attention import band_mask, band_plan
from tests.model_utils import band_visibility, forward, make, masked, rel

BASE = ModelConfig(arch="window", n_token=31, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                   init_std=0.2, matmul_precision="highest").replace(window=dict(window=4),
                                                                     xl=dict(tgt_len=4))


@pytest.mark.parametrize("window, seq_len", [(4, 16), (3, 11), (5, 4), (1, 6), (4, 13)])
def test_blocked_equals_dense_band_attention(window, seq_len):
    cfg = BASE.replace(clamp_len=3 if window == 5 else -1, pre_lnorm=window == 3, untie_r=window == 4,
                       window=dict(window=window))
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(seq_len), (2, seq_len), 0, cfg.n_token)
    blocked, memory = forward(model, params, tokens)
    dense = masked(model, params, tokens, band_visibility(seq_len, window))
    assert blocked.shape == (2, seq_len, cfg.n_token)
    assert rel(blocked, dense) < 1e-5
    assert jax.tree.leaves(memory) == []  # the window carries no state


def test_band_blocks_never_hold_a_full_score_matrix():
    block, history, n_blocks = band_plan(16384, 256)
    assert (block, history, n_blocks) == (256, 1, 64)
    mask = band_mask(block, history, n_blocks, 256)
    assert mask.shape == (64, 256, 512)  # per block C x 2C scores, not 16k x 16k
    assert mask.sum(-1).max() == 256 and mask[0].sum(-1).tolist() == list(range(1, 257))


def test_tokens_beyond_the_receptive_field_have_exactly_zero_effect():
    cfg = BASE  # W = 4, 2 layers: field (W-1)*n_layer = 6
    model, params = make(cfg)
    field = (cfg.window.window - 1) * cfg.n_layer
    tokens = jax.random.randint(jax.random.key(0), (1, 20), 0, cfg.n_token)
    other = tokens.at[0, 3].set((tokens[0, 3] + 1) % cfg.n_token)
    a = np.asarray(forward(model, params, tokens)[0])
    b = np.asarray(forward(model, params, other)[0])
    np.testing.assert_array_equal(a[0, 3 + field + 1 :], b[0, 3 + field + 1 :])
    assert np.abs(a[0, 3 + field] - b[0, 3 + field]).max() > 0  # the bound is tight
    assert np.abs(a[0, :3] - b[0, :3]).max() == 0  # causal


def test_ring_buffer_decoding_reproduces_the_full_forward():
    cfg = BASE.replace(clamp_len=2, xl=dict(same_length=False))
    model, params = make(cfg)
    seq_len = 3 * cfg.window.window + 3
    tokens = jax.random.randint(jax.random.key(1), (2, seq_len), 0, cfg.n_token)
    full = forward(model, params, tokens)[0]
    traces = []  # one trace = one compiled version
    step = jax.jit(lambda *a: traces.append(1) or window_decode_step(*a), static_argnums=0)
    cache = window_decode_init(cfg, 2)
    outs = []
    for t in range(seq_len):
        logits, cache = step(model, params, tokens[:, t], cache)
        outs.append(logits)
    assert len(traces) == 1
    assert len(cache.k) == len(cache.v) == cfg.n_layer  # per layer: keys [B, H, D, W]
    assert cache.k[0].shape == (2, cfg.n_head, cfg.d_head, cfg.window.window)
    assert cache.v[0].shape == (2, cfg.n_head, cfg.window.window, cfg.d_head)
    assert rel(jnp.stack(outs, 1), full) < 1e-5


@pytest.mark.parametrize("chunk", [3, 5])
def test_chunked_streaming_and_mixing_with_steps(chunk):
    cfg = dataclasses.replace(BASE, pre_lnorm=True)
    model, params = make(cfg)
    seq_len = 4 * cfg.window.window + 1
    tokens = jax.random.randint(jax.random.key(2), (2, seq_len), 0, cfg.n_token)
    full = forward(model, params, tokens)[0]
    stream = jax.jit(window_stream_logits, static_argnums=(0, 3))
    logits, cache = stream(model, params, tokens[:, :-3], chunk)
    assert rel(logits, full[:, :-3]) < 1e-5
    assert int(cache.pos) == seq_len - 3
    # continue token by token, then a chunk, from the same cache
    traces = []  # one trace = one compiled version
    step = jax.jit(lambda *a: traces.append(1) or window_decode_step(*a), static_argnums=0)
    one, cache = step(model, params, tokens[:, -3], cache)
    assert rel(one, full[:, -3]) < 1e-5
    rest, cache = jax.jit(window_feed, static_argnums=0)(model, params, tokens[:, -2:], cache)
    assert rel(rest, full[:, -2:]) < 1e-5


def test_stream_nll_matches_full_forward():
    cfg = BASE
    model, params = make(cfg)
    tokens = jax.random.randint(jax.random.key(3), (2, 14), 0, cfg.n_token)
    nll = jax.jit(partial(window_stream_nll, model), static_argnums=2)(params, tokens, 4)
    logp = jax.nn.log_softmax(forward(model, params, tokens[:, :-1])[0], -1)
    want = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    assert nll.shape == (2, 13)
    np.testing.assert_allclose(nll, want, rtol=1e-5, atol=1e-5)
