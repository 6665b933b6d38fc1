"""The evaluation driver scores each architecture exactly as it is used on a long stream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import ModelConfig
from longctx.eval import metrics
from longctx.eval.scoring import Request, Scorer
from longctx.models import build_model, init_memory, vanilla_strided_nll
from longctx.models.nll import greedy_hits
from tests.model_utils import forward

V = 40


def _setup(arch: str, zero: bool = False):
    cfg = ModelConfig(arch=arch, n_token=V, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32,
                      matmul_precision="highest").replace(
        xl=dict(tgt_len=8, mem_len=8), window=dict(window=8, seq_len=32), vanilla=dict(ctx_len=8))
    model = build_model(cfg)
    params = jax.jit(model.init)({"params": jax.random.PRNGKey(1)}, jnp.zeros((1, 8), jnp.int32),
                                 init_memory(cfg, 1), jnp.ones(1, bool))["params"]
    if zero:  # all-zero weights: uniform next-token distribution, blind to order
        params = jax.tree.map(jnp.zeros_like, params)
    return cfg, model, params


def _logp(logits, ids):
    lp = jax.nn.log_softmax(logits, axis=-1)
    return np.asarray(jnp.take_along_axis(lp, jnp.asarray(ids)[:, None], axis=-1)[:, 0])


def _reference(arch, cfg, model, params, ids):
    """Log-probs of ids[1:] by a direct use of the model's own API."""
    if arch == "window":  # the full banded forward in one call
        logits, _ = forward(model, params, jnp.asarray(ids[None, :-1]), init_memory(cfg, 1))
        return _logp(logits[0], ids[1:])
    if arch == "vanilla":
        return -np.asarray(vanilla_strided_nll(model, params, jnp.asarray(ids), cfg.vanilla.ctx_len, 1))
    mem, out = init_memory(cfg, 1), []
    for s in range(0, ids.size - 1, cfg.xl.tgt_len):  # XL: segment by segment with memory
        seg = ids[s : s + cfg.xl.tgt_len + 1]
        logits, mem = forward(model, params, jnp.asarray(seg[None, :-1]), mem)
        out.append(_logp(logits[0], seg[1:]))
    return np.concatenate(out)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_greedy_hits_are_argmax_exactly_with_ties_and_nans(dtype):
    """Every target position against jnp.argmax, on logits of few distinct values (ties
    everywhere: the first maximum wins) with NaNs and infinities planted (NaN counts as the
    maximum) and rows of one value."""
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (64, V)).astype(np.float32)
    logits[rng.random(logits.shape) < 0.02] = np.nan
    logits[rng.random(logits.shape) < 0.02] = np.inf
    logits[:4] = 3.0  # rows of one value: only target 0 is the argmax
    logits[4:6] = -np.inf
    logits = jnp.asarray(logits, dtype)
    hits = 0
    for t in range(V):
        targets = jnp.full(64, t, jnp.int32)
        want = jnp.argmax(logits, axis=-1) == targets
        got = jax.jit(greedy_hits)(logits, targets)
        np.testing.assert_array_equal(got, want, err_msg=f"target {t}")
        hits += int(got.sum())
    assert hits == 64  # one argmax per row: each row a hit for exactly one target


@pytest.mark.parametrize("arch", ["xl", "window", "vanilla"])
def test_streams_and_continuations_are_exact(arch):
    cfg, model, params = _setup(arch)
    rng = np.random.default_rng(0)
    # equal lengths keep the reference computations to one compiled shape
    streams = [rng.integers(0, V, n).astype(np.int32) for n in (41, 38, 41)]
    other = rng.integers(0, V, 3).astype(np.int32)
    # continuations inside one XL segment (positions 18..20 and 33..34 with tgt_len 8),
    # and one past the end of stream 1
    reqs = [Request(0, 18, (streams[0][18:21], other)), Request(2, 33, (streams[2][33:35],)),
            Request(1, 38, (other,))]
    lps, scored = Scorer(cfg, params).stream_logprobs(streams, reqs)
    for k in (0, 2):
        ref = _reference(arch, cfg, model, params, streams[k])
        np.testing.assert_allclose(lps[k], ref, atol=2e-5)
    for q, s in zip(reqs[:2], scored[:2], strict=True):
        true = lps[q.stream][q.pos - 1 : q.pos - 1 + q.candidates[0].size]
        np.testing.assert_allclose(s.logprobs[0], true, atol=2e-5)
    # the continuation past the end = the stream extended by it
    ext = _reference(arch, cfg, model, params, np.concatenate([streams[1], other]))
    np.testing.assert_allclose(lps[1], ext[:37], atol=2e-5)
    if arch != "xl":  # (XL: the extension crosses a segment boundary, scored as one segment)
        np.testing.assert_allclose(scored[2].logprobs[0], ext[37:], atol=2e-5)


def test_vanilla_stride_matches_the_models_strided_scoring():
    cfg, model, params = _setup("vanilla")
    ids = np.random.default_rng(2).integers(0, V, 50).astype(np.int32)
    lps, _ = Scorer(cfg, params, vanilla_stride=3).stream_logprobs([ids])
    ref = -np.asarray(vanilla_strided_nll(model, params, jnp.asarray(ids), cfg.vanilla.ctx_len, 3))
    np.testing.assert_allclose(lps[0], ref, atol=2e-5)


@pytest.mark.parametrize("arch", ["xl", "window"])
def test_uniform_model_recall_is_exactly_one_over_n(arch):
    cfg, _, params = _setup(arch, zero=True)
    rng = np.random.default_rng(3)
    streams = [rng.integers(0, V, 30).astype(np.int32) for _ in range(2)]
    n = 8
    reqs = [Request(i, p, tuple(rng.integers(0, V, 2).astype(np.int32) for _ in range(n)))
            for i in range(2) for p in (5, 17, 29)]
    _, scored = Scorer(cfg, params).stream_logprobs(streams, reqs)
    credits = [metrics.forced_choice_credit([lp.sum() for lp in s.logprobs], 0) for s in scored]
    assert credits == [1.0 / n] * len(reqs)
