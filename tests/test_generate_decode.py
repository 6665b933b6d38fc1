"""Incremental decoding (Stream) reproduces the full forward, and never recompiles."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import load_experiment
from longctx.generate.sampler import SamplerSettings
from longctx.generate.streaming import Stream
from longctx.models import build_model, init_memory
from tests.conftest import SMOKE

LENGTH = 75  # several XL segments / windows, not a multiple of either


@functools.cache
def _model(arch: str):
    """The smoke model shape with sharp random weights (so distributions are far from flat)."""
    cfg = dataclasses.replace(load_experiment(SMOKE).model, arch=arch, n_token=97,
                              init_std=0.4, dropout=0.0, matmul_precision="highest")
    model = build_model(cfg)
    tokens = np.random.default_rng(0).integers(0, 97, size=(1, LENGTH)).astype(np.int32)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(1)}, jnp.asarray(tokens[:, :8]),
                                 init_memory(cfg, 1), None)["params"]
    return cfg, model, params, tokens


def _full_logprobs(cfg, model, params, tokens) -> np.ndarray:
    """[T, V] log-probabilities of the architecture's own full forward (XL: segment mode)."""
    forward = jax.jit(lambda p, t, m: model.apply({"params": p}, t, m, None, True))
    if cfg.arch == "window":
        logits, _ = forward(params, jnp.asarray(tokens), init_memory(cfg, 1))
    else:
        memory, parts = init_memory(cfg, 1), []
        for s in range(0, tokens.shape[1], cfg.xl.tgt_len):
            out, memory = forward(params, jnp.asarray(tokens[:, s:s + cfg.xl.tgt_len]), memory)
            parts.append(out)
        logits = jnp.concatenate(parts, axis=1)
    return np.asarray(jax.nn.log_softmax(logits[0], -1))


@pytest.mark.parametrize("arch", ["xl", "window"])
def test_incremental_decoding_matches_the_full_forward(arch):
    cfg, model, params, tokens = _model(arch)
    full = _full_logprobs(cfg, model, params, tokens)
    assert np.abs(full - full.mean(-1, keepdims=True)).max() > 1.0  # not a flat distribution
    stream = Stream(cfg, params)
    state = stream.init()
    got = {}
    # Known tokens in uneven pieces (crossing segment/window boundaries, whole blocks too),
    # then token by token through the reply path that chat uses.
    pos = 0
    for piece in (3, 62, 1, 4):
        logits, state = stream.feed(state, tokens[0, pos:pos + piece])
        pos += piece
        got[pos - 1] = np.asarray(jax.nn.log_softmax(logits[0]))
    key, knobs = jax.random.PRNGKey(0), SamplerSettings(temperature=0.0).knobs()
    for t in range(pos, LENGTH):
        _, state, key, logits = stream.reply_step(state, jnp.asarray(tokens[:, t]), key, knobs)
        got[t] = np.asarray(jax.nn.log_softmax(logits[0]))
    assert stream.compiled_variants()["feed_block"] == 1  # whole blocks went in segment mode
    for t, logp in got.items():
        np.testing.assert_allclose(np.exp(logp), np.exp(full[t]), atol=2e-5,
                                   err_msg=f"{arch} position {t}")
        assert logp.argmax() == full[t].argmax()


@pytest.mark.parametrize("arch", ["xl", "window"])
def test_decoding_compiles_once_whatever_the_history(arch):
    cfg, _, params, tokens = _model(arch)
    stream = Stream(cfg, params)
    state = stream.init()
    key, rng = jax.random.PRNGKey(0), np.random.default_rng(3)
    for turn in range(6):  # turns of different lengths, sampled replies of different lengths
        n = int(rng.integers(1, 50))
        logits, state = stream.feed(state, tokens[0, :n])
        settings = SamplerSettings(temperature=0.5 + turn * 0.2, top_k=turn, top_p=0.9)
        token, key = stream.sample(logits, key, settings.knobs())
        for _ in range(int(rng.integers(1, 8))):
            token, state, key, _ = stream.reply_step(state, token, key, settings.knobs())
    assert max(stream.compiled_variants().values()) == 1, stream.compiled_variants()
    used, most = stream.span_in_use(state)
    assert 0 < used <= most


def test_a_model_without_state_is_refused_clearly():
    from longctx.errors import UserError

    cfg = dataclasses.replace(load_experiment(SMOKE).model, arch="vanilla", n_token=97)
    with pytest.raises(UserError, match="model.arch 'vanilla'"):
        Stream(cfg, params=None)
