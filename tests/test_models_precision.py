"""model.matmul_precision reaches every matmul the model traces (forward, gradient, decoding)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from longctx.config import Config, ConfigError, ModelConfig
from longctx.models import (
    build_model,
    init_memory,
    window_decode_init,
    window_decode_step,
    xl_decode_init,
    xl_decode_step,
)
from longctx.models.archs import check_run
from tests.model_utils import make

BASE = ModelConfig(n_token=23, n_layer=1, n_head=2, d_model=8, d_head=4,
                   d_inner=16).replace(xl=dict(tgt_len=4, mem_len=4), window=dict(window=4, seq_len=8),
                                       vanilla=dict(ctx_len=4))


def _dot_precisions(jaxpr) -> list:
    """The `precision` of every dot_general in a jaxpr, nested ones (jit, remat, scan) too."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, list | tuple) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out.extend(_dot_precisions(inner))
    return out


def _traced(cfg: ModelConfig) -> list:
    """Jaxprs of a forward + gradient and (xl, window) of a decode step."""
    model, params = make(cfg, batch=1)
    tokens = jnp.zeros((1, 8), jnp.int32)

    def loss(p):
        return model.apply({"params": p}, tokens, init_memory(cfg, 1), None)[0].sum()

    out = [jax.make_jaxpr(jax.value_and_grad(loss))(params)]
    if cfg.arch != "vanilla":
        init, step = ((xl_decode_init, xl_decode_step) if cfg.arch == "xl"
                      else (window_decode_init, window_decode_step))
        out.append(jax.make_jaxpr(lambda p, s: step(model, p, tokens[:, 0], s))(
            params, init(cfg, 1)))
    return out


@pytest.mark.parametrize("arch", ["xl", "window", "vanilla"])
def test_every_traced_matmul_gets_the_configured_precision(arch):
    highest = jax.lax.Precision.HIGHEST
    for setting, want in (("highest", (highest, highest)), ("default", None)):
        for jaxpr in _traced(dataclasses.replace(BASE, arch=arch, matmul_precision=setting)):
            found = _dot_precisions(jaxpr.jaxpr)
            assert len(found) > 5 and set(found) == {want}, (setting, set(found))


def test_an_unknown_precision_is_refused_naming_the_key():
    cfg = Config(model=dataclasses.replace(BASE, matmul_precision="float32"))
    with pytest.raises(ConfigError, match="model.matmul_precision.*'highest'"):
        check_run(cfg)
    with pytest.raises(ConfigError, match="model.matmul_precision"):
        build_model(cfg.model)
