"""The optimised paths give the plain paths' outputs (float32, 1e-5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from longctx.config import ModelConfig
from longctx.models.layer import DecoderLayer
from tests.conftest import load_script


@pytest.mark.parametrize("pre_lnorm", [False, True])
def test_queries_only_for_the_segment_match_the_fused_projection(pre_lnorm):
    # XL projects q for the segment's rows only and k, v for memory + segment rows, from
    # slices of the one fused kernel: the same numbers as projecting every row and slicing.
    cfg = ModelConfig(n_head=2, d_model=32, d_head=16, d_inner=64, pre_lnorm=pre_lnorm)
    layer = DecoderLayer(cfg)  # a bare layer: the Decoder's precision scope is set here
    src = jax.random.normal(jax.random.key(0), (3, 20, 32))
    with jax.default_matmul_precision("highest"):
        params = layer.init(jax.random.key(1), src, method=DecoderLayer.project)
        q_all, k_all, v_all = layer.apply(params, src, method=DecoderLayer.project)
        q, k, v = layer.apply(params, src, 8, method=DecoderLayer.project)
    assert q.shape == (3, 8, 2, 16) and k.shape == v.shape == (3, 20, 2, 16)
    for fast, plain in ((q, q_all[:, -8:]), (k, k_all), (v, v_all)):
        assert jnp.max(jnp.abs(fast - plain)) <= 1e-5 * jnp.max(jnp.abs(plain))


def test_eval_benchmark_smoke(capsys):
    module = load_script("bench_eval")
    assert module.main(["--smoke"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 ")
            or line.startswith("| 16 ")]
    assert len(rows) == 2
    # the table's numbers are measured, positive throughputs; how they compare is the
    # benchmark's finding (experiments/RESULTS.md), not something a loaded machine can assert
    for row in rows:
        xl, vanilla, speedup = (float(c.strip().rstrip("x")) for c in row.split("|")[2:5])
        assert xl > 0 and vanilla > 0 and speedup >= 0, row
