"""The fused Pallas XL attention (interpret mode on CPU) gives the reference attention's
outputs and gradients, and the whole XL model gives the same logits with either
attention_impl. Float32 at full matmul precision ('highest'), tolerance 1e-5."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longctx.config import Config, ConfigError, ModelConfig
from longctx.models import attention as A
from longctx.models import build_model, init_memory
from longctx.models import pallas_attention as P
from longctx.models.archs import check_run
from tests.conftest import load_script
from tests.model_utils import forward, make, rel


def out_and_grads(fn, args, cotangent):
    """fn(*args) and the gradients of sum(fn * cotangent) w.r.t. every argument, jitted."""

    def run(*a):
        out, vjp = jax.vjp(fn, *a)
        return out, vjp(cotangent)

    return jax.jit(run)(*args)


# (batch, T, M, block_q, block_k, span, key_start per row, backward)
CASES = {
    "no-memory": (2, 8, 0, 4, 4, 0, (0, 0), "pallas"),
    "memory, key block 2x query block, rows with empty/partial memory":
        (2, 8, 8, 4, 8, 0, (8, 3), "pallas"),
    "ragged T and M (padded to blocks), same_length": (2, 6, 5, 4, 2, 5, (2, 5), "pallas"),
    "as above, backward by blocked recompute in XLA": (2, 6, 5, 4, 2, 5, (2, 5), "xla"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kernel_matches_reference_outputs_and_gradients(case):
    b, t, m, block_q, block_k, span, starts, backward = CASES[case]
    h, d = 2, 4
    keys = jax.random.split(jax.random.key(0), 7)
    q = jax.random.normal(keys[0], (b, t, h, d))
    k = jax.random.normal(keys[1], (b, m + t, h, d))
    v = jax.random.normal(keys[2], (b, m + t, h, d))
    r = jax.random.normal(keys[3], (m + t, h, d))
    rw, rr = jax.random.normal(keys[4], (h, d)), jax.random.normal(keys[5], (h, d))
    cot = jax.random.normal(keys[6], (b, t, h, d))
    key_start = jnp.array(starts, jnp.int32)
    args = (q, k, v, r, rw, rr)
    with jax.default_matmul_precision("highest"):
        ref_out, ref_grads = out_and_grads(
            lambda *a: P.reference_attention(*a, key_start, span=span), args, cot)
        out, grads = out_and_grads(
            lambda *a: P.rel_attention(*a, key_start, span=span, block_q=block_q,
                                       block_k=block_k, interpret=True,
                                       backward=backward), args, cot)
    assert out.shape == ref_out.shape
    assert rel(out, ref_out) <= 1e-5
    for name, got, want in zip(("q", "k", "v", "r", "r_w_bias", "r_r_bias"), grads, ref_grads, strict=True):
        assert float(jnp.max(jnp.abs(want))) > 0, name  # the check is not vacuous
        assert rel(got, want) <= 1e-5, name


@pytest.mark.parametrize("bq,keys", [(8, 8), (4, 16)])
def test_skew_rows_is_the_relative_shift_of_a_tile(bq, keys):
    width = P.window_len(bq, keys)
    x = jnp.arange(bq * width, dtype=jnp.float32).reshape(bq, width)
    want = A.rel_shift(x)[:, :keys]  # out[a, c] = x[a, c + bq - 1 - a]
    got = jax.jit(P.skew_rows, static_argnums=1)(x, keys)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_bad_block_size_is_refused_with_one_line():
    x = jnp.zeros((1, 4, 1, 4))
    with pytest.raises(ValueError, match="block_k must be a power of two, got 3"):
        P.rel_attention(x, x, x, x[0], x[0, 0], x[0, 0], jnp.zeros((1,), jnp.int32),
                        block_k=3)


def test_xl_logits_and_memory_match_with_pallas_attention():
    # same_length and clamp_len on, two segments, the second resetting one row's memory
    cfg = ModelConfig(n_token=50, n_layer=1, n_head=2, d_model=16, d_head=8, d_inner=32, clamp_len=5,
                      init_std=0.2).replace(xl=dict(tgt_len=8, mem_len=8, same_length=True))
    model, params = make(cfg)
    fused = build_model(cfg.replace(xl=dict(attention_impl="pallas")))
    tokens = jax.random.randint(jax.random.key(1), (2, 2, 8), 0, cfg.n_token)
    mem_ref = mem_fused = init_memory(cfg, 2)
    with jax.default_matmul_precision("highest"):
        for s, reset in enumerate(([False, False], [False, True])):
            reset = jnp.array(reset)
            want, mem_ref = forward(model, params, tokens[:, s], mem_ref, reset)
            got, mem_fused = forward(fused, params, tokens[:, s], mem_fused, reset)
            assert rel(got, want) <= 1e-5, s
            assert rel(mem_fused.hidden, mem_ref.hidden) <= 1e-5, s


def test_attention_impl_is_validated():
    cfg = Config(model=ModelConfig().replace(xl=dict(attention_impl="flash")))
    with pytest.raises(ConfigError, match="model.xl.attention_impl.*'reference' or 'pallas'"):
        check_run(cfg)
    with pytest.raises(ConfigError, match="model.xl.attention_impl.*dropatt"):
        build_model(ModelConfig(n_token=8, dropatt=0.1).replace(xl=dict(attention_impl="pallas")))


def test_bench_attention_kernel_smoke(capsys):
    # on CPU the kernel runs in interpret mode at tiny sizes: a numbers check, not a timing
    assert load_script("bench_attention").main(["--kernel", "--smoke"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| reference") or line.startswith("| pallas")]
    assert [row[1].strip() for row in rows] == ["reference", "pallas 8x8"]
    assert float(rows[1][6]) < 2e-2  # bfloat16 inputs: the kernel agrees with the reference
